"""One small generic registry per component kind: names -> factories, and the spec type each takes.

Registering a component takes one line, with its name written once::

    @QUANTIZERS.register("my_vq")
    class MyVQ(Quantizer):
        def __init__(self, *, codebook_size: int = 1024, beta: float = 0.25, channels: int):
            ...

The factory's keyword-only, annotated arguments are the component's configuration: the
registry derives the spec type from them (here a ``QuantizerSpec`` subclass with the fields
``name: Literal["my_vq"] = "my_vq"``, ``codebook_size`` and ``beta``), so
``{"name": "my_vq", "beta": 0.5}`` is usable wherever a FlowMoSpec takes a quantizer and
round-trips through JSON. Plain ``int``, ``float`` and ``bool`` annotations become the
strict spec types (:data:`flowmo.spec.SpecInt`, ...: no booleans or strings for numbers),
wherever they appear (inside Optional, Annotated, tuples, lists, dict values, Literal).
Annotations must describe JSON data (``Any``, ``object``, tensors, paths, ... are refused at
registration); a list or Sequence field holds a tuple, a set a frozenset and a dict an
immutable :class:`FrozenDict`, so specs stay frozen and hashable; defaults must be valid and
finite (no NaN / inf). Argument names that would shadow the spec's own attributes
(``replace``, ``loss_terms``, ``check_channels``, ``registry``, ``model_*``, ``_*``, ...) are
refused, naming the argument. Names are letters, digits, ``_`` and ``-`` (at most 64).
The kind's *wiring* arguments (``channels`` for a quantizer) are what the model passes in;
they are never part of the spec. ``build`` calls the factory with the spec's fields as
keyword arguments plus the wiring::

    QUANTIZERS.build({"name": "my_vq", "beta": 0.5}, channels=18)   # -> MyVQ(codebook_size=1024, beta=0.5, channels=18)

Where the configuration needs cross-field validation, register an explicit spec class (a
subclass of the kind's spec base, e.g. :class:`flowmo.spec.QuantizerSpec`, whose ``name``
defaults to the registered name); the factory is then called as ``factory(spec, **wiring)``::

    @QUANTIZERS.register("my_vq", spec=MyVQSpec)

Rules: a spec of another kind is refused at registration, naming the expected base class, and
so is a factory that cannot be called as ``factory(spec, **wiring)`` for an explicit spec; a
class that does not derive from the kind's interface (e.g. :class:`flowmo.quantizers.Quantizer`)
is refused at registration, and a factory whose result does not is refused by ``build``.
Registering the same object again under its name is harmless (so is re-running a notebook
cell or reloading a module: an object with the same module and qualified name replaces the
old entry); a different object under a taken name, or the same one with another spec, is
refused unless ``replace=True``. ``build`` checks the wiring sizes (positive ints).
Each entry records the module that defined it (``Entry.module``), so a saved model can name
the modules to import before it loads (see :mod:`flowmo.imports`).
"""

from __future__ import annotations

import collections.abc
import fnmatch
import importlib
import inspect
import numbers
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar, Union

T = TypeVar("T")

__all__ = ["Registry", "RegistryError", "UnknownComponentError", "Entry", "REGISTRIES"]

MAX_NAME_LENGTH = 64
"""Longest registered name."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,%d}" % (MAX_NAME_LENGTH - 1))
_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class RegistryError(ValueError):
    """A registration that is refused, or an unknown name."""


class UnknownComponentError(RegistryError):
    """A name that is not registered in a registry (``kind``, ``name`` say which)."""

    def __init__(self, message: str, kind: str, name: Any):
        super().__init__(message)
        self.kind = kind
        self.name = name


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component.

    ``spec``: the spec class its configuration validates with (derived from the factory's
    keyword-only arguments when ``derived``, else the explicit class given at registration).
    ``fields``: for a derived spec, the spec fields passed to the factory as keyword arguments.
    ``module``: the module that defined the factory (``factory.__module__``).
    """

    name: str
    factory: T
    spec: Optional[type] = None
    module: str = ""
    derived: bool = False
    fields: tuple[str, ...] = ()

    @property
    def builtin(self) -> bool:
        """Whether flowmo itself registers this component (no module to import for it)."""
        return self.module == "flowmo" or self.module.startswith("flowmo.")


