"""Binary spherical quantization (BSQ; Zhao, Xiong & Krähenbühl, "Image and Video Tokenization
with Binary Spherical Quantization", arXiv 2406.07548)."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import Field
from torch import Tensor

from ..registry import QUANTIZERS
from ..spec import LossTerm
from ..spec.components import check_binary_channels
from .base import QuantizerOutput
from .binary import BinaryQuantizer
from .common import unit_sphere

__all__ = ["BSQ"]


def _check_sphere_channels(channels: int, quantizer: str) -> None:
    """ValueError for one channel: its unit sphere is {-1, 1}, z / |z| is z's sign, and the
    encoder would get no gradient through it."""
    if channels < 2:
        raise ValueError(f"code_channels ({channels}) must be >= 2 for {quantizer} on the unit sphere: one channel "
                         "normalised is its sign, which passes no gradient to the encoder")


@QUANTIZERS.register("bsq")
class BSQ(BinaryQuantizer):
    """Each token projected onto the unit sphere, then quantized by sign to the nearest corner of
    the hypercube scaled onto the sphere (BSQ-ViT, Sec. 3: u = z / ||z||, q = sign(u) / sqrt(C)).

    Codewords: {-1/sqrt(C), +1/sqrt(C)}^C, so ||q|| = 1 (to float32 rounding); 0 maps to the
    negative value, as in LFQ. Token index, entropy groups and group indices are exactly LFQ's
    (:class:`~flowmo.quantizers.binary.BinaryQuantizer`: bit j = [z_j > 0], least significant
    first; bit j of group h is channel j * (C/G) + h), so ``has_groups``,
    ``codes_to_group_indices`` and ``tokenize(groups=True)`` work as for LFQ. ``values`` are q in
    z's dtype with the straight-through gradient of u (q + u - sg(u)): the gradient flows through
    the projection, as in the paper.

    Losses (in train and eval mode alike), over the tokens' projections u:

    - ``entropy``: entropy_weight * (H_sample - gamma * H_codebook), the paper's entropy
      penalty (per-sample entropy down, codebook entropy up). The soft assignment is the paper's,
      over the codewords on the sphere: p(c | u) = softmax_c(-inv_temperature * ||u - c||^2) =
      softmax_c(2 inv_temperature <u, c>) (the codewords share one norm). It factorises over the
      bits (bit d is +1 with probability sigmoid(4 inv_temperature u_d / sqrt(C))), and, as in
      the paper's release and in LFQ, its entropies are computed per entropy group of
      ``group_bits`` bits (:func:`~flowmo.quantizers.binary.lfq_entropy_terms` on the unit
      codewords, temperature 1 / inv_temperature; H_sample is the mean over tokens and groups of
      each token's entropy, H_codebook the entropy of the batch's mean assignment), in nats.
      Scale: at a codeword u_d = +-1/sqrt(C), so a bit's logit is 4 inv_temperature / C (22 for
      the default 100 and C = 18; LFQ's default temperature 0.1 gives 40 at |z_d| = 1): the
      temperature is relative to codes of norm 1, and LFQ's temperature does not carry over.
    - ``commitment``: commit_weight * mean over tokens of ||u - q||^2 (in [0, 4]).

    Both are finite for any finite z (u is finite and of norm <= 1: :func:`unit_sphere`), and 0 for
    a batch without tokens.

    Args (keyword-only; the spec's fields):
        group_bits: G, bits per entropy group (divides ``channels``); 2^G soft-assignment scores
            per group and token.
        inv_temperature: the soft assignment's inverse temperature (the paper's tau), > 0.
        entropy_weight: the weight of the entropy term (>= 0).
        gamma: the weight of the codebook entropy relative to the per-sample entropy (the
            paper's gamma; its gamma_0 is 1), >= 0.
        commit_weight: the weight of the commitment term (>= 0).
        channels: C (wired in by the model), <= 62.

    Defaults: ``group_bits`` 9 and the weights of FlowMo's LFQ (entropy 0.0025, commitment
    0.000625), gamma 1 as in the paper.
    """

    def __init__(self, *,
                 group_bits: Annotated[int, Field(gt=0, le=20, description="bits per entropy group; divides channels")] = 9,
                 inv_temperature: Annotated[float, Field(gt=0, description="inverse temperature of the soft "
                                                                            "assignment on the unit sphere")] = 100.0,
                 entropy_weight: Annotated[float, Field(ge=0)] = 0.0025,
                 gamma: Annotated[float, Field(ge=0, description="codebook entropy weight relative to the "
                                                                 "per-sample entropy")] = 1.0,
                 commit_weight: Annotated[float, Field(ge=0)] = 0.000625,
                 channels: int):
        check_binary_channels(channels, group_bits, "BSQ")
        _check_sphere_channels(channels, "BSQ")
        super().__init__(channels=channels, group_bits=group_bits, scale=1.0 / math.sqrt(channels))
        self.inv_temperature = inv_temperature
        self.entropy_weight = entropy_weight
        self.gamma = gamma
        self.commit_weight = commit_weight

    @classmethod
    def loss_terms(cls, spec: Any) -> list[LossTerm]:
        return [
            LossTerm("entropy", spec.entropy_weight,
                     f"per-sample entropy - {spec.gamma:g} x codebook entropy of the soft assignment on the unit "
                     "sphere, per entropy group (BSQ's entropy penalty)"),
            LossTerm("commitment", spec.commit_weight, "mean over tokens of ||z / ||z|| - q||^2"),
        ]

    @classmethod
    def check_channels(cls, spec: Any, channels: int) -> None:
        check_binary_channels(channels, spec.group_bits, "BSQ")
        _check_sphere_channels(channels, "BSQ")

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, inv_temperature={self.inv_temperature:g}"

    def _relaxed(self, z: Tensor) -> Tensor:
        return unit_sphere(z)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        q = self._sign(z)
        u = unit_sphere(z)
        values, indices = self._straight_through(q, u), self._indices(q)
        if z.numel() == 0:  # no tokens: nothing to pull towards the codewords
            zero = u.sum()  # 0, connected to z's graph
            losses = {"entropy": zero * self.entropy_weight, "commitment": zero * self.commit_weight}
            stats = {"per_sample_entropy": zero.detach(), "codebook_entropy": zero.detach(), "commitment": zero.detach()}
            return QuantizerOutput(values, indices, losses, stats)
        per_sample, codebook = self._entropy_terms(u, 1.0 / self.inv_temperature)
        commit = (u - self._codewords(z > 0)).pow(2).sum(-1).mean()
        losses = {"entropy": self.entropy_weight * (per_sample - self.gamma * codebook),
                  "commitment": self.commit_weight * commit}
        stats = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach(),
                 "commitment": commit.detach()}
        return QuantizerOutput(values, indices, losses, stats)
