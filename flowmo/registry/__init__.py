"""The component registries (moved into this package; :mod:`flowmo.registry.core` holds them)."""

from .core import (
    BACKBONES,
    FLOW_LOSSES,
    MAX_NAME_LENGTH,
    PERCEPTUAL_DISTANCES,
    POSTTRAIN_OBJECTIVES,
    QUANTIZERS,
    REGISTRIES,
    SOLVERS,
    TIME_GRIDS,
    TIME_SAMPLERS,
    Entry,
    FrozenDict,
    Ref,
    Registry,
    RegistryError,
    UnknownComponentError,
    with_article,
)

__all__ = ["Registry", "RegistryError", "UnknownComponentError", "Entry", "REGISTRIES"]

# importable from here as before the move, though not in ``__all__`` (``import *`` is unchanged)
_REEXPORTED = (MAX_NAME_LENGTH, Ref, FrozenDict, with_article, BACKBONES, FLOW_LOSSES, PERCEPTUAL_DISTANCES,
               POSTTRAIN_OBJECTIVES, QUANTIZERS, SOLVERS, TIME_GRIDS, TIME_SAMPLERS)
