"""Numerics shared by the quantizers: the clamp inside their losses and a projection onto the
unit sphere that is finite for every finite input (BSQ's codes, VQ's ``l2_normalize``)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["LOSS_CLAMP", "unit_sphere"]

LOSS_CLAMP = 1e4
"""Inside a quantizer's losses (and VQ's nearest-code search) the input is clamped to
[-LOSS_CLAMP, LOSS_CLAMP]; the codewords and indices of a sign quantizer use the sign only and
are not affected. A trained encoder's outputs are O(1), so the math is unchanged where it
matters; a diverging encoder (|z| up to the float32 maximum) gets large, finite losses instead of
inf (a squared error overflows float32 from |z| ~ 2e19) or NaN (LFQ's entropy logits overflow to
inf - inf)."""


def unit_sphere(x: Tensor) -> Tensor:
    """Each vector along the last dimension divided by its euclidean norm, in float32.

    Args:
        x: (..., C) floating tensor, finite, any magnitude (up to the float32 maximum).

    Returns:
        (..., C) float32: x / ||x|| for every vector that is not all zero (norm 1 to float32
        rounding), 0 for an all-zero vector (with the identity as its gradient there).

    The vector is first divided by its largest magnitude (a constant for the gradient: x / ||x||
    does not change when x is scaled), so the squares neither overflow (|x| ~ 1e19 and beyond)
    nor underflow (|x| ~ 1e-20); the scaled norm is then >= 1 for any non-zero vector, and the
    floor max(norm, 1) only acts on an all-zero vector, whose result and gradient stay finite
    (F.normalize's eps floor gives a gradient of 1/eps there). Elsewhere the gradient is
    x / ||x||'s, of magnitude 1 / ||x||: it overflows float32 only for ||x|| below ~1e-38.
    """
    xf = x.float()
    peak = xf.detach().abs().amax(-1, keepdim=True)
    w = xf / torch.where(peak > 0, peak, torch.ones_like(peak))
    return w / torch.linalg.vector_norm(w, dim=-1, keepdim=True).clamp_min(1.0)
