"""Lookup-free quantization (LFQ) as in the FlowMo release."""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import QUANTIZERS
from ..spec import LFQSpec
from .base import QuantizerOutput
from .binary import BinaryQuantizer
from .common import LOSS_CLAMP

__all__ = ["LFQ"]


@QUANTIZERS.register("lfq", spec=LFQSpec)
class LFQ(BinaryQuantizer):
    """Sign quantization of each channel to {-1, +1} (0 maps to -1), straight-through gradients.

    Token index and entropy groups: :class:`~flowmo.quantizers.binary.BinaryQuantizer`'s (bit j
    = [channel j > 0], least significant first; bit j of group h is channel j * (C/G) + h).

    The losses (in train and eval mode alike: a loss term never depends on the module's mode) are
    ``entropy`` (weight * (per-sample entropy - codebook entropy),
    over softmax(2 <x, c> / temperature) against all 2^G codewords of each group) and
    ``commitment`` (weight * mean((x - q)^2)). Memory of the entropy term is
    tokens x groups x 2^G; it never materialises 2^C. Both are finite for any finite input:
    x is clamped to [-LOSS_CLAMP, LOSS_CLAMP] = [-1e4, 1e4] inside the losses (no gradient
    from them beyond; see :data:`flowmo.quantizers.common.LOSS_CLAMP`), and a batch without
    tokens gives losses of 0 (a mean over nothing would be NaN).

    Capabilities: ``has_groups`` (the entropy groups above); ``bits_per_token`` = C.
    """

    def __init__(self, spec: LFQSpec, *, channels: int):
        spec.check_channels(channels)
        super().__init__(channels=channels, group_bits=spec.group_bits, scale=1.0)
        self.spec = spec

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        q = self._sign(z)
        values, indices = self._straight_through(q, z), self._indices(q)
        losses: dict[str, Tensor] = {}
        stats: dict[str, Tensor] = {}
        if z.numel() == 0:  # no tokens: nothing to pull towards the codewords
            zero = z.float().sum()  # 0, connected to z's graph
            losses = {"entropy": zero * self.spec.entropy_weight, "commitment": zero * self.spec.commit_weight}
            stats = {"per_sample_entropy": zero.detach(), "codebook_entropy": zero.detach(), "commitment": zero.detach()}
        else:
            zc = z.float().clamp(-LOSS_CLAMP, LOSS_CLAMP)  # see LOSS_CLAMP: finite losses for any finite z
            per_sample, codebook = self._entropy_terms(zc, self.spec.temperature)
            commit = (zc - q.detach().float()).pow(2).mean()
            losses["entropy"] = self.spec.entropy_weight * (per_sample - codebook)
            losses["commitment"] = self.spec.commit_weight * commit
            stats = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach(),
                     "commitment": commit.detach()}
        return QuantizerOutput(values, indices, losses, stats)
