"""QK-normed multi-head attention pieces on ``scaled_dot_product_attention``."""

from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._checks import check_positive_int, check_tensor
from .rope import apply_rope

__all__ = ["RMSNorm", "QKNorm", "SelfAttention", "attention"]


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32, times a learned ``scale`` (eps 1e-6).

    Args:
        dim: size of the normalised (last) dim.
        eps: added to mean(x^2) under the square root.
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim = check_positive_int(dim, "dim")
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., dim) -> x / sqrt(mean(x^2) + eps) * scale, same shape and dtype as x.

        Raises:
            ValueError: the last dim of ``x`` is not ``dim``.
            TypeError: ``x`` is not floating-point.
        """
        if not isinstance(x, Tensor) or x.ndim < 1 or x.shape[-1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"x must have shape (..., {self.dim}) (last dim = dim), got {shape}")
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x * rsqrt(mean(x^2) + eps)
        return y.to(x.dtype) * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    """Separate RMS norms on queries and keys (keys ``query_norm``, ``key_norm``).

    Args:
        head_dim: D, the per-head size both norms act on.
    """

    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        """q, k (..., head_dim) -> (RMSNorm_q(q), RMSNorm_k(k)), shapes and dtypes unchanged."""
        return self.query_norm(q), self.key_norm(k)


class SelfAttention(nn.Module):
    """The per-stream attention weights of a double-stream block: ``qkv``, ``norm``, ``proj``.

    The attention itself is shared between streams (see :func:`attention`), so this module
    only projects: :meth:`qkv_heads` gives normed q, k and v; ``proj`` (Linear(width, width))
    maps the merged heads back.

    Args:
        width: the token size, a multiple of ``heads``.
        heads: attention heads; head_dim = width / heads.
        qkv_bias: whether the input projection has a bias (the release: yes).
        queries: with False the stream only offers keys and values to the other stream (SD3's
            "context_pre_only" for a last block whose output of this stream is unused): the
            module holds ``kv`` (Linear(width, 2 * width)) and ``key_norm`` instead of ``qkv``,
            ``norm`` and ``proj``, so it has no parameter that could not get a gradient.
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True, *, queries: bool = True):
        super().__init__()
        width = check_positive_int(width, "width")
        self.heads = check_positive_int(heads, "heads")
        if width % heads:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        if not isinstance(queries, bool):
            raise TypeError(f"queries must be a bool, got {type(queries).__name__}")
        if not isinstance(qkv_bias, bool):
            raise TypeError(f"qkv_bias must be a bool, got {type(qkv_bias).__name__} {qkv_bias!r}")
        self.width = width
        self.head_dim = width // heads
        self.queries = queries
        if queries:
            self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
            self.norm = QKNorm(self.head_dim)
            self.proj = nn.Linear(width, width)
        else:
            self.kv = nn.Linear(width, 2 * width, bias=qkv_bias)
            self.key_norm = RMSNorm(self.head_dim)

    def qkv_heads(self, x: Tensor) -> tuple[Optional[Tensor], Tensor, Tensor]:
        """Tokens x (B, N, width) -> q, k, v, each (B, heads, N, head_dim); q and k RMS-normed
        (q is None for a module built with ``queries=False``).

        The projection's output is split as ``(k h d)``: q/k/v outermost, then heads (the
        release's layout).

        Raises:
            ValueError: ``x`` is not (B, N, width).
        """
        check_tensor(x, "x", 3, f"(B, N, {self.width})")
        if x.shape[-1] != self.width:
            raise ValueError(f"x must have shape (B, N, {self.width}) (last dim = width), got {tuple(x.shape)}")
        if not self.queries:
            k, v = rearrange(self.kv(x), "b n (k h d) -> k b h n d", k=2, h=self.heads)
            return None, self.key_norm(k), v
        q, k, v = rearrange(self.qkv(x), "b n (k h d) -> k b h n d", k=3, h=self.heads)
        q, k = self.norm(q, k)
        return q, k, v


def attention(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float,
              q_freqs: Optional[Tensor] = None) -> Tensor:
    """RoPE on q and k, softmax attention of the queries over all N tokens, heads merged.

    Args:
        q: (B, H, M, D) queries; M = N unless ``q_freqs`` is given.
        k, v: (B, H, N, D), the tokens of every stream concatenated in the order the RoPE
            table follows (FlowMo: [latent, image]).
        freqs: float32 (N, D/2, 2) RoPE table (:func:`~flowmo.blocks.rope_freqs`) covering all
            N tokens, one row per token in the same order.
        scale: the softmax scale (the logits are scale * q.k). The release uses 8 / D (muP;
            ``MMDiTSpec.attn_scale="mup"``, the spec's default), not the usual D**-0.5
            (``"standard"``); the two agree only at D = 64.
        q_freqs: float32 (M, D/2, 2), the table rows of the query tokens when only some tokens
            ask (default: ``freqs``, every token asks).

    Returns:
        (B, M, H * D) in v's dtype, heads merged as ``(h d)``.

    Raises:
        TypeError: q, k or v not a floating tensor, or not all of one dtype.
        ValueError: q, k, v of mismatched or non-4-D shapes, or on different devices; a table
            not covering the tokens; ``scale`` not a finite number > 0.
    """
    check_tensor(q, "q", 4, "(B, H, N, D)")
    check_tensor(k, "k", 4, "(B, H, N, D)")
    check_tensor(v, "v", 4, "(B, H, N, D)")
    if not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not q.device == k.device == v.device:
        raise ValueError(f"q, k and v must be on one device, got {q.device}, {k.device}, {v.device}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale (the softmax scale) must be a finite number > 0, got {scale!r}")
    q_shape_ok = isinstance(k, Tensor) and (q.shape == k.shape if q_freqs is None else
                                            (q.shape[:2] == k.shape[:2] and q.shape[3] == k.shape[3]))
    if not q_shape_ok or not isinstance(v, Tensor) or v.shape != k.shape:
        shapes = [tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__ for t in (q, k, v)]
        raise ValueError(f"q, k and v must have the same shape (B, H, N, D) (q may have fewer tokens when "
                         f"q_freqs is given), got {shapes[0]}, {shapes[1]}, {shapes[2]}")
    n, d = k.shape[-2], k.shape[-1]
    for table, rows, what in ((freqs, n, "freqs"), (q_freqs, q.shape[-2], "q_freqs")):
        if isinstance(table, Tensor) and table.ndim == 3 and table.shape[0] != rows:
            raise ValueError(f"{what} covers {table.shape[0]} tokens but there are {rows} "
                             f"{'keys' if what == 'freqs' else 'queries'}: the RoPE table must have one row "
                             f"per token (all streams, e.g. [latent, image]), shape ({rows}, {d // 2}, 2)")
    q = apply_rope(q, freqs if q_freqs is None else q_freqs).to(v.dtype)
    k = apply_rope(k, freqs).to(v.dtype)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    return rearrange(out, "b h n d -> b n (h d)")
