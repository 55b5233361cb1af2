"""The released FlowMo checkpoints: reading, spec inference, key mapping and conversion."""

from .release import (
    NotACheckpointError,
    convert_release_checkpoint,
    infer_release_spec,
    load_release_checkpoint,
    load_release_state_dict,
    map_release_state_dict,
    spec_from_reference_meta,
    spec_from_release_config,
)

__all__ = [
    "NotACheckpointError", "convert_release_checkpoint", "infer_release_spec", "load_release_checkpoint",
    "load_release_state_dict", "map_release_state_dict", "spec_from_reference_meta", "spec_from_release_config",
]
