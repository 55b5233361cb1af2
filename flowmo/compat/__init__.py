"""The released FlowMo checkpoints: reading, spec inference, key mapping and conversion."""

from .reference import reference_state_dict, reference_tensor, state_dict_checksum
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
    "reference_state_dict", "reference_tensor", "state_dict_checksum",
    "NotACheckpointError", "convert_release_checkpoint", "infer_release_spec", "load_release_checkpoint",
    "load_release_state_dict", "map_release_state_dict", "spec_from_reference_meta", "spec_from_release_config",
]
