"""Image grids as PNG: rows of images (e.g. originals over reconstructions)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .draws import _check_int
from .files import atomic_write

__all__ = ["to_uint8_hwc", "save_image_rows"]


def to_uint8_hwc(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def save_image_rows(rows: Sequence[Tensor], path: Path, pad: int = 2, scale: int = 1) -> Path:
    """One row per tensor (all (B, 3, H, W) with the same H, W), written atomically as a PNG.

    ``rows``: a non-empty sequence of finite floating-point ``(B, 3, H, W)`` tensors in [-1, 1]
    (values outside are clamped), B >= 1 (rows may differ in B), all of one H and W. ``path``:
    the PNG to write (always PNG, whatever its suffix). ``pad``: white pixels between images,
    an int >= 0. ``scale``: an int >= 1; every image is enlarged ``scale`` times with nearest
    neighbour (each pixel becomes a ``scale x scale`` block) so that small images can be seen.

    Raises:
        ValueError: any of the above does not hold (naming the argument and the row).
    """
    scale = _check_int(scale, "scale", 1)
    pad = _check_int(pad, "pad", 0)
    if isinstance(rows, Tensor) or not isinstance(rows, Sequence) or len(rows) == 0:
        raise ValueError("rows must be a non-empty list of (B, 3, H, W) tensors")
    for i, r in enumerate(rows):
        if not isinstance(r, Tensor) or r.ndim != 4 or r.shape[1] != 3 or r.shape[0] == 0 or not r.is_floating_point():
            got = f"{r.dtype} {tuple(r.shape)}" if isinstance(r, Tensor) else type(r).__name__
            raise ValueError(f"rows[{i}] must be a (B, 3, H, W) tensor, B >= 1, floating point, got {got}")
        if r.shape[-2:] != rows[0].shape[-2:]:
            raise ValueError(f"rows[{i}] has images of {tuple(r.shape[-2:])}, rows[0] of {tuple(rows[0].shape[-2:])}")
        if not bool(torch.isfinite(r).all()):
            raise ValueError(f"rows[{i}] holds NaN or Inf values")
    arrays = [to_uint8_hwc(r) for r in rows]
    if scale > 1:
        arrays = [a.repeat(scale, axis=1).repeat(scale, axis=2) for a in arrays]
    b = max(a.shape[0] for a in arrays)
    h, w = arrays[0].shape[1:3]
    grid = np.full((len(arrays) * (h + pad) + pad, b * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for i, a in enumerate(arrays):
        for j in range(a.shape[0]):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = a[j]
    atomic_write(path, lambda tmp: Image.fromarray(grid).save(tmp, format="PNG"), suffix=".png")
    return Path(path)
