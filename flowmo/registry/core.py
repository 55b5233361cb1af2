"""The generic :class:`Registry`: declaring a component kind, registering, looking up and building.

What a registration must satisfy is checked in :mod:`flowmo.registry.checks`, the spec derived
from a factory's arguments is made in :mod:`flowmo.registry.derive`, and the registries of the
built-in kinds are declared in :mod:`flowmo.registry.kinds`.
"""

from __future__ import annotations

import fnmatch
import importlib
import numbers
import re
import typing
from typing import Any, Callable, Generic, Iterator, Optional, Union

from .checks import _check_name, _check_spec, _check_takes_spec, _same_definition
from .derive import _derive_spec
from .entry import Entry, RegistryError, T, UnknownComponentError
from .words import _describe, with_article

_REF = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


Ref = Union[type, str, None]


def _resolve(ref: Ref) -> Optional[type]:
    """A class, or ``"package.module:Name"`` imported on first use (the registries are declared
    below everything else, so they name their kind's classes instead of importing them)."""
    if ref is None or isinstance(ref, type):
        return ref
    module, _, name = ref.partition(":")
    try:
        found: Any = vars(importlib.import_module(module))[name]
    except (ImportError, KeyError) as e:
        found = e
    if not isinstance(found, type):
        raise TypeError(f"the class {ref!r} a registry names cannot be imported as a class ({found!r})")
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
        for arg, ref in (("interface", interface), ("spec_base", spec_base), ("check", check)):
            what = "function" if arg == "check" else "class"
            if not (ref is None or (callable(ref) if arg == "check" else isinstance(ref, type)) or isinstance(ref, str)
                    and _REF.fullmatch(ref)):
                raise TypeError(f"{arg} must be a {what}, a 'package.module:Name' string or None, got {ref!r}")
        if not isinstance(wiring, (tuple, list)) or not all(isinstance(w, str) and w.isidentifier() for w in wiring):
            raise TypeError(f"wiring must be a tuple of argument names, got {wiring!r}")
        if len(set(wiring)) != len(wiring) or "name" in wiring:
            raise ValueError(f"wiring must name distinct arguments other than 'name', got {tuple(wiring)!r}")
        if sizes is None:
            sizes = tuple(wiring)
        if not isinstance(sizes, (tuple, list)) or not set(sizes) <= set(wiring):
            raise TypeError(f"sizes must be a tuple of wiring argument names ({tuple(wiring)!r}), got {sizes!r}")
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
        _check_name(self.kind, name)

        def decorator(obj: T) -> T:
            self._add(name, obj, spec, replace)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, spec: Optional[type] = None, replace: bool = False) -> None:
        """``register(name, spec=spec, replace=replace)(obj)``, for a factory defined elsewhere."""
        _check_name(self.kind, name)
        self._add(name, obj, spec, replace)

    def _add(self, name: str, obj: T, spec: Optional[type], replace: bool) -> None:
        """:meth:`add` for a ``name`` already checked."""
        if not callable(obj):
            raise RegistryError(f"{self.kind} {name!r}: expected a class or factory function, got {obj!r}")
        if not isinstance(replace, bool):
            raise TypeError(f"replace must be True or False, got {replace!r}")
        old = self._entries.get(name)
        if old is not None and not replace:
            if old.factory is obj and (spec is None and old.derived or spec is old.spec):
                return  # the same registration again: harmless
            if old.factory is not obj and not _same_definition(old.factory, obj):
                raise RegistryError(f"{self.kind} {name!r} is already registered by {_describe(old.factory)}; pass replace=True to replace it")
            # the same definition again (a re-run cell, a reloaded module): its spec must be the
            # same kind of spec (derived again, or an explicit spec class defined again)
            if not (spec is None and old.derived or spec is not None and not old.derived
                    and (spec is old.spec or _same_definition(old.spec, spec))):
                was, now = (_spec_words(s) for s in (None if old.derived else old.spec, spec))
                raise RegistryError(f"{self.kind} {name!r} is already registered by {_describe(old.factory)} with {was}; "
                                    f"registering it with {now} is a different registration: pass replace=True to replace it")
        iface = self.interface
        if iface is not None and isinstance(obj, type) and not issubclass(obj, iface):
            raise RegistryError(f"{self.kind} {name!r}: {obj.__qualname__} must derive from {_qualified(iface)}")
        module = str(getattr(obj, "__module__", None) or "")
        if spec is None:
            spec_cls, fields = _derive_spec(self, name, obj)
            entry = Entry(name, obj, spec_cls, module, True, fields)
        else:
            _check_spec(self, name, spec)
            _check_takes_spec(self, name, obj, spec)
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
            raise UnknownComponentError(f"unknown {self.kind} {name!r}; registered: {', '.join(self) or '(none)'} (a component "
                                        "of your own module is known once it is imported: --import MODULE)", self.kind, name) from None

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
            raise TypeError(f"{self.kind} spec must be {with_article(base.__name__)}, a dict or a registered name, got "
                            f"{type(spec).__name__}")
        got, want = set(wiring), set(self.wiring)
        if got != want:
            diff = "; ".join(f"{w} {', '.join(sorted(n))}" for w, n in (("missing", want - got), ("unexpected", got - want)) if n)
            raise TypeError(f"{self.kind} {spec.name!r}: wiring arguments {diff} ({with_article(self.kind)} takes: "
                            f"{', '.join(self.wiring) or 'none'})")
        for w in self.sizes:
            v = wiring[w]
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                error = TypeError if isinstance(v, bool) or not isinstance(v, numbers.Integral) else ValueError
                raise error(f"{self.kind} {spec.name!r}: wiring argument {w} must be a positive int (a size), got {v!r}")
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
            raise TypeError(f"{self.kind} {spec.name!r}: the factory {_describe(entry.factory)} returned "
                            f"{with_article(type(obj).__name__)}, which is not {with_article(_qualified(iface))}")
        if self._check is not None:
            check = self._check
            if isinstance(check, str):
                module, _, fname = check.partition(":")
                self._check = check = vars(importlib.import_module(module))[fname]
            try:
                check(obj, **wiring)
            except (TypeError, ValueError) as e:
                raise (TypeError if isinstance(e, TypeError) else ValueError)(f"{self.kind} {spec.name!r}: {e}") from None
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


def _spec_words(spec: Optional[type]) -> str:
    """A registration's spec in words (None: derived)."""
    return "a spec derived from its arguments" if spec is None else f"the spec {_describe(spec)}"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _generic_spec_base(registry: Registry) -> type:
    from .spec_base import ComponentSpec

    class KindSpec(ComponentSpec):
        kind_base: typing.ClassVar[bool] = True
        registry: typing.ClassVar[Optional[Registry]] = None

    KindSpec.registry = registry
    KindSpec.__name__ = KindSpec.__qualname__ = "".join(w.title() for w in registry.kind.split()) + "Spec"
    KindSpec.__doc__ = f"Spec of {with_article(registry.kind)}; validating this class dispatches on ``name``."
    return KindSpec