Ref = Union[type, str, None]


def _resolve(ref: Ref) -> Optional[type]:
    """A class, or ``"package.module:Name"`` imported on first use (the registries are declared
    below everything else, so they name their kind's classes instead of importing them)."""
    if ref is None or isinstance(ref, type):
        return ref
    module, _, name = ref.partition(":")
    try:
        found = vars(importlib.import_module(module))[name]
    except (ImportError, KeyError) as e:
        raise TypeError(f"the class {ref!r} a registry names cannot be imported ({type(e).__name__}: {e})") from None
    if not isinstance(found, type):
        raise TypeError(f"{ref!r}, which a registry names as a class, is {with_article(type(found).__name__)}")
    return found


class Registry(Generic[T]):
    """A named collection of factories of one component kind.

    Args:
        kind: the kind in words, used in messages ("quantizer").
        interface: the kind's abstract base class (or ``"module:Name"``); registered classes
            must derive from it and ``build`` checks what a factory returns. None: any object.
        spec_base: the kind's spec base class (or ``"module:Name"``), a subclass of
            :class:`flowmo.spec.ComponentSpec`; None: ComponentSpec itself.
        wiring: the keyword arguments the model passes to every factory of this kind (never
            part of the spec), e.g. ``("channels",)`` for quantizers.
        sizes: the wiring arguments that are sizes (``build`` refuses anything but a python
            int > 0 for them, naming the argument); None: every wiring argument.
        check: a function ``check(component, **wiring)`` (or ``"module:name"``) that ``build``
            calls on what a factory returns, raising TypeError / ValueError for a component that
            breaks the kind's contract (for quantizers: :func:`flowmo.quantizers.base.check_constructed`,
            the attributes every constructor must set). None: no check beyond the interface.

    Raises TypeError / ValueError naming the argument for a ``kind`` that is not a non-empty
    string, an ``interface`` / ``spec_base`` that is not a class or ``"module:Name"``, or
    wiring names that are not distinct identifiers (``name`` is reserved).
    """

    def __init__(self, kind: str, *, interface: Ref = None, spec_base: Ref = None, wiring: tuple[str, ...] = (),
                 sizes: Optional[tuple[str, ...]] = None, check: Union[str, Callable[..., None], None] = None):
        if not isinstance(kind, str) or not kind.strip():
            raise TypeError(f"kind must be a non-empty string, got {kind!r}")
        for arg, ref in (("interface", interface), ("spec_base", spec_base)):
            if not (ref is None or isinstance(ref, type) or isinstance(ref, str) and _REF.fullmatch(ref)):
                raise TypeError(f"{arg} must be a class, a 'package.module:ClassName' string or None, got {ref!r}")
        if isinstance(wiring, str) or not isinstance(wiring, (tuple, list)) or not all(
                isinstance(w, str) and w.isidentifier() for w in wiring):
            raise TypeError(f"wiring must be a tuple of argument names, got {wiring!r}")
        if len(set(wiring)) != len(wiring) or "name" in wiring:
            raise ValueError(f"wiring must name distinct arguments other than 'name', got {tuple(wiring)!r}")
        if sizes is None:
            sizes = tuple(wiring)
        if isinstance(sizes, str) or not isinstance(sizes, (tuple, list)) or not set(sizes) <= set(wiring):
            raise TypeError(f"sizes must be a tuple of wiring argument names ({tuple(wiring)!r}), got {sizes!r}")
        if not (check is None or callable(check) or isinstance(check, str) and _REF.fullmatch(check)):
            raise TypeError(f"check must be a function, a 'package.module:name' string or None, got {check!r}")
        self.kind = kind
        self.wiring = tuple(wiring)
        self.sizes = tuple(sizes)
        self._check = check
        self._interface = interface
        self._spec_base = spec_base
        self._entries: dict[str, Entry[T]] = {}

    # ------------------------------------------------------------------ declared classes
    @property
    def interface(self) -> Optional[type]:
        """The kind's abstract base class (None: not declared)."""
        return _resolve(self._interface)

    @property
    def spec_base(self) -> type:
        """The base class of every spec of this kind (for a registry declared without one, a
        ComponentSpec subclass made for it, which dispatches on ``name`` to this registry)."""
        base = _resolve(self._spec_base)
        if base is None:
            self._spec_base = base = _generic_spec_base(self)
        return base

    # ------------------------------------------------------------------ registration
    def register(self, name: str, *, spec: Optional[type] = None, replace: bool = False) -> Callable[[T], T]:
        """Decorator: register the decorated class (or factory function) under ``name``.

        ``spec``: an explicit spec class (a subclass of :attr:`spec_base` whose ``name``
        defaults to ``name``); without it the spec is derived from the factory's keyword-only
        annotated arguments. ``replace``: allow replacing another object registered under
        ``name``. Raises :class:`RegistryError` (a ValueError) naming what is wrong.
        """
        self._check_name(name)

        def decorator(obj: T) -> T:
            self.add(name, obj, spec=spec, replace=replace)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, spec: Optional[type] = None, replace: bool = False) -> None:
        """``register(name, spec=spec, replace=replace)(obj)``, for a factory defined elsewhere."""
        self._check_name(name)
        if not callable(obj):
            raise RegistryError(f"{self.kind} {name!r}: expected a class or factory function, got {obj!r}")
        if not isinstance(replace, bool):
            raise TypeError(f"replace must be True or False, got {replace!r}")
        old = self._entries.get(name)
        if old is not None and not replace:
            if old.factory is obj and (spec is None and old.derived or spec is old.spec):
                return  # the same registration again: harmless
            if old.factory is not obj and not _same_definition(old.factory, obj):
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered (by {_describe(old.factory)}); pick another "
                    f"name, or pass replace=True to replace it with {_describe(obj)}"
                )
            # the same definition again (a re-run cell, a reloaded module): its spec must be the
            # same kind of spec (derived again, or an explicit spec class defined again)
            if (spec is None) != old.derived or spec is not None and spec is not old.spec and not _same_definition(
                    old.spec, spec):
                was = "a spec derived from its arguments" if old.derived else f"the spec {_describe(old.spec)}"
                now = "a spec derived from its arguments" if spec is None else f"the spec {_describe(spec)}"
                raise RegistryError(
                    f"{self.kind} {name!r} is already registered by {_describe(old.factory)} with {was}; registering "
                    f"it with {now} is a different registration: pass replace=True to replace it"
                )
        iface = self.interface
        if iface is not None and isinstance(obj, type) and not issubclass(obj, iface):
            raise RegistryError(
                f"{self.kind} {name!r}: {obj.__qualname__} must derive from {iface.__module__}.{iface.__qualname__} "
                f"(the interface of every {self.kind})"
            )
        self._check_wiring_accepted(name, obj)
        module = str(getattr(obj, "__module__", None) or "")
        if spec is None:
            spec_cls, fields = self._derive_spec(name, obj)
            entry = Entry(name, obj, spec_cls, module, True, fields)
        else:
            self._check_spec(name, spec)
            self._check_takes_spec(name, obj, spec)
            entry = Entry(name, obj, spec, module, False, ())
        self._entries[name] = entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and notebooks)."""
        self.get(name)
        del self._entries[name]

    # ------------------------------------------------------------------ lookup and building
    def get(self, name: str) -> Entry[T]:
        """The entry of ``name``; :class:`UnknownComponentError` (a ValueError) listing the
        registered names if there is none."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}; registered: {known} (a component registered in your own "
                "module is known once that module is imported; on the command line: --import MODULE)",
                self.kind, name,
            ) from None

    def spec_type(self, name: str) -> type:
        """The spec class of the component registered under ``name``."""
        return self.get(name).spec  # type: ignore[return-value]

    def build(self, spec: Any, /, **wiring: Any) -> Any:
        """Build the component a spec describes, passing the kind's wiring arguments.

        Args:
            spec: a spec of this kind (an instance of :attr:`spec_base`), a dict with its
                ``name`` and fields, or a bare name (all fields at their defaults).
            **wiring: exactly the kind's wiring arguments (:attr:`wiring`).

        Returns:
            the component: ``factory(**fields, **wiring)`` for a derived spec,
            ``factory(spec, **wiring)`` for an explicit one.

        Raises:
            TypeError: ``spec`` is of another kind, the wiring arguments are not exactly the
                declared ones, a size (:attr:`sizes`) is not an int, or the factory returned
                something that is not an instance of the kind's interface.
            ValueError: an unknown name (:class:`UnknownComponentError`), invalid fields, or a
                size that is not > 0.
        """
        base = self.spec_base
        if isinstance(spec, (str, dict)):
            spec = base.model_validate(spec)
        elif not isinstance(spec, base):
            raise TypeError(f"{self.kind} spec must be {with_article(base.__name__)}, a dict with a 'name' or a "
                            f"registered name, got {type(spec).__name__}")
        got, want = set(wiring), set(self.wiring)
        if got != want:
            parts = []
            if want - got:
                parts.append(f"missing {', '.join(sorted(want - got))}")
            if got - want:
                parts.append(f"unexpected {', '.join(sorted(got - want))}")
            declared = ", ".join(self.wiring) or "none"
            raise TypeError(f"{self.kind} {spec.name!r}: wiring arguments {'; '.join(parts)} "
                            f"({with_article(self.kind)} takes: {declared})")
        for w in self.sizes:
            v = wiring[w]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise TypeError(f"{self.kind} {spec.name!r}: wiring argument {w} must be a positive int (a size), "
                                f"got {type(v).__name__} {v!r}")
            if v < 1:
                raise ValueError(f"{self.kind} {spec.name!r}: wiring argument {w} must be a positive int (a size), "
                                 f"got {v!r}")
            wiring[w] = int(v)
        entry = self.get(spec.name)
        if not isinstance(spec, entry.spec):  # e.g. a spec of a since re-registered class
            spec = entry.spec.model_validate(spec.model_dump())
        if entry.derived:
            values = dict(spec)
            obj = entry.factory(**{f: values[f] for f in entry.fields}, **wiring)
        else:
            obj = entry.factory(spec, **wiring)
        iface = self.interface
        if iface is not None and not isinstance(obj, iface):
            iface_name = f"{iface.__module__}.{iface.__qualname__}"
            raise TypeError(f"{self.kind} {spec.name!r}: the factory {_describe(entry.factory)} returned "
                            f"{with_article(type(obj).__name__)}, which is not {with_article(iface_name)}")
        if self._check is not None:
            check = self._check
            if isinstance(check, str):
                module, _, fname = check.partition(":")
                self._check = check = vars(importlib.import_module(module))[fname]
            try:
                check(obj, **wiring)
            except TypeError as e:
                raise TypeError(f"{self.kind} {spec.name!r}: {e}") from None
            except ValueError as e:
                raise ValueError(f"{self.kind} {spec.name!r}: {e}") from None
        return obj

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name`` with these arguments as they are
        (prefer :meth:`build`, which validates the spec and the wiring)."""
        return self.get(name).factory(*args, **kwargs)  # type: ignore[operator]

    def names(self, pattern: str = "*") -> list[str]:
        """The registered names matching a shell-style wildcard ``pattern`` (a str), sorted."""
        if not isinstance(pattern, str):
            raise TypeError(f"pattern must be a shell-style wildcard string such as 'lpips_*', got {pattern!r}")
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name."""
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"

    # ------------------------------------------------------------------ checks
    def _check_name(self, name: Any) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else f"{name[:40]!r}... ({len(name)} chars)"
            raise RegistryError(f"{self.kind} registry: name must be a non-empty string of letters, digits, '_' and "
                                f"'-' (at most {MAX_NAME_LENGTH} characters, no spaces, dots or slashes: it is written "
                                f"in configs and on the command line), got {shown}")

    def _check_spec(self, name: str, spec: Any) -> None:
        base = self.spec_base
        if not isinstance(spec, type) or not issubclass(spec, base):
            shown = spec.__name__ if isinstance(spec, type) else repr(spec)
            # a kind declared with "package.module:Class" names its spec base where users import it
            # (flowmo.spec.QuantizerSpec), not in the submodule that defines it
            declared = self._spec_base
            path = declared.replace(":", ".") if isinstance(declared, str) else f"{base.__module__}.{base.__name__}"
            raise RegistryError(f"{self.kind} {name!r}: spec {shown} must be a subclass of "
                                f"{path} (the spec base of every {self.kind})")
        default = spec.model_fields["name"].default if "name" in spec.model_fields else None
        if not isinstance(default, str):
            raise RegistryError(f"{self.kind} {name!r}: spec {spec.__name__}.name has no default; it must default "
                                f"to {name!r} (name: Literal[{name!r}] = {name!r})")
        if default != name:
            raise RegistryError(f"{self.kind} {name!r}: spec {spec.__name__}.name defaults to {default!r}; "
                                f"it must default to {name!r}")

    def _check_takes_spec(self, name: str, obj: Any, spec: type) -> None:
        """An explicit spec: ``build`` calls ``obj(spec, **wiring)``; refuse a factory that cannot take that."""
        sig = _signature(self.kind, name, obj)
        try:
            sig.bind(object(), **{w: None for w in self.wiring})
        except TypeError as e:
            wiring = "".join(f", {w}=..." for w in self.wiring)
            raise RegistryError(
                f"{self.kind} {name!r}: registered with spec={spec.__name__}, {_describe(obj)} is called as "
                f"{getattr(obj, '__name__', 'factory')}(spec{wiring}), but it takes {sig} ({e}); make the spec its "
                "first positional argument, or drop spec=... to derive the spec from its keyword-only arguments"
            ) from None

    def _check_wiring_accepted(self, name: str, obj: Any) -> None:
        if not self.wiring:
            return
        params = _signature(self.kind, name, obj).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return
        bad = [w for w in self.wiring if w not in params or params[w].kind is inspect.Parameter.POSITIONAL_ONLY]
        if bad:
            raise RegistryError(f"{self.kind} {name!r}: {_describe(obj)} must take the keyword argument(s) "
                                f"{', '.join(bad)}, which the model passes to every {self.kind}")

    def _derive_spec(self, name: str, obj: Any) -> tuple[type, tuple[str, ...]]:
        """The spec class of ``obj``'s keyword-only annotated arguments (wiring excluded)."""
        from pydantic import Field, ValidationError, create_model

        sig = _signature(self.kind, name, obj)
        target = obj.__init__ if isinstance(obj, type) else obj
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception as e:  # an annotation naming something undefined
            raise RegistryError(f"{self.kind} {name!r}: the annotations of {_describe(obj)} cannot be "
                                f"resolved ({type(e).__name__}: {e})") from None
        where = f"{self.kind} {name!r}: {_describe(obj)}"
        fields: dict[str, Any] = {}
        for p in sig.parameters.values():
            if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or p.name in self.wiring:
                continue
            if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is not inspect.Parameter.empty:
                continue  # never passed by build (e.g. an interface's optional positional spec)
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                raise RegistryError(
                    f"{where}: argument {p.name!r} must be keyword-only (after `*`): a component's configuration "
                    "is its keyword-only arguments" + (f"; the model passes {', '.join(self.wiring)}" if self.wiring
                                                       else "")
                    + " (or register an explicit spec class with spec=...)")
            if p.name == "name":
                raise RegistryError(f"{where}: argument 'name' is reserved (every spec's 'name' is the registered name)")
            why = self._reserved(p.name)
            if why:
                raise RegistryError(f"{where}: argument {p.name!r} is reserved ({why}); rename it")
            if p.name not in hints:
                raise RegistryError(f"{where}: argument {p.name!r} has no type annotation; annotate it "
                                    f"(e.g. `{p.name}: float = 0.1`) so that its spec can validate it")
            try:
                tp = _strict_type(hints[p.name])
            except _NotJSON as e:
                raise RegistryError(f"{where}: argument {p.name!r}: its annotation {_show_type(hints[p.name])} "
                                    f"cannot form a spec ({e}); specs are JSON data: use {_JSON_TYPES}") from None
            default = ... if p.default is inspect.Parameter.empty else p.default
            fields[p.name] = (tp, Field(default, validate_default=True))  # a list default becomes a tuple
        base = self.spec_base
        cls_name = f"{getattr(obj, '__name__', 'Component')}Spec"
        try:
            spec_cls = create_model(  # type: ignore[call-overload]
                cls_name, __base__=base, __module__=str(getattr(obj, "__module__", __name__)),
                __doc__=f"The spec of the {self.kind} {name!r}, derived from the arguments of {_describe(obj)}.",
                name=(typing.Literal[name], name), **fields,
            )
        except Exception as e:  # a type pydantic cannot validate (e.g. torch.dtype)
            raise RegistryError(f"{where}: its arguments cannot form a spec ({type(e).__name__}: {e}); specs are "
                                "JSON data: use int, float, bool, str, tuples, lists, Literal, Optional, ...") from None
        for field, (tp, info) in fields.items():  # each default: valid, finite, and the same after JSON
            default = info.default
            if default is ...:
                continue
            check = create_model("DefaultOf" + field.title().replace("_", ""), __config__=base.model_config,
                                 value=(tp, ...))
            try:
                value = check.model_validate({"value": default})
                same = check.model_validate_json(value.model_dump_json()) == value
            except ValidationError as e:
                msgs = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                raise RegistryError(f"{where}: the default value {_short(default)} of {field!r} is invalid for its "
                                    f"annotation: {msgs}") from None
            if not same:
                raise RegistryError(f"{where}: the default value {_short(default)} of {field!r} changes through JSON; "
                                    "use a value JSON keeps (numbers, strings, booleans, None, lists, dicts)")
        return spec_cls, tuple(fields)

    def _reserved(self, arg: str) -> str:
        """Why a constructor argument cannot be a spec field (it would shadow something), or ''."""
        if arg.startswith("_"):
            return "pydantic keeps names starting with '_' private, so no spec field can have one"
        if arg.startswith("model_"):
            return "pydantic reserves names starting with 'model_' on every spec"
        base = self.spec_base
        if hasattr(base, arg):
            what = "a method" if callable(getattr(base, arg)) else "an attribute"
            return f"{what} of every {self.kind} spec: {base.__name__}.{arg}"
        return ""


