"""The bases of every spec: :class:`OneLineErrors` (validation errors told in one line),
:class:`SpecModel` (frozen, editable with ``replace``), :class:`ComponentSpec` (tagged by
``name``, dispatching on it for a kind's base class), and :class:`LossTerm`, one term of a
training loss as a spec declares it; editing specs: :func:`replace_spec` (behind every spec's
``replace``) and :func:`merge_data`, the merge rules it shares with the training config's overrides."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Iterator, NamedTuple, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

if TYPE_CHECKING:  # pragma: no cover
    from flowmo.registry.core import Registry


_SHOWN_ERRORS = 5  # errors named in one message; the rest are counted


def _where(loc: tuple) -> str:
    """A pydantic location as a dotted field path: ``("quantizer", "levels", 2)`` -> ``quantizer.levels[2]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _given(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _error_words(err: dict) -> str:
    """One pydantic error in words: the field, what was expected and what was given."""
    where, kind, msg = _where(tuple(err.get("loc", ()))), err.get("type", ""), str(err.get("msg", ""))
    if kind == "missing":
        return f"{where} is missing (a required field)"
    if kind == "extra_forbidden":
        return f"unexpected field {where} (given {_given(err.get('input'))})"
    if kind == "json_invalid":
        return f"not valid JSON ({(err.get('ctx') or {}).get('error', msg)})"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):  # flowmo's own checks: their words already name what was given
            msg = msg[len(prefix):]
            break
    else:
        msg = f"{msg[:1].lower()}{msg[1:]}, got {_given(err.get('input'))}"
    return f"{where}: {msg}" if where else msg


def validation_message(error: ValidationError) -> str:
    """pydantic's ``error`` in one line, without its URLs: ``invalid <Model>: <field>: <what was
    expected, what was given>; ...`` (the first errors, then a count of the rest)."""
    errors = error.errors(include_url=False)
    parts = [_error_words(e) for e in errors[:_SHOWN_ERRORS]]
    if len(errors) > _SHOWN_ERRORS:
        parts.append(f"and {len(errors) - _SHOWN_ERRORS} more")
    return f"invalid {error.title}: " + "; ".join(parts)


class SpecValidationError(ValidationError):
    """pydantic's ValidationError (the same ``errors()``, caught as ``ValidationError`` or
    ``ValueError``) whose message is one line (:func:`validation_message`): what the models of
    :class:`OneLineErrors` raise, so that no multi-line pydantic dump with its "For further
    information visit ..." lines reaches a user, in Python or on the command line."""

    def __str__(self) -> str:
        return validation_message(self)

    @classmethod
    def of(cls, error: ValidationError) -> "SpecValidationError":
        if isinstance(error, cls):
            return error
        lines = []
        for e in error.errors(include_url=False):
            try:  # a built-in error type keeps its context (e.g. the UnknownComponentError inside)
                cls.from_exception_data(error.title, [e])
                lines.append(e)
            except (KeyError, TypeError, ValueError):  # a custom type: its message kept as is
                msg = e.get("msg", "").replace("{", "{{").replace("}", "}}")
                lines.append({**e, "type": PydanticCustomError(e.get("type", "error"), msg)})
        return cls.from_exception_data(error.title, lines)


class OneLineErrors(BaseModel):
    """Base of flowmo's pydantic models (specs and training configs): validating one (the
    constructor, ``model_validate``, ``model_validate_json``, ``model_validate_strings``) raises
    :class:`SpecValidationError`, pydantic's error told in one line."""

    def __init__(self, /, **data: Any) -> None:
        with _told_in_one_line():
            super().__init__(**data)

    @classmethod
    def model_validate(cls, *args: Any, **kw: Any) -> Any:
        with _told_in_one_line():
            return super().model_validate(*args, **kw)

    @classmethod
    def model_validate_json(cls, *args: Any, **kw: Any) -> Any:
        with _told_in_one_line():
            return super().model_validate_json(*args, **kw)

    @classmethod
    def model_validate_strings(cls, *args: Any, **kw: Any) -> Any:
        with _told_in_one_line():
            return super().model_validate_strings(*args, **kw)


@contextmanager
def _told_in_one_line() -> Iterator[None]:
    """Re-raise pydantic's ValidationError as :class:`SpecValidationError` (one line)."""
    try:
        yield
    except ValidationError as e:
        raise SpecValidationError.of(e) from None


