"""Binary codes: the codeword layout LFQ and BSQ share (one bit per channel, the release's token
index and strided entropy groups) and the entropy terms of their soft assignment."""

from __future__ import annotations

import torch
from torch import Tensor

from ..devices import ValueChecks
from .base import Quantizer, QuantizerOutput

__all__ = ["BinaryQuantizer", "lfq_entropy_terms"]


def _bit_weights(n: int, device: torch.device) -> Tensor:
    return torch.pow(2, torch.arange(n, device=device, dtype=torch.int64))


class BinaryQuantizer(Quantizer):
    """A quantizer whose codewords are ``scale * {-1, +1}^C``: channel j's bit is [z_j > 0]
    (0 maps to the negative bit). The base of :class:`~flowmo.quantizers.LFQ` (scale 1) and
    :class:`~flowmo.quantizers.BSQ` (scale 1/sqrt(C): codewords on the unit sphere); they differ
    in their straight-through path and losses (``forward``), not in their codes.

    Token index: bit j = [channel j > 0], least significant first (up to 62 channels).
    Entropy groups: the C channels form C/G groups of G bits, STRIDED: bit j of group h is
    channel j * (C/G) + h. Group indices use the same bit order; their flat order is
    (batch, token, group), group fastest (the release's layout, docs/conventions.md).

    Capabilities: ``has_groups`` (the entropy groups above); ``bits_per_token`` = C.

    Attributes (set by the constructor): ``channels`` (C), ``group_bits`` (G), ``groups`` (C/G),
    ``codebook_size`` (2^C), ``group_codebook_size`` (2^G), ``scale`` (the codewords' magnitude
    per channel) and the non-persistent buffer ``group_codebook`` ((2^G, G) float32 in {-1, +1}:
    codeword k of a group has +1 at bit j where (k >> j) & 1).

    A subclass's constructor calls ``super().__init__(channels=..., group_bits=..., scale=...)``
    after checking that ``group_bits`` divides ``channels`` (<= 62), and implements ``forward``.
    """

    has_groups = True

    def __init__(self, *, channels: int, group_bits: int, scale: float):
        super().__init__()
        self.channels = channels
        self.group_bits = group_bits
        self.groups = channels // group_bits
        self.codebook_size = 2**channels
        self.group_codebook_size = 2**group_bits
        self.scale = float(scale)
        k = torch.arange(self.group_codebook_size)[:, None]
        bits = (k >> torch.arange(group_bits)[None]) & 1
        self.register_buffer("group_codebook", bits.float() * 2 - 1, persistent=False)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, group_bits={self.group_bits}, groups={self.groups}"

    # -- layout helpers
    def to_groups(self, z: Tensor) -> Tensor:
        """(..., C) -> (..., C/G, G): group h, bit j is channel j * (C/G) + h."""
        return z.unflatten(-1, (self.group_bits, self.groups)).transpose(-1, -2)

    def from_groups(self, g: Tensor) -> Tensor:
        """Inverse of :meth:`to_groups`."""
        return g.transpose(-1, -2).flatten(-2)

    def _codewords(self, bits: Tensor) -> Tensor:
        """Bits (bool, any shape) -> +scale / -scale in float32 (the one construction of the
        codewords' values, so that forward's values and indices_to_codes agree bitwise)."""
        return torch.where(bits, self.scale, -self.scale).to(torch.float32)

    def _sign(self, z: Tensor) -> Tensor:
        """The codeword of each token of ``z`` (its signs), in z's dtype."""
        return self._codewords(z > 0).to(z.dtype)

    def _relaxed(self, z: Tensor) -> Tensor:
        """The continuous point whose gradient the values carry (straight through): ``z`` itself
        (LFQ); BSQ's is z projected onto the unit sphere."""
        return z

    @staticmethod
    def _straight_through(q: Tensor, x: Tensor) -> Tensor:
        """``q`` in value, the gradient of ``x`` (x's dtype may differ: cast to q's): exactly q
        (x + (q - x) is not, e.g. for |x| > 256 in bfloat16)."""
        return q + (x - x.detach()).to(q.dtype)

    def _entropy_terms(self, x: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """:func:`lfq_entropy_terms` of ``x`` (..., C) over each group's codewords at this
        quantizer's scale: softmax(2 <x_g, scale * c> / temperature) over c in {-1, +1}^G, i.e.
        softmax(-||x_g - scale * c||^2 / temperature) (||c|| is the same for every codeword)."""
        return lfq_entropy_terms(self.to_groups(x).reshape(-1, self.group_bits), self.group_codebook * self.scale,
                                 temperature)

    # -- quantization
    def quantize(self, z: Tensor) -> QuantizerOutput:
        """The codewords and indices of ``forward``, without its loss terms (the entropy scores
        tokens x groups x 2^G codewords), with forward's straight-through gradient."""
        self._check_code(z)
        q = self._sign(z)
        return QuantizerOutput(self._straight_through(q, self._relaxed(z)), self._indices(q))

    # -- codes <-> indices
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., C) codes (their signs are read) -> (...) int64 token indices."""
        self._check_code(codes, "codes", values=True)
        return self._indices(codes)

    def _indices(self, codes: Tensor) -> Tensor:
        return ((codes > 0).long() * _bit_weights(self.channels, codes.device)).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) int64 token indices -> (..., C) codewords in {-scale, +scale} (float32)."""
        self._check_indices(indices)
        return self._codes(indices)

    def indices_to_codes_deferred(self, indices: Tensor, checks: ValueChecks, name: str = "indices") -> Tensor:
        """:meth:`indices_to_codes` with the range check added to ``checks`` (the codes are bit
        arithmetic, defined for any integer until the check is read)."""
        self._check_indices(indices, name, checks=checks)
        return self._codes(indices)

    def _codes(self, indices: Tensor) -> Tensor:
        bits = (indices.long()[..., None] >> torch.arange(self.channels, device=indices.device)) & 1
        return self._codewords(bits.bool())

    def codes_to_group_indices(self, codes: Tensor) -> Tensor:
        """(..., C) codes -> (..., C/G) int64 indices per entropy group (the release's layout)."""
        self._check_code(codes, "codes", values=True)
        return self._group_indices(codes)

    def codes_to_group_indices_deferred(self, codes: Tensor, checks: ValueChecks, name: str = "codes") -> Tensor:
        """:meth:`codes_to_group_indices` with the finite check added to ``checks``."""
        self._check_code(codes, name, values=True, checks=checks)
        return self._group_indices(codes)

    def _group_indices(self, codes: Tensor) -> Tensor:
        g = self.to_groups(codes > 0).long()
        return (g * _bit_weights(self.group_bits, codes.device)).sum(-1)

    def group_indices_to_codes(self, group_indices: Tensor) -> Tensor:
        """(..., C/G) group indices -> (..., C) codewords in {-scale, +scale} (float32)."""
        if isinstance(group_indices, Tensor) and (group_indices.ndim < 1 or group_indices.shape[-1] != self.groups):
            raise ValueError(f"group_indices must have shape (..., {self.groups}), got {tuple(group_indices.shape)}")
        self._check_indices(group_indices, "group_indices", self.group_codebook_size)
        bits = (group_indices.long()[..., None] >> torch.arange(self.group_bits, device=group_indices.device)) & 1
        return self.from_groups(self._codewords(bits.bool()))


def lfq_entropy_terms(x: Tensor, codebook: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-sample entropy and codebook entropy of the soft assignment softmax(2 <x, c> / temperature).

    x: (N, G) continuous group vectors; codebook: (2^G, G). Returns (mean_n H(p_n), H(mean_n p_n)),
    the latter as -sum pbar log(pbar + 1e-5) (the release's form), in nats. For codewords of one
    norm (LFQ's {-1, +1}^G, BSQ's scaled ones) the logits are -||x - c||^2 / temperature up to a
    constant per row. Computed in float32; the logits are clamped to +-1e30 (so log_softmax never
    meets inf - inf and every log p is finite), so a finite x gives finite entropies and
    gradients, even with a tiny temperature.
    """
    logits = (2.0 / temperature) * (x.float() @ codebook.to(x.device, torch.float32).t())
    log_p = torch.log_softmax(logits.clamp(-1e30, 1e30), dim=-1)  # inf - inf would be NaN
    p = log_p.exp()
    per_sample = -(p * log_p).sum(-1).mean()  # log_p is finite, so p = 0 gives 0
    pbar = p.mean(0)
    codebook_entropy = -(pbar * torch.log(pbar + 1e-5)).sum()
    return per_sample, codebook_entropy
