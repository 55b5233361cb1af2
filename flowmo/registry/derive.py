"""The spec derived from a factory's keyword-only, annotated arguments: which annotations a spec
field may have (JSON data; ``int`` / ``float`` / ``bool`` become the strict spec types, a list
a tuple, a dict a :class:`FrozenDict`), which argument names are reserved, and the checks on
the defaults (valid, finite, the same after a JSON round trip)."""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from typing import TYPE_CHECKING, Any, Union

from .checks import _signature
from .entry import RegistryError
from .words import _describe, _short

if TYPE_CHECKING:
    from .core import Registry


def _derive_spec(registry: Registry, name: str, obj: Any) -> tuple[type, tuple[str, ...]]:
    """The spec class of ``obj``'s keyword-only annotated arguments (wiring excluded)."""
    from pydantic import Field, ValidationError, create_model

    where = f"{registry.kind} {name!r}: {_describe(obj)}"
    params = _signature(registry.kind, name, obj).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    refused = [w for w in registry.wiring if not takes_any and (
        w not in params or params[w].kind is inspect.Parameter.POSITIONAL_ONLY)]
    if refused:  # build passes them as keywords
        raise RegistryError(f"{where} must take the keyword argument(s) {', '.join(refused)}")
    try:
        hints = typing.get_type_hints(obj.__init__ if isinstance(obj, type) else obj, include_extras=True)
    except Exception as e:  # an annotation naming something undefined
        raise RegistryError(f"{where}: its annotations cannot be resolved ({e})") from None
    fields: dict[str, Any] = {}
    for p in params.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD) or p.name in registry.wiring:
            continue
        if p.kind is inspect.Parameter.POSITIONAL_ONLY and p.default is not inspect.Parameter.empty:
            continue  # never passed by build (e.g. an interface's optional positional spec)
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise RegistryError(f"{where}: argument {p.name!r} must be keyword-only (after `*`), or give spec=...")
        why = _reserved(registry, p.name)
        if why:
            raise RegistryError(f"{where}: argument {p.name!r} is reserved ({why}); rename it")
        if p.name not in hints:
            raise RegistryError(f"{where}: argument {p.name!r} has no type annotation; annotate it (e.g. `{p.name}: float = 0.1`)")
        try:
            tp = _strict_type(hints[p.name])
        except _NotJSON as e:
            raise RegistryError(f"{where}: argument {p.name!r}: its annotation {_show_type(hints[p.name])} "
                                f"cannot form a spec ({e}); specs are JSON data: use {_JSON_TYPES}") from None
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[p.name] = (tp, Field(default, validate_default=True))  # a list default becomes a tuple
    base = registry.spec_base
    cls_name = f"{getattr(obj, '__name__', 'Component')}Spec"
    try:
        spec_cls = create_model(  # type: ignore[call-overload]
            cls_name, __base__=base, __module__=str(getattr(obj, "__module__", __name__)),
            __doc__=f"The spec of the {registry.kind} {name!r}, derived from the arguments of {_describe(obj)}.",
            name=(typing.Literal[name], name), **fields,
        )
    except Exception as e:  # a type pydantic cannot validate (e.g. torch.dtype)
        raise RegistryError(f"{where}: its arguments cannot form a spec ({e}); specs are JSON data: use {_JSON_TYPES}") from None
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
            raise RegistryError(f"{where}: the default value {_short(default)} of {field!r} is invalid for its annotation: {msgs}") from None
        if not same:
            raise RegistryError(f"{where}: the default value {_short(default)} of {field!r} changes through JSON; use a value JSON keeps")
    return spec_cls, tuple(fields)


def _reserved(registry: Registry, arg: str) -> str:
    """Why a constructor argument cannot be a spec field (it would shadow something), or ''."""
    if arg == "name":
        return "every spec's 'name' is the registered name"
    if arg.startswith("_"):
        return "pydantic keeps names starting with '_' private, so no spec field can have one"
    if arg.startswith("model_"):
        return "pydantic reserves names starting with 'model_' on every spec"
    base = registry.spec_base
    if hasattr(base, arg):
        what = "a method" if callable(getattr(base, arg)) else "an attribute"
        return f"{what} of every {registry.kind} spec: {base.__name__}.{arg}"
    return ""


class _NotJSON(TypeError):
    """An annotation a spec field cannot have (the reason is the message)."""


_JSON_TYPES = ("int, float, bool, str, None, Literal[...], Optional[...] / Union[...], tuple[...], list[...] "
               "(stored as a tuple), dict[str, ...], Annotated[..., Field(...)] or a flowmo spec class")


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

    from .scalars import SpecBool, SpecFloat, SpecInt
    from .spec_base import SpecModel
    from .scalars import strict_literal

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
