"""Typed specs: one pydantic model per component kind, composed into :class:`FlowMoSpec`.

A component spec is tagged by its ``name``, the name its factory is registered under.
Validating a kind's base class (e.g. ``QuantizerSpec.model_validate({"name": "fsq", ...})``)
dispatches on that name to the spec class the factory was registered with, so a component
registered from user code is usable by name in a FlowMoSpec, and JSON round-trips keep
every field of every component.

Specs are data: a FlowMoSpec fully determines the model's architecture, its training
losses and its default sampler, and round-trips through JSON.

The package: :mod:`~flowmo.registry.scalars` (strict scalar field types, field ranges),
:mod:`~flowmo.registry.spec_base` (SpecModel, ComponentSpec, LossTerm), :mod:`~flowmo.spec.components`
(the component kinds' specs), :mod:`~flowmo.spec.sampling` (grids, solvers, guidance, the
sampler), :mod:`~flowmo.spec.model` (FlowMoSpec) and :mod:`~flowmo.registry.spec_base`
(``replace`` and the merge rules).
"""

from flowmo.registry.spec_base import ComponentSpec, LossTerm, SpecModel
from .components import (
    BackboneSpec,
    FatLogitNormalTimeSpec,
    FlowLossSpec,
    FSQSpec,
    GeneratorSpec,
    LFQSpec,
    LogitNormalTimeSpec,
    MMDiTSpec,
    DistillationSpec,
    ModeSeekingSpec,
    PerceptualSpec,
    PosttrainSpec,
    QuantizerSpec,
    RectifiedFlowLossSpec,
    TimeSamplerSpec,
    UniformTimeSpec,
    no_tokens_error,
)
from flowmo.registry.spec_base import merge_data, replace_spec
from .model import FlowMoSpec, NestedDropoutSpec
from .sampling import GuidanceSpec, KnotsGridSpec, PowGridSpec, SamplerSpec, ShiftedGridSpec, SolverSpec, TimeGridSpec, sigma_to_t
from flowmo.registry.scalars import (
    MAX_ATTN_SCALE,
    MAX_CHAIN_STEPS,
    MAX_DEPTH,
    MAX_IMAGE_SIZE,
    MAX_MLP_RATIO,
    MAX_SAMPLER_STEPS,
    MAX_TIME_FACTOR,
    MAX_TOKENS,
    MAX_WIDTH,
    POW_P_RANGE,
    ROPE_THETA_RANGE,
    SHIFT_RANGE,
    SpecBool,
    SpecFloat,
    SpecInt,
)

__all__ = [
    "ComponentSpec",
    "BackboneSpec",
    "MMDiTSpec",
    "QuantizerSpec",
    "LFQSpec",
    "FSQSpec",
    "TimeSamplerSpec",
    "UniformTimeSpec",
    "LogitNormalTimeSpec",
    "FatLogitNormalTimeSpec",
    "PerceptualSpec",
    "FlowLossSpec",
    "RectifiedFlowLossSpec",
    "TimeGridSpec",
    "PowGridSpec",
    "KnotsGridSpec",
    "ShiftedGridSpec",
    "SolverSpec",
    "GuidanceSpec",
    "SamplerSpec",
    "PosttrainSpec",
    "ModeSeekingSpec",
    "DistillationSpec",
    "GeneratorSpec",
    "FlowMoSpec",
    "NestedDropoutSpec",
    "LossTerm",
    "SpecModel",
    "sigma_to_t",
    "replace_spec",
    "merge_data",
    "no_tokens_error",
]

# importable from here as before the split, though not in ``__all__`` (``import *`` is unchanged)
_REEXPORTED = (SpecInt, SpecFloat, SpecBool, MAX_IMAGE_SIZE, MAX_TOKENS, MAX_WIDTH, MAX_DEPTH,
               MAX_MLP_RATIO, MAX_SAMPLER_STEPS, MAX_CHAIN_STEPS, MAX_TIME_FACTOR, ROPE_THETA_RANGE, MAX_ATTN_SCALE,
               POW_P_RANGE, SHIFT_RANGE)
