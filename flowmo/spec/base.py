"""The bases of every spec: :class:`OneLineErrors` (validation errors told in one line),
:class:`SpecModel` (frozen, editable with ``replace``), :class:`ComponentSpec` (tagged by
``name``, dispatching on it for a kind's base class), and :class:`LossTerm`, one term of a
training loss as a spec declares it."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from ..registry import Registry

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
        from .editing import replace_spec  # imported here: the editing module imports this one

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
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping with a 'name' field, got {type(data).__name__}")
        reg = cls.registry
        assert reg is not None
        if "name" not in data:
            raise ValueError(f"missing 'name' of the {reg.kind}; registered: {', '.join(reg.names())}")
        entry = reg.get(data["name"])  # RegistryError (a ValueError) lists the registered names
        spec_cls = entry.spec
        if spec_cls is None or spec_cls is cls:
            return handler(data)
        return spec_cls.model_validate(data)
