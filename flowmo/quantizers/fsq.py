"""Finite scalar quantization (FSQ; Mentzer et al., 2023)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..devices import ValueChecks
from ..registry import QUANTIZERS
from ..spec import FSQSpec
from .base import Quantizer, QuantizerOutput

__all__ = ["FSQ"]


@QUANTIZERS.register("fsq", spec=FSQSpec)
class FSQ(Quantizer):
    """Each channel i is bounded to L_i levels and rounded (straight-through gradients).

    Bounding: tanh(z + shift) * (L - 1)(1 + 1e-3)/2 - offset, with offset 1/2 for even L (so
    that rounding gives exactly L integers, -L/2 .. L/2 - 1) and 0 for odd L (-(L-1)/2 .. (L-1)/2).
    Values are normalised by L // 2 into [-1, 1]. Token index: mixed radix over channels,
    channel 0 least significant. No loss terms.

    ``forward_idempotent`` is False: the tanh bound is not the identity on the codewords, so
    forward(values) may land on a neighbouring codeword.
    """

    forward_idempotent = False

    def __init__(self, spec: FSQSpec, *, channels: int):
        super().__init__()
        spec.check_channels(channels)
        self.spec = spec
        self.channels = channels
        self.levels = tuple(spec.levels)
        self.codebook_size = math.prod(self.levels)
        levels = torch.tensor(self.levels, dtype=torch.float64)
        half_l = (levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(levels % 2 == 0, 0.5, 0.0)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64), 0)
        self.register_buffer("_half_l", half_l.float(), persistent=False)
        self.register_buffer("_offset_buf", offset.float(), persistent=False)
        self.register_buffer("_shift", torch.atanh(offset / half_l).float(), persistent=False)
        self.register_buffer("_half_width", (levels // 2).float(), persistent=False)
        self.register_buffer("_levels", levels.long(), persistent=False)
        self.register_buffer("_basis", basis, persistent=False)

    def extra_repr(self) -> str:
        return f"levels={list(self.levels)}"

    def bound(self, z: Tensor) -> Tensor:
        zf = z.float()
        return torch.tanh(zf + self._shift) * self._half_l - self._offset_buf

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        b = self.bound(z)
        # clamp: for large L the (1 + 1e-3) margin lets round() leave the L levels
        r = torch.round(b).clamp(-(self._levels // 2).float(), ((self._levels - 1) // 2).float())
        rounded = b + (r - b).detach()
        codes = rounded / self._half_width
        values = codes.to(z.dtype)
        indices = self._indices(codes.detach())  # from the float32 codes: a bfloat16 cast may round them
        return QuantizerOutput(values, indices)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., C) normalised codes -> (...) int64 indices (codes are snapped to the nearest level)."""
        self._check_code(codes, "codes", values=True)
        return self._indices(codes)

    def _indices(self, codes: Tensor) -> Tensor:
        level = torch.round(codes.float() * self._half_width + self._half_width).long()
        level = torch.minimum(level.clamp_min(0), self._levels - 1)
        return (level * self._basis).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) int64 indices -> (..., C) normalised codes (float32)."""
        self._check_indices(indices)
        return self._codes(indices)

    def indices_to_codes_deferred(self, indices: Tensor, checks: ValueChecks, name: str = "indices") -> Tensor:
        """:meth:`indices_to_codes` with the range check added to ``checks`` (the codes are
        integer arithmetic, defined for any integer until the check is read)."""
        self._check_indices(indices, name, checks=checks)
        return self._codes(indices)

    def _codes(self, indices: Tensor) -> Tensor:
        level = (indices.long()[..., None] // self._basis) % self._levels
        return (level.float() - self._half_width) / self._half_width

