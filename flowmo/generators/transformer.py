"""The transformer block the token generators share, built from flowmo's blocks: a pre-norm
block (LayerNorm, :class:`~flowmo.blocks.attention.SelfAttention` with QK-norm and 1-D RoPE,
the :func:`~flowmo.blocks.double_block.mlp`), bidirectional or causal, with optional adaLN-Zero
conditioning (:class:`~flowmo.blocks.modulation.Modulation`, DiT's form: Peebles & Xie 2023).

A causal block can also run incrementally over a :class:`KVCache`: the new tokens' keys and
values are written into preallocated per-layer buffers and their queries attend to every cached
position, so sampling L tokens one at a time costs O(L) attention per token instead of
rerunning the prefix (O(L^2) per token)."""

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

__all__ = ["GeneratorBlock", "KVCache", "SequenceRope", "cached_causal_attention", "causal_attention"]


def causal_attention(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float) -> Tensor:
    """:func:`flowmo.blocks.attention.attention` with a causal mask: token i attends to tokens <= i.

    q, k, v: (B, H, N, D); freqs: float32 (N, D/2, 2), row i = position of token i.
    Returns (B, N, H * D) in v's dtype.
    """
    q = apply_rope(q, freqs).to(v.dtype)
    k = apply_rope(k, freqs).to(v.dtype)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale)
    return rearrange(out, "b h n d -> b n (h d)")


def cached_causal_attention(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float, keys: Tensor,
                            values: Tensor, start: int) -> Tensor:
    """:func:`causal_attention` for n new tokens at positions start .. start + n - 1 of a sequence
    whose earlier tokens' keys and values are cached.

    The new tokens' RoPE-rotated keys and their values are written into ``keys`` / ``values`` at
    those positions (in place, cast to the buffers' dtype); the queries then attend to positions
    0 .. start + n - 1 of the buffers, new token i to positions <= start + i. The result equals
    :func:`causal_attention` over the whole sequence, restricted to the new rows, up to float
    rounding (the matrix products are split differently).

    Args:
        q, k, v: (B, H, n, D), the new tokens' queries, keys (before RoPE) and values.
        freqs: float32 (n, D/2, 2), the RoPE rows of positions start .. start + n - 1.
        scale: the softmax scale.
        keys, values: (B, H, L_max, D) buffers, positions < start already written;
            start + n <= L_max (the caller's contract: not checked here).
        start: a python int >= 0, the position of the first new token.

    Returns:
        (B, n, H * D) in the buffers' dtype. No host sync (positions are python ints).
    """
    n = q.shape[2]
    end = start + n
    keys[:, :, start:end] = apply_rope(k, freqs)
    values[:, :, start:end] = v
    q = apply_rope(q, freqs).to(keys.dtype)
    k_all, v_all = keys[:, :, :end], values[:, :, :end]
    if n == 1:  # one query: every cached position is at or before it, no mask
        out = F.scaled_dot_product_attention(q, k_all, v_all, scale=scale)
    elif start == 0:  # a whole prefix from position 0: the ordinary causal mask
        out = F.scaled_dot_product_attention(q, k_all, v_all, is_causal=True, scale=scale)
    else:  # n queries after start cached ones: query i sees key j iff j <= start + i
        mask = torch.ones((n, end), dtype=torch.bool, device=q.device).tril(diagonal=start)
        out = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=scale)
    return rearrange(out, "b h n d -> b n (h d)")


class KVCache:
    """Preallocated keys and values of a causal transformer's layers, for incremental decoding.

    One key and one value buffer per layer, each (batch, heads, max_len, head_dim), allocated
    once here and written in place by :meth:`GeneratorBlock.forward_cached` (no growth by
    concatenation). ``length`` (a python int, so reading it never syncs) counts the positions
    written; the caller advances it after every layer has written its new positions.

    Args:
        layers: the number of blocks (>= 1).
        batch: B (>= 0), the rows decoded together (a classifier-free guidance pair counts twice).
        heads: attention heads (>= 1).
        max_len: L_max (>= 1), the positions the buffers hold.
        head_dim: D (>= 1), per-head channels.
        dtype: the buffers' floating dtype (the generator's parameter dtype).
        device: where the buffers live.

    Raises:
        TypeError / ValueError: a size not an int in its range, or ``dtype`` not floating.
    """

    def __init__(self, layers: int, batch: int, heads: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None):
        layers, heads = check_int(layers, "layers"), check_int(heads, "heads")
        batch = check_int(batch, "batch", minimum=0)
        self.max_len, head_dim = check_int(max_len, "max_len"), check_int(head_dim, "head_dim")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        shape = (batch, heads, self.max_len, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.length = 0

    def advance(self, n: int) -> None:
        """Mark ``n`` more positions written (after every layer wrote them).

        Raises:
            ValueError: ``length + n`` would exceed ``max_len``.
        """
        if self.length + n > self.max_len:
            raise ValueError(f"n = {n} new positions after {self.length} overflow the cache's max_len = {self.max_len}")
        self.length += n


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

    def forward_cached(self, x: Tensor, vec: Optional[Tensor], freqs: Tensor, keys: Tensor, values: Tensor,
                       start: int) -> Tensor:
        """:meth:`forward` of a causal block for n new tokens at positions start .. start + n - 1,
        the earlier positions' keys and values read from (and the new ones written into) this
        layer's buffers of a :class:`KVCache` (see :func:`cached_causal_attention`).

        Args:
            x: the new tokens (B, n, D); vec: as in :meth:`forward`.
            freqs: float32 (n, head_dim / 2, 2), the RoPE rows of the new positions.
            keys, values: this layer's buffers (B, heads, L_max, head_dim), start + n <= L_max.
            start: a python int, the number of positions already cached.

        Returns:
            (B, n, D): the rows :meth:`forward` gives for these tokens over the whole sequence
            (up to float rounding).

        Raises:
            ValueError: the block is bidirectional (a later token changes an earlier one's
                output, so nothing can be cached).
        """
        if not self.causal:
            raise ValueError("forward_cached needs a causal block (causal=True); this one is bidirectional")
        m1 = m2 = None
        if self.modulation:
            m1, m2 = self.mod(vec)
        q, k, v = self.attn.qkv_heads(modulate(self.norm1(x), m1))
        a = cached_causal_attention(q, k, v, freqs, self.scale, keys, values, start)
        x = self._gated(x, self.attn.proj(a), m1)
        return self._gated(x, self.mlp(modulate(self.norm2(x), m2)), m2)
