"""flowmo: FlowMo image tokenizers (Sargent et al., "Flow to the Mode", ICCV 2025).

The public surface: specs and presets, ``build``, the model, and the component registries.
"""

from .registry import (
    BACKBONES,
    FLOW_LOSSES,
    GENERATORS,
    PERCEPTUAL_DISTANCES,
    POSTTRAIN_OBJECTIVES,
    QUANTIZERS,
    REGISTRIES,
    SOLVERS,
    TIME_GRIDS,
    TIME_SAMPLERS,
    Registry,
    RegistryError,
    UnknownComponentError,
)
from .spec import (
    BackboneSpec,
    FatLogitNormalTimeSpec,
    FlowLossSpec,
    FlowMoSpec,
    NestedDropoutSpec,
    FSQSpec,
    GeneratorSpec,
    GuidanceSpec,
    LFQSpec,
    LogitNormalTimeSpec,
    LossTerm,
    MMDiTSpec,
    DistillationSpec,
    ModeSeekingSpec,
    PerceptualSpec,
    PosttrainSpec,
    KnotsGridSpec,
    PowGridSpec,
    QuantizerSpec,
    RectifiedFlowLossSpec,
    SamplerSpec,
    ShiftedGridSpec,
    SolverSpec,
    TimeGridSpec,
    TimeSamplerSpec,
    UniformTimeSpec,
)

# importing the component packages registers the built-in components
from . import blocks, losses, quantizers, samplers  # noqa: E402,F401  isort: skip
from . import nets  # noqa: E402,F401  registers the network distances (weights load only when built)
from . import generators  # noqa: E402,F401  registers the token generators
from .model import FlowMo, LossOutput, build  # noqa: E402
from .state_dicts import StateDictMismatchError  # noqa: E402
from .presets import PRESETS, flowmo_hi, flowmo_lo, flowmo_medium, flowmo_small, flowmo_tiny, get_preset, release_spec  # noqa: E402
from .quantizers import FSQ, LFQ, Quantizer, QuantizerOutput  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "FlowMo", "FlowMoSpec", "build", "LossOutput", "StateDictMismatchError",
    "PRESETS", "get_preset", "flowmo_lo", "flowmo_hi", "flowmo_tiny", "flowmo_small", "flowmo_medium", "release_spec",
    "Registry", "RegistryError", "UnknownComponentError", "REGISTRIES", "BACKBONES", "QUANTIZERS", "TIME_SAMPLERS", "FLOW_LOSSES",
    "TIME_GRIDS", "SOLVERS", "POSTTRAIN_OBJECTIVES", "PERCEPTUAL_DISTANCES", "GENERATORS",
    "Quantizer", "QuantizerOutput", "LFQ", "FSQ",
    "BackboneSpec", "MMDiTSpec", "QuantizerSpec", "LFQSpec", "FSQSpec", "TimeSamplerSpec", "UniformTimeSpec",
    "LogitNormalTimeSpec", "FatLogitNormalTimeSpec", "PerceptualSpec", "FlowLossSpec", "RectifiedFlowLossSpec",
    "TimeGridSpec", "PowGridSpec", "ShiftedGridSpec", "KnotsGridSpec", "SolverSpec", "GuidanceSpec", "SamplerSpec",
    "PosttrainSpec", "ModeSeekingSpec", "DistillationSpec", "GeneratorSpec", "LossTerm", "NestedDropoutSpec",
]
