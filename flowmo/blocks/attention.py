"""QK-normed multi-head attention pieces on ``scaled_dot_product_attention``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .rope import apply_rope

__all__ = ["RMSNorm", "QKNorm", "SelfAttention", "attention"]


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32, times a learned ``scale`` (eps 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)  # x * rsqrt(mean(x^2) + eps)
        return y.to(x.dtype) * self.scale.to(x.dtype)


class QKNorm(nn.Module):
    """Separate RMS norms on queries and keys (keys ``query_norm``, ``key_norm``)."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.query_norm = RMSNorm(head_dim)
        self.key_norm = RMSNorm(head_dim)

    def forward(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        return self.query_norm(q), self.key_norm(k)


class SelfAttention(nn.Module):
    """The per-stream attention weights of a double-stream block: ``qkv``, ``norm``, ``proj``.

    The attention itself is shared between streams, so this module only projects:
    :meth:`qkv_heads` gives normed q, k and v as (B, H, N, D); ``proj`` maps the merged heads back.
    """

    def __init__(self, width: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.head_dim = width // heads
        self.qkv = nn.Linear(width, 3 * width, bias=qkv_bias)
        self.norm = QKNorm(self.head_dim)
        self.proj = nn.Linear(width, width)

    def qkv_heads(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, n, _ = x.shape
        # (B, N, 3*H*D) -> (3, B, H, N, D): K=3 outermost, then heads
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.norm(qkv[0], qkv[1])
        return q, k, qkv[2]


def attention(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float) -> Tensor:
    """RoPE on q and k, SDPA with the given softmax scale, heads merged: (B, H, N, D) -> (B, N, H*D)."""
    q = apply_rope(q, freqs).to(v.dtype)
    k = apply_rope(k, freqs).to(v.dtype)
    out = F.scaled_dot_product_attention(q, k, v, scale=scale)
    b, h, n, d = out.shape
    return out.transpose(1, 2).reshape(b, n, h * d)
