"""Argument checks shared by the metrics of :mod:`flowmo.metrics`: the protocol name, image
tensors and their value range (the module docstring of :mod:`flowmo.metrics` states the rule),
the device metrics are computed on, and real-valued array-likes as float64 arrays."""

from __future__ import annotations

from typing import Any, Optional, Tuple, Union

import numpy as np
import torch

__all__ = ["PROTOCOLS", "ORIGINALS_TOL", "ArrayLike"]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: The metric protocols: ``"standard"`` (default) and ``"release"`` (see :mod:`flowmo.metrics`).
PROTOCOLS = ("standard", "release")
#: How far ``originals`` may lie outside [-1, 1] (round-off of a conversion); beyond: ValueError.
ORIGINALS_TOL = 1e-3
_U8_HINT = "they look like images in [0, 255]: convert them with x / 127.5 - 1"


def _check_protocol(protocol) -> str:
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _given(x: Any) -> str:
    """What ``x`` is, for a message: a tensor's dtype and shape, else its type."""
    return f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__


def _check_images(images, name: str, four_d: bool = True) -> torch.Tensor:
    """``images``: a finite floating-point tensor, (B, C, H, W) with C, H, W > 0 when ``four_d``;
    ValueError naming ``name`` otherwise."""
    if not (isinstance(images, torch.Tensor) and images.is_floating_point()
            and (not four_d or images.dim() == 4 and 0 not in images.shape[1:])):
        shape = " (B, C, H, W)" if four_d else ""
        raise ValueError(f"{name} must be a floating-point tensor{shape} in [-1, 1], got {_given(images)}")
    if images.is_meta or not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf) or is a meta tensor (no values)")
    return images


def _looks_like_u8(vmin: float, vmax: float) -> bool:
    """The range of [0, 255] data: nothing negative, something above 2 (beyond any [-1, 1] image)."""
    return vmin >= -ORIGINALS_TOL and vmax > 2.0


def _check_pair(originals, reconstructions) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both as :func:`_check_images`, of one shape and device; originals in [-1, 1] within
    ORIGINALS_TOL, reconstructions anywhere but on the [0, 255] scale (they are clamped).
    ValueError naming the argument otherwise (with a hint for [0, 255] data)."""
    o = _check_images(originals, "originals")
    r = _check_images(reconstructions, "reconstructions")
    if (o.shape, o.device) != (r.shape, r.device):
        raise ValueError(f"reconstructions must have the shape and device of originals, got {tuple(r.shape)} on {r.device}")
    if o.numel() == 0:
        return o, r
    (olo, ohi), (rlo, rhi) = ((float(x.min()), float(x.max())) for x in (o, r))
    if olo < -1.0 - ORIGINALS_TOL or ohi > 1.0 + ORIGINALS_TOL:
        hint = f"; {_U8_HINT}" if _looks_like_u8(olo, ohi) else ""
        raise ValueError(f"originals must be images in [-1, 1] (within {ORIGINALS_TOL:g}), got [{olo:.6g}, {ohi:.6g}]{hint}")
    if _looks_like_u8(rlo, rhi):
        raise ValueError(f"reconstructions must be images in [-1, 1], got values in [{rlo:.6g}, {rhi:.6g}]; {_U8_HINT}")
    return o, r


def _compute_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else we know of does.
    return torch.device("cpu") if device.type == "mps" else device


def _as_float64_array(x, name: str, *, error: type = ValueError, sequences: bool = True) -> np.ndarray:
    """``x`` (a numpy array or torch tensor of real numbers; with ``sequences`` also any array-like)
    as a float64 numpy array. Raises ``error`` naming ``name`` for complex, boolean, string or
    object values and (without ``sequences``) for anything but an array or tensor; ValueError
    for a meta tensor or a ragged sequence."""
    if isinstance(x, torch.Tensor):
        if x.is_meta:
            raise ValueError(f"{name} is a meta tensor (it has no values)")
        x = x.detach().cpu()
        x = x.numpy() if x.is_complex() or x.dtype == torch.bool else x.double().numpy()
    elif not sequences and not isinstance(x, np.ndarray):
        raise error(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise error(f"{name} must be numeric array-like of real numbers, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_int(value, name: str, low: int = 1, high: Optional[int] = None, *, allow_none: bool = False) -> Optional[int]:
    """``value`` as an int in [low, high) (numpy ints too; bools refused), or None where allowed;
    ValueError naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low
            or high is not None and value >= high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high})"
        raise ValueError(f"{name} must be {'None or ' if allow_none else ''}an int {bounds}, got {value!r}")
    return int(value)


def _check_finite(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def _feature_array(x, name: str, *, min_rows: int = 0, error: type = ValueError, sequences: bool = True) -> np.ndarray:
    """``x`` as a finite float64 (N, D) array with N >= ``min_rows`` and D >= 1 (conversion as
    :func:`_as_float64_array`); ValueError naming ``name`` otherwise."""
    arr = _as_float64_array(x, name, error=error, sequences=sequences)
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be 2-D (N, D) with D >= 1, got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    _check_finite(arr, name)
    return arr
