"""The bases of every spec: :class:`SpecModel` (frozen, editable with ``replace``),
:class:`ComponentSpec` (tagged by ``name``, dispatching on it for a kind's base class), and
:class:`LossTerm`, one term of a training loss as a spec declares it."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, Optional

from pydantic import BaseModel, ConfigDict, model_validator

from ..registry import Registry


class LossTerm(NamedTuple):
    """One term of a training loss, as declared by a spec (see :meth:`FlowMoSpec.loss_terms`).

    ``name`` is the key of the term in :class:`flowmo.model.LossOutput` ``.terms``;
    ``weight`` is the factor already applied to that term (the total is the plain sum of
    the terms); ``what`` says what the unweighted term is, in words.
    """

    name: str
    weight: float
    what: str


class SpecModel(BaseModel):
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