class LossTerm(NamedTuple):
    """One term of a training loss, as declared by a spec (see :meth:`FlowMoSpec.loss_terms`).

    ``name`` is the key of the term in :class:`flowmo.model.LossOutput` ``.terms``;
    ``weight`` is the factor already applied to that term (the total is the plain sum of
    the terms); ``what`` says what the unweighted term is, in words.
    """

    name: str
    weight: float
    what: str


class SpecModel(OneLineErrors):
    """Base of the spec models: frozen, no unknown fields, no NaN/Inf, editable with :meth:`replace`.

    ``mutually_exclusive`` lists groups of input keys that are alternatives to one another
    (e.g. :class:`GuidanceSpec`'s ``interval`` / ``interval_sigma``): an edit that gives one
    key of a group drops the others from the edited spec (see :func:`merge_data`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mutually_exclusive: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def replace(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` applied (semantics: :func:`replace_spec`)."""

        return replace_spec(self, changes)


class ComponentSpec(SpecModel):
    """Base of every component spec: frozen, no unknown fields, tagged by ``name``.

    Subclasses that stand for a whole component kind set ``kind_base = True`` and
    ``registry``; validating such a class dispatches on ``name`` to the registered spec.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    registry: ClassVar[Optional[Registry]] = None

    def __new__(cls, *args: Any, **data: Any) -> Any:
        # ``QuantizerSpec(name="fsq", levels=...)`` is the registered spec of "fsq" (an FSQSpec):
        # calling a kind's base class dispatches on the name, as validating one does
        if data and cls.__dict__.get("kind_base", False):
            return cls.model_validate(data)
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_on_name(cls, data: Any, handler: Any) -> Any:
        if not cls.__dict__.get("kind_base", False):
            return handler(data)
        if isinstance(data, cls) and type(data) is not cls:
            return data  # already a concrete spec of this kind
        if isinstance(data, str):
            data = {"name": data}
        elif isinstance(data, BaseModel):
            data = data.model_dump()
        reg = cls.registry
        if not isinstance(data, dict) or "name" not in data:
            raise ValueError(f"expected a mapping with the 'name' of the {reg.kind} ({', '.join(reg)}), got {_given(data)}")
        entry = reg.get(data["name"])  # RegistryError (a ValueError) lists the registered names
        spec_cls = entry.spec
        if spec_cls is None or spec_cls is cls:
            return handler(data)
        return spec_cls.model_validate(data)


# ----------------------------------------------------------------------------- editing
S = TypeVar("S", bound=BaseModel)


def replace_spec(spec: S, changes: Mapping[str, Any]) -> S:
    """A validated copy of ``spec`` (any spec: FlowMoSpec, SamplerSpec, a component spec, ...)
    with ``changes`` applied; :meth:`SpecModel.replace` and ``FlowMoSpec.replace`` call it.

    The result is ``model_validate(merge_data(type(spec), spec.model_dump(), changes))`` (for
    a component spec, validated through its kind's base class, so a new ``name`` dispatches):
    see :func:`merge_data` for the merge rules. Raises TypeError if ``spec`` is not a pydantic
    model or ``changes`` not a mapping, ValueError naming unknown fields, and pydantic's
    ValidationError (a ValueError) naming the fields of an invalid result.
    """
    if not isinstance(spec, BaseModel):
        raise TypeError(f"spec must be a spec (a pydantic model), got {type(spec).__name__}")
    cls = type(spec)
    data = merge_data(cls, spec.model_dump(), changes)
    return (_kind_base(cls) or cls).model_validate(data)


def merge_data(cls: type[BaseModel], base: Any, changes: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """The data of spec class ``cls`` (``base``: a dict of its fields, a spec object, or a
    name) edited by ``changes``, unvalidated: what :func:`replace_spec` validates and what
    the training config's file overrides and ``--set`` overrides build (flowmo.train.config).

    Rules, for each ``key: value`` of ``changes``:

    - ``key`` must be a field of the spec class (or an alternative key of a
      ``mutually_exclusive`` group); anything else raises ValueError naming the unknown keys,
      the place (``where``, e.g. ``"sampler.guidance"``) and the accepted ones. For a
      component spec the class is the one its ``name`` is registered with.
    - a dict value for a field that holds a spec merges into the current value by these
      rules, recursively (a missing or None current value counts as the field's default, or
      as empty); a str value for a component field means ``{"name": value}``.
    - a component whose ``name`` changes starts from nothing: the old component's fields
      are dropped and the new one's defaults fill what ``changes`` does not give (the same
      name keeps them).
    - giving one key of a ``mutually_exclusive`` group (``interval`` / ``interval_sigma``)
      drops the others from the result.
    - any other value (a spec object, list, tuple, number, None, a sampler preset name)
      replaces the field whole.

    Raises TypeError if ``changes`` is not a mapping and ValueError for unknown keys.
    """
    if not isinstance(changes, Mapping):
        raise TypeError(f"{where or cls.__name__}: the changes must be a mapping of field names to values, got {changes!r}")
    base = _as_data(cls, base)
    data: dict[str, Any] = dict(base) if isinstance(base, Mapping) else {}
    target: Optional[type[BaseModel]] = cls
    kind = _kind_base(cls)
    if kind is not None:
        old = data.get("name")
        if "name" in changes and old is not None and changes["name"] != old:
            data = {}  # another component: the old one's fields do not apply to it
        target = _registered_spec(kind, changes.get("name", data.get("name")))
    if target is not None:
        place = where or cls.__name__
        if kind is not None and kind.registry is not None:
            place = f"{place} ({kind.registry.kind} {changes.get('name', data.get('name'))!r})"
        _check_keys(target, changes, place)
    fields = (target or cls).model_fields
    groups = _exclusive_groups(target or cls)
    for key in changes:
        for group in groups:
            if key in group:
                for other in group:
                    if other != key and other not in changes:
                        data.pop(other, None)
    for key, value in changes.items():
        info = fields.get(key)
        sub = _model_class(info.annotation) if info is not None else None
        if sub is not None and isinstance(value, str) and _kind_base(sub) is not None:
            value = {"name": value}
        if sub is not None and isinstance(value, Mapping):
            current = data[key] if key in data else _default_data(info)
            data[key] = merge_data(sub, current, value, where=f"{where}.{key}" if where else key)
        else:
            data[key] = value.model_dump() if isinstance(value, BaseModel) else value
    return data


def _kind_base(cls: type) -> Optional[type[ComponentSpec]]:
    """The component-kind base class (``kind_base = True``) of spec class ``cls``, or None."""
    for c in cls.__mro__:
        if c.__dict__.get("kind_base", False):
            return c
    return None


def _registered_spec(kind: type[ComponentSpec], name: Any) -> Optional[type[BaseModel]]:
    """The spec class registered for component ``name`` of ``kind`` (the kind's base class when
    the factory takes none); None when the name is not registered (validation says so)."""
    reg = kind.registry
    if reg is None or not isinstance(name, str) or name not in reg:
        return None
    return reg.get(name).spec or kind


def _exclusive_groups(cls: type) -> tuple[tuple[str, ...], ...]:
    return cls.mutually_exclusive if isinstance(cls, type) and issubclass(cls, SpecModel) else ()


def _check_keys(cls: type[BaseModel], changes: Mapping[str, Any], where: str) -> None:
    accepted = list(cls.model_fields)
    accepted += [k for g in _exclusive_groups(cls) for k in g if k not in accepted]
    unknown = [k for k in changes if k not in accepted]
    if unknown:
        raise ValueError(f"{where}: unknown field{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                         f"({cls.__name__} takes {', '.join(accepted)})")


def _model_class(annotation: Any) -> Optional[type[BaseModel]]:
    """The spec class a field's annotation holds (through Optional and Annotated), or None."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _model_class(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        found = {c for c in map(_model_class, typing.get_args(annotation)) if c is not None}
        return found.pop() if len(found) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _as_data(cls: type[BaseModel], value: Any) -> Any:
    """A current value as a dict of fields where it is a spec object or a name."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, str):
        if _kind_base(cls) is not None:
            return {"name": value}
        return cls.model_validate(value).model_dump()  # e.g. a sampler preset name
    return value


def _default_data(info: Any) -> Any:
    if info.is_required():
        return {}
    return _as_data(_model_class(info.annotation) or BaseModel, info.get_default(call_default_factory=True))
