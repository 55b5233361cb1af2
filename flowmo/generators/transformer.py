"""The transformer block the token generators share, built from flowmo's blocks: a pre-norm
block (LayerNorm, :class:`~flowmo.blocks.attention.SelfAttention` with QK-norm and 1-D RoPE,
the :func:`~flowmo.blocks.double_block.mlp`), bidirectional or causal, with optional adaLN-Zero
conditioning (:class:`~flowmo.blocks.modulation.Modulation`, DiT's form: Peebles & Xie 2023)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from flowmo.blocks.attention import SelfAttention, attention
from flowmo.blocks.double_block import mlp
from flowmo.blocks.modulation import Modulation, ModulationOut, modulate
from flowmo.blocks.rope import RopeTable, apply_rope

from ._checks import check_int

__all__ = ["GeneratorBlock", "SequenceRope", "causal_attention"]


def causal_attention(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float) -> Tensor:
    """:func:`flowmo.blocks.attention.attention` with a causal mask: token i attends to tokens <= i.

    q, k, v: (B, H, N, D); freqs: float32 (N, D/2, 2), row i = position of token i.
    Returns (B, N, H * D) in v's dtype.
    """
    q = apply_rope(q, freqs).to(v.dtype)
    k = apply_rope(k, freqs).to(v.dtype)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return rearrange(out, "b h n d -> b n (h d)")


class SequenceRope(nn.Module):
    """RoPE tables for 1-D positions 0 .. N-1 (one axis using the whole head dim), cached per
    (N, device) by :class:`~flowmo.blocks.rope.RopeTable`; no parameters, no state."""

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.table = RopeTable([head_dim], theta)

    def forward(self, n: int, device: torch.device) -> Tensor:
        """float32 (n, head_dim / 2, 2) for positions 0 .. n-1 on ``device``."""
        return self.table.get(n, device, lambda d: torch.arange(n, device=d)[:, None])


class GeneratorBlock(nn.Module):
    """x + g1 * Attn(mod1(LN(x))), then x + g2 * MLP(mod2(LN(x))) over tokens (B, N, width).

    Args:
        width: D, a multiple of ``heads`` with an even head dim (RoPE).
        heads: attention heads.
        mlp_ratio: MLP hidden size / width (> 0).
        causal: token i attends only to tokens <= i (autoregressive); False: to all (MaskGiT).
        modulation: adaLN-Zero from a conditioning vector (B, D): (shift, scale, gate) per
            sub-layer, zero-initialised so the block starts as the identity. Without it the
            norms have a learned affine and the gates are 1.

    Keys: ``norm1``, ``attn`` (``qkv``, ``norm``, ``proj``), ``norm2``, ``mlp``, ``mod`` (with modulation).
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, *, causal: bool, modulation: bool):
        super().__init__()
        width, heads = check_int(width, "width"), check_int(heads, "heads")
        self.causal, self.modulation = causal, modulation
        self.norm1 = nn.LayerNorm(width, elementwise_affine=not modulation, eps=1e-6)
        self.attn = SelfAttention(width, heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=not modulation, eps=1e-6)
        self.mlp = mlp(width, mlp_ratio)
        self.scale = self.attn.head_dim ** -0.5
        if modulation:
            self.mod = Modulation(width, chunks=6)
            nn.init.zeros_(self.mod.lin.weight)
            nn.init.zeros_(self.mod.lin.bias)

    @staticmethod
    def _gated(x: Tensor, y: Tensor, m: Optional[ModulationOut]) -> Tensor:
        return x + y if m is None else torch.addcmul(x, m.gate, y)

    def forward(self, x: Tensor, vec: Optional[Tensor], freqs: Tensor) -> Tensor:
        """Tokens x (B, N, D), the conditioning vector vec (B, D) (None without modulation),
        the RoPE table freqs float32 (N, head_dim / 2, 2) -> tokens (B, N, D) in x's dtype."""
        m1 = m2 = None
        if self.modulation:
            m1, m2 = self.mod(vec)
        q, k, v = self.attn.qkv_heads(modulate(self.norm1(x), m1))
        a = (causal_attention if self.causal else attention)(q, k, v, freqs, self.scale)
        x = self._gated(x, self.attn.proj(a), m1)
        return self._gated(x, self.mlp(modulate(self.norm2(x), m2)), m2)