def _generic_spec_base(registry: Registry) -> type:
    from ..spec import ComponentSpec

    class KindSpec(ComponentSpec):
        kind_base: typing.ClassVar[bool] = True
        registry: typing.ClassVar[Optional[Registry]] = None

    KindSpec.registry = registry
    KindSpec.__name__ = KindSpec.__qualname__ = "".join(w.title() for w in registry.kind.split()) + "Spec"
    KindSpec.__doc__ = f"Spec of {with_article(registry.kind)}; validating this class dispatches on ``name``."
    return KindSpec


def _signature(kind: str, name: str, obj: Any) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{kind} {name!r}: cannot read the arguments of {_describe(obj)} ({e})") from None


_VOWEL_LETTERS = set("AEFHILMNORSX")  # letters whose names begin with a vowel sound ("an FSQ", "an LFQ")


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article: "a quantizer", "an ODE solver", "an LFQ", "an
    FSQSpec", "an entropy group" (a word starting with two capitals is read letter by letter)."""
    noun = str(noun)
    word = noun.split(" ", 1)[0].split(".", 1)[0]
    if not word:
        return f"a {noun}"
    if len(word) > 1 and word[0].isupper() and word[1].isupper():
        vowel = word[0] in _VOWEL_LETTERS
    else:
        low = word.lower()
        vowel = low[0] in "aeio" or low.startswith("un") and not low.startswith("uni")
    return f"{'an' if vowel else 'a'} {noun}"


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{qual}" if module else qual


