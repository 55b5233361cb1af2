"""Separable image filters with scipy.ndimage's conventions, in torch (any device, differentiable):
shared by the SSIM of :mod:`flowmo.metrics` and the differentiable SSIM distance of
:mod:`flowmo.nets.distances`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_kernel_1d", "symmetric_indices", "gaussian_filter_reflect"]


def gaussian_kernel_1d(sigma: float, truncate: float, device=None, dtype=torch.float64) -> torch.Tensor:
    """The normalised 1-D Gaussian ``exp(-x^2 / (2 sigma^2))`` for x in ``-r .. r``, with
    ``r = int(truncate * sigma + 0.5)`` (scipy.ndimage.gaussian_filter's radius rule): shape
    (2 r + 1,), summing to 1, in ``dtype`` on ``device``."""
    radius = int(truncate * sigma + 0.5)  # same radius rule as scipy.ndimage
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def symmetric_indices(n: int, pad: int, device=None) -> torch.Tensor:
    """Indices (int64, n + 2 pad) for scipy.ndimage 'reflect' padding (``d c b a | a b c d | d c b a``).

    The edge sample is repeated (numpy's 'symmetric').  Works for any ``pad``,
    including pads larger than ``n``.
    """
    i = torch.arange(-pad, n + pad, device=device)
    j = torch.remainder(i, 2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def gaussian_filter_reflect(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filter of ``maps`` (N, 1, H, W) by the odd-length 1-D ``kernel`` along
    both axes, scipy 'reflect' boundary (a Gaussian kernel: scipy's gaussian_filter; a
    constant one: scipy's uniform_filter). Returns (N, 1, H, W) in ``maps``' dtype."""
    pad = (kernel.numel() - 1) // 2
    _, _, h, w = maps.shape
    rows = symmetric_indices(h, pad, maps.device)
    cols = symmetric_indices(w, pad, maps.device)
    padded = maps.index_select(2, rows).index_select(3, cols)
    k = kernel.to(dtype=maps.dtype)
    out = F.conv2d(padded, k.view(1, 1, -1, 1))  # along H
    out = F.conv2d(out, k.view(1, 1, 1, -1))  # along W
    return out
