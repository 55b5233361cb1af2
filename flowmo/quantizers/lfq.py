"""Lookup-free quantization (LFQ) as in the FlowMo release."""

from __future__ import annotations

import torch
from torch import Tensor

from ..devices import ValueChecks
from ..registry import QUANTIZERS
from ..spec import LFQSpec
from .base import Quantizer, QuantizerOutput

__all__ = ["LFQ", "lfq_entropy_terms", "LOSS_CLAMP"]

LOSS_CLAMP = 1e4
"""Inside LFQ's losses the input is clamped to [-LOSS_CLAMP, LOSS_CLAMP] (values and
indices use the sign only and are not affected). A trained encoder's outputs are O(1), so the
release's math is unchanged where it matters; a diverging encoder (|z| up to the float32
maximum) gets large, finite losses instead of inf (the commitment's square overflows float32
from |z| ~ 2e19) or NaN (the entropy's logits overflow to inf - inf)."""


def _bit_weights(n: int, device: torch.device) -> Tensor:
    return torch.pow(2, torch.arange(n, device=device, dtype=torch.int64))


@QUANTIZERS.register("lfq", spec=LFQSpec)
class LFQ(Quantizer):
    """Sign quantization of each channel to {-1, +1} (0 maps to -1), straight-through gradients.

    Token index: bit j = [channel j > 0], least significant first (up to 62 channels).
    Entropy groups: the C channels form C/G groups of G bits, STRIDED: bit j of group h is
    channel j * (C/G) + h. Group indices use the same bit order; their flat order is
    (batch, token, group), group fastest.

    The losses (in train and eval mode alike: a loss term never depends on the module's mode) are
    ``entropy`` (weight * (per-sample entropy - codebook entropy),
    over softmax(2 <x, c> / temperature) against all 2^G codewords of each group) and
    ``commitment`` (weight * mean((x - q)^2)). Memory of the entropy term is
    tokens x groups x 2^G; it never materialises 2^C. Both are finite for any finite input:
    x is clamped to [-LOSS_CLAMP, LOSS_CLAMP] = [-1e4, 1e4] inside the losses (no gradient
    from them beyond; see :data:`LOSS_CLAMP`), and a batch without tokens gives losses of 0
    (a mean over nothing would be NaN).

    Capabilities: ``has_groups`` (the entropy groups above); ``bits_per_token`` = C.
    """

    has_groups = True

    def __init__(self, spec: LFQSpec, *, channels: int):
        super().__init__()
        spec.check_channels(channels)
        self.spec = spec
        self.channels = channels
        self.group_bits = spec.group_bits
        self.groups = channels // spec.group_bits
        self.codebook_size = 2**channels
        self.group_codebook_size = 2**spec.group_bits
        # codeword k of a group: +1 at bit j where (k >> j) & 1, else -1 -> (2^G, G)
        k = torch.arange(self.group_codebook_size)[:, None]
        bits = (k >> torch.arange(spec.group_bits)[None]) & 1
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

    # -- quantization
    def quantize(self, z: Tensor) -> QuantizerOutput:
        """The codewords and indices of :meth:`forward`, without the entropy and commitment terms
        (whose entropy scores tokens x groups x 2^G codewords)."""
        self._check_code(z)
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(self._straight_through(q, z), self._indices(q))

    @staticmethod
    def _straight_through(q: Tensor, z: Tensor) -> Tensor:
        return q + (z - z.detach())  # exactly q (z + (q - z) is not, e.g. for |z| > 256 in bfloat16)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        values, indices = self._straight_through(q, z), self._indices(q)
        losses: dict[str, Tensor] = {}
        stats: dict[str, Tensor] = {}
        if z.numel() == 0:  # no tokens: nothing to pull towards the codewords
            zero = z.float().sum()  # 0, connected to z's graph
            losses = {"entropy": zero * self.spec.entropy_weight, "commitment": zero * self.spec.commit_weight}
            stats = {"per_sample_entropy": zero.detach(), "codebook_entropy": zero.detach(), "commitment": zero.detach()}
        else:
            zc = z.float().clamp(-LOSS_CLAMP, LOSS_CLAMP)  # see LOSS_CLAMP: finite losses for any finite z
            per_sample, codebook = lfq_entropy_terms(
                self.to_groups(zc).reshape(-1, self.group_bits), self.group_codebook, self.spec.temperature
            )
            commit = (zc - q.detach().float()).pow(2).mean()
            losses["entropy"] = self.spec.entropy_weight * (per_sample - codebook)
            losses["commitment"] = self.spec.commit_weight * commit
            stats = {"per_sample_entropy": per_sample.detach(), "codebook_entropy": codebook.detach(),
                     "commitment": commit.detach()}
        return QuantizerOutput(values, indices, losses, stats)

    # -- codes <-> indices
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., C) codes (sign taken) -> (...) int64 token indices."""
        self._check_code(codes, "codes", values=True)
        return self._indices(codes)

    def _indices(self, codes: Tensor) -> Tensor:
        return ((codes > 0).long() * _bit_weights(self.channels, codes.device)).sum(-1)

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) int64 token indices -> (..., C) codes in {-1, +1} (float32)."""
        self._check_indices(indices)
        return self._codes(indices)

    def indices_to_codes_deferred(self, indices: Tensor, checks: ValueChecks, name: str = "indices") -> Tensor:
        """:meth:`indices_to_codes` with the range check added to ``checks`` (the codes are bit
        arithmetic, defined for any integer until the check is read)."""
        self._check_indices(indices, name, checks=checks)
        return self._codes(indices)

    def _codes(self, indices: Tensor) -> Tensor:
        bits = (indices.long()[..., None] >> torch.arange(self.channels, device=indices.device)) & 1
        return bits.float() * 2 - 1

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
        """(..., C/G) group indices -> (..., C) codes in {-1, +1} (float32)."""
        if isinstance(group_indices, Tensor) and (group_indices.ndim < 1 or group_indices.shape[-1] != self.groups):
            raise ValueError(f"group_indices must have shape (..., {self.groups}), got {tuple(group_indices.shape)}")
        self._check_indices(group_indices, "group_indices", self.group_codebook_size)
        bits = (group_indices.long()[..., None] >> torch.arange(self.group_bits, device=group_indices.device)) & 1
        return self.from_groups(bits.float() * 2 - 1)


def lfq_entropy_terms(x: Tensor, codebook: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Per-sample entropy and codebook entropy of softmax(2 <x, c> / temperature).

    x: (N, G) continuous group vectors; codebook: (2^G, G). Returns (mean_n H(p_n), H(mean_n p_n)),
    the latter as -sum pbar log(pbar + 1e-5) (the release's form). Computed in float32; the
    logits are clamped to +-1e30 (so log_softmax never meets inf - inf and every log p is
    finite), so a finite x gives finite entropies and gradients, even with a tiny temperature.
    """
    logits = (2.0 / temperature) * (x.float() @ codebook.to(x.device, torch.float32).t())
    log_p = torch.log_softmax(logits.clamp(-1e30, 1e30), dim=-1)  # inf - inf would be NaN
    p = log_p.exp()
    per_sample = -(p * log_p).sum(-1).mean()  # log_p is finite, so p = 0 gives 0
    pbar = p.mean(0)
    codebook_entropy = -(pbar * torch.log(pbar + 1e-5)).sum()
    return per_sample, codebook_entropy