def _same_definition(a: Any, b: Any) -> bool:
    """``b`` is ``a`` defined again (a re-run notebook cell, a reloaded module): same module and
    qualified name, not a lambda or a nested function (whose names are not unique)."""
    qa, qb = getattr(a, "__qualname__", None), getattr(b, "__qualname__", None)
    if not qa or qa != qb or "<" in qa:
        return False
    return getattr(a, "__module__", None) == getattr(b, "__module__", None)


class _NotJSON(TypeError):
    """An annotation a spec field cannot have (the reason is the message)."""


_JSON_TYPES = ("int, float, bool, str, None, Literal[...], Optional[...] / Union[...], tuple[...], list[...] "
               "(stored as a tuple), dict[str, ...], Annotated[..., Field(...)] or a flowmo spec class")


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def _show_type(tp: Any) -> str:
    return tp.__qualname__ if isinstance(tp, type) else str(tp).replace("typing.", "")


class FrozenDict(dict):
    """The value of a ``dict[str, ...]`` field of a derived spec: a dict that cannot be changed
    and is hashable (specs are frozen and hashable); it compares equal to the plain dict."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def _frozen(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a spec's dict field cannot be changed (specs are frozen); use spec.replace(...)")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _frozen  # type: ignore

    def __reduce__(self) -> Any:
        return (FrozenDict, (dict(self),))


def _strict_type(tp: Any) -> Any:
    """The spec field type of a constructor annotation: ``int``/``float``/``bool`` become the strict
    spec types (no booleans or strings for numbers) wherever they appear (inside Annotated,
    Optional/Union, tuples, lists, sets, dict values; a Literal of numbers refuses booleans); a
    list / Sequence becomes a tuple, a set a frozenset and a dict a :class:`FrozenDict`, so that
    specs stay frozen and hashable. Raises :class:`_NotJSON` for anything JSON cannot hold
    (``Any``, ``object``, tensors, paths, ...) and for containers without item types."""
    from pydantic import AfterValidator, BaseModel, BeforeValidator

    from ..spec import SpecBool, SpecFloat, SpecInt, SpecModel
    from ..spec.components import strict_literal

    if tp is bool:
        return SpecBool
    if tp is int:
        return SpecInt
    if tp is float:
        return SpecFloat
    if tp is str or tp is type(None) or tp is None:
        return tp
    if isinstance(tp, type) and issubclass(tp, SpecModel):
        return tp  # a nested spec: frozen, JSON
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return typing.Annotated[(_strict_type(args[0]), *tp.__metadata__)]
    if origin is typing.Literal:
        bad = [v for v in args if not isinstance(v, (str, int, type(None))) or isinstance(v, float)]
        if bad:
            raise _NotJSON(f"Literal values must be strings, ints, booleans or None, got {bad[0]!r}")
        if any(isinstance(v, int) and not isinstance(v, bool) for v in args):
            return typing.Annotated[tp, BeforeValidator(strict_literal(args))]
        return tp
    if origin is Union or origin is types.UnionType:
        return Union[tuple(_strict_type(a) for a in args)]  # type: ignore[return-value]
    containers = {tuple: "tuple", list: "list", collections.abc.Sequence: "Sequence",
                  collections.abc.MutableSequence: "MutableSequence", set: "set", frozenset: "frozenset",
                  collections.abc.Set: "AbstractSet", collections.abc.MutableSet: "MutableSet", dict: "dict",
                  collections.abc.Mapping: "Mapping", collections.abc.MutableMapping: "MutableMapping"}
    kind = containers.get(origin) or containers.get(tp)
    if kind is not None and not args:
        example = f"{kind}[str, float]" if "ap" in kind or kind == "dict" else f"{kind}[int]"
        raise _NotJSON(f"a bare {kind} has no item type: write e.g. {example}")
    if origin is tuple:
        if args == ((),):
            return tp
        return tuple[tuple(a if a is Ellipsis else _strict_type(a) for a in args)]  # type: ignore[misc]
    if origin in (list, collections.abc.Sequence, collections.abc.MutableSequence):
        return tuple[_strict_type(args[0]), ...]  # type: ignore[misc]
    if origin in (set, frozenset, collections.abc.Set, collections.abc.MutableSet):
        return frozenset[_strict_type(args[0])]  # type: ignore[misc,valid-type]
    if origin in (dict, collections.abc.Mapping, collections.abc.MutableMapping):
        if args[0] is not str:
            raise _NotJSON(f"dict keys must be str (JSON object keys are strings), got {_show_type(args[0])}")
        return typing.Annotated[dict[str, _strict_type(args[1])], AfterValidator(FrozenDict)]  # type: ignore[misc]
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        raise _NotJSON("a pydantic model that is not a frozen flowmo spec (derive it from flowmo.spec.SpecModel)")
    raise _NotJSON("not JSON data" if tp in (typing.Any, object) or isinstance(tp, type) else "unsupported annotation")


BACKBONES: Registry = Registry("backbone", interface="flowmo.blocks.base:Backbone",
                               spec_base="flowmo.spec:BackboneSpec", wiring=("patch_dim", "txt_in_dim", "txt_out_dim"))
QUANTIZERS: Registry = Registry("quantizer", interface="flowmo.quantizers.base:Quantizer",
                                check="flowmo.quantizers.base:check_constructed",
                                spec_base="flowmo.spec:QuantizerSpec", wiring=("channels",))
TIME_SAMPLERS: Registry = Registry("time sampler", interface="flowmo.losses.time_samplers:TimeSampler",
                                   spec_base="flowmo.spec:TimeSamplerSpec")
FLOW_LOSSES: Registry = Registry("flow loss", interface="flowmo.losses.flow:FlowLoss",
                                 spec_base="flowmo.spec:FlowLossSpec")
TIME_GRIDS: Registry = Registry("time grid", interface="flowmo.samplers.grids:TimeGrid",
                                spec_base="flowmo.spec:TimeGridSpec")
SOLVERS: Registry = Registry("ODE solver", interface="flowmo.samplers.solvers:Solver",
                             spec_base="flowmo.spec:SolverSpec")
POSTTRAIN_OBJECTIVES: Registry = Registry("post-training objective",
                                          interface="flowmo.losses.posttrain:PosttrainObjective",
                                          spec_base="flowmo.spec:PosttrainSpec")
PERCEPTUAL_DISTANCES: Registry = Registry("perceptual distance", interface="flowmo.losses.perceptual:PerceptualDistance",
                                          spec_base="flowmo.spec:PerceptualSpec")

REGISTRIES = {
    "backbone": BACKBONES,
    "quantizer": QUANTIZERS,
    "time_sampler": TIME_SAMPLERS,
    "flow_loss": FLOW_LOSSES,
    "time_grid": TIME_GRIDS,
    "solver": SOLVERS,
    "posttrain": POSTTRAIN_OBJECTIVES,
    "perceptual": PERCEPTUAL_DISTANCES,
}
