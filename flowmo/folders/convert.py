"""The released checkpoints as FlowMo models and model folders: :func:`load_release_checkpoint`,
:func:`convert_release_checkpoint` (``flowmo convert``). Reading the files, mapping their keys and
inferring their spec is :mod:`flowmo.folders.release`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from flowmo.folders.release import PathLike, infer_release_spec, load_release_state_dict
from flowmo.model import FlowMo
from flowmo.spec import FlowMoSpec
from flowmo.state_dicts import check_finite, check_state_dict

__all__ = ["load_release_checkpoint", "convert_release_checkpoint"]


def load_release_checkpoint(
    path: PathLike,
    *,
    weights: str = "ema",
    spec: Optional[FlowMoSpec] = None,
    code_length: int = 256,
    image_size: int = 256,
    codebook_size_for_entropy: Optional[int] = None,
) -> FlowMo:
    """A :class:`FlowMo` with a released checkpoint's EMA (default) or raw weights, in eval mode."""
    state = load_release_state_dict(path, weights=weights)
    if spec is None:
        spec = infer_release_spec(state, code_length=code_length, image_size=image_size,
                                  codebook_size_for_entropy=codebook_size_for_entropy)
    model = FlowMo(spec)
    check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, str(path))
    check_finite(state, str(path))
    model.load_state_dict(state, strict=True)
    return model.eval()


def convert_release_checkpoint(path: PathLike, out_dir: PathLike, **kw: Any) -> Path:
    """Write a released checkpoint as a ``from_pretrained`` folder (config.json + model.safetensors
    + a model card naming the weights: ``kw["weights"]``, default ``"ema"``)."""
    weights = kw.get("weights", "ema")
    words = {"ema": "ema (the released checkpoint's EMA weights)",
             "raw": "raw (the released checkpoint's trained weights, not averaged)"}.get(weights, weights)
    return load_release_checkpoint(path, **kw).save_pretrained(out_dir, card={"training": {"weights": words}})
