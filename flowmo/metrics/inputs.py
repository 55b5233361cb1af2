"""Argument checks shared by the metrics of :mod:`flowmo.metrics`: the protocol name, image
tensors and their value range (the module docstring of :mod:`flowmo.metrics` states the rule),
the device metrics are computed on, and real-valued array-likes as float64 arrays."""

from __future__ import annotations

from typing import Tuple, Union

import numpy as np
import torch

__all__ = ["PROTOCOLS", "ORIGINALS_TOL", "ArrayLike"]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: The metric protocols: ``"standard"`` (default) and ``"release"`` (see :mod:`flowmo.metrics`).
PROTOCOLS = ("standard", "release")
#: How far ``originals`` may lie outside [-1, 1] (round-off of a conversion); beyond: ValueError.
ORIGINALS_TOL = 1e-3


def _check_protocol(protocol) -> str:
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
    if images.shape[1] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has an empty channel/spatial dimension: shape {tuple(images.shape)}")
    if images.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it has no values)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return images


def _check_pair(originals, reconstructions) -> Tuple[torch.Tensor, torch.Tensor]:
    originals = _check_images(originals, "originals")
    reconstructions = _check_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(
            "reconstructions must have the same shape as originals: "
            f"got originals {tuple(originals.shape)}, reconstructions {tuple(reconstructions.shape)}"
        )
    if originals.device != reconstructions.device:
        raise ValueError(
            f"reconstructions must be on the device of originals: got originals on {originals.device}, "
            f"reconstructions on {reconstructions.device}"
        )
    _check_originals_range(originals)
    _check_reconstructions_scale(reconstructions)
    return originals, reconstructions


_U8_HINT = "they look like images in [0, 255]: convert them with x / 127.5 - 1"


def _looks_like_u8(vmin: float, vmax: float) -> bool:
    """The range of [0, 255] data: nothing negative, something above 2 (beyond any [-1, 1] image)."""
    return vmin >= -ORIGINALS_TOL and vmax > 2.0


def _check_originals_range(originals: torch.Tensor) -> None:
    """ValueError naming ``originals`` unless they lie in [-1, 1] within ORIGINALS_TOL."""
    if originals.numel() == 0:
        return
    vmin, vmax = float(originals.min()), float(originals.max())
    if vmin >= -1.0 - ORIGINALS_TOL and vmax <= 1.0 + ORIGINALS_TOL:
        return
    hint = f"; {_U8_HINT}" if _looks_like_u8(vmin, vmax) else ""
    raise ValueError(f"originals must be images in [-1, 1] (within {ORIGINALS_TOL:g}): got values in "
                     f"[{vmin:.6g}, {vmax:.6g}]{hint}")


def _check_reconstructions_scale(reconstructions: torch.Tensor) -> None:
    """ValueError naming ``reconstructions`` if their range shows [0, 255] data (else they are clamped)."""
    if reconstructions.numel() == 0:
        return
    vmin, vmax = float(reconstructions.min()), float(reconstructions.max())
    if _looks_like_u8(vmin, vmax):
        raise ValueError(f"reconstructions must be images in [-1, 1] (values outside are clamped to it): got "
                         f"values in [{vmin:.6g}, {vmax:.6g}]; {_U8_HINT}")


def _compute_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else we know of does.
    return torch.device("cpu") if device.type == "mps" else device


def _check_float_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def _as_float64_array(x, name: str) -> np.ndarray:
    """``x`` (array-like of real numbers) as a float64 numpy array; ``ValueError`` naming
    ``name`` for anything else: complex, boolean or string values, objects, meta tensors."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no values)")
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {x.dtype}")
        x = x.detach().to("cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    if arr.dtype.kind in "biuf":
        if arr.dtype.kind == "b":
            raise ValueError(f"{name} must hold real numbers, got booleans")
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must hold real numbers, got complex values (dtype {arr.dtype}); "
                         "take the real part or the magnitude yourself if that is what you mean")
    if arr.dtype.kind == "O":
        # mixed Python numbers, tensors or ragged nesting: real numbers only
        flat = arr.ravel().tolist() if arr.ndim else [arr.item()]
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be numeric array-like of real numbers, got an element of type "
                                 f"{type(v).__name__}")
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    raise ValueError(f"{name} must be numeric array-like of real numbers, got dtype {arr.dtype}")
