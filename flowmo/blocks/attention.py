"""QK-normed multi-head attention pieces on ``scaled_dot_product_attention``."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from ._checks import check_positive_int, check_positive_real, check_table, check_tensor
from .rope import _rotate

__all__ = ["RMSNorm", "QKNorm", "SelfAttention", "attention", "latent_causal_mask"]


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
        check_tensor(x, "x", f"(..., {self.dim})", last=self.dim)
        return self._normalize(x)

    def _normalize(self, x: Tensor) -> Tensor:
        """:meth:`forward` of an ``x`` already checked."""
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
        if not isinstance(queries, bool) or not isinstance(qkv_bias, bool):
            raise TypeError(f"queries must be a bool and qkv_bias must be a bool, got {queries!r} and {qkv_bias!r}")
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
        check_tensor(x, "x", f"(B, N, {self.width})", 3, self.width)
        return self._project(x)

    def _project(self, x: Tensor) -> tuple[Optional[Tensor], Tensor, Tensor]:
        """:meth:`qkv_heads` of an ``x`` already checked."""
        if not self.queries:
            k, v = rearrange(self.kv(x), "b n (k h d) -> k b h n d", k=2, h=self.heads)
            return None, self.key_norm._normalize(k), v
        q, k, v = rearrange(self.qkv(x), "b n (k h d) -> k b h n d", k=3, h=self.heads)
        return self.norm.query_norm._normalize(q), self.norm.key_norm._normalize(k), v


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
        TypeError: q, k or v not a floating tensor, or not all of one dtype and device.
        ValueError: q, k, v of mismatched or non-4-D shapes; a table not float32 (N, D/2, 2)
            (or (M, D/2, 2)) on q's device; ``scale`` not a finite number > 0.
    """
    for x, name in ((q, "q"), (k, "k"), (v, "v")):
        check_tensor(x, name, "(B, H, N, D)", 4)
    if not q.dtype == k.dtype == v.dtype or not q.device == k.device == v.device:
        raise TypeError(f"q, k and v must have one dtype and device, got {q.dtype}, {k.dtype}, {v.dtype} on "
                        f"{q.device}, {k.device}, {v.device}")
    check_positive_real(scale, "scale (the softmax scale)", "a finite number > 0")
    if (v.shape != k.shape or q.shape[:2] + q.shape[3:] != k.shape[:2] + k.shape[3:]
            or (q_freqs is None and q.shape[2] != k.shape[2])):
        raise ValueError(f"q, k and v must have the same shape (B, H, N, D) (q fewer tokens with q_freqs), got "
                         f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    n, m, d = k.shape[-2], q.shape[-2], k.shape[-1]
    check_table(freqs, "freqs", n, d, f" but there are {n} keys", f"q and k have head dim D = {d}", q.device)
    if q_freqs is not None:
        check_table(q_freqs, "q_freqs", m, d, f" but there are {m} queries", f"q and k have head dim D = {d}", q.device)
    return _attend(q, k, v, freqs, scale, q_freqs)


def _attend(q: Tensor, k: Tensor, v: Tensor, freqs: Tensor, scale: float, q_freqs: Optional[Tensor] = None,
            mask: Optional[Tensor] = None) -> Tensor:
    """:func:`attention` of arguments already checked; ``mask``: None or bool (M, N), True where
    a query attends to a key (every row has one)."""
    q = _rotate(q, freqs if q_freqs is None else q_freqs).to(v.dtype)
    k = _rotate(k, freqs).to(v.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return rearrange(out, "b h n d -> b n (h d)")


def latent_causal_mask(latent: int, image: int, device: Any = None) -> Tensor:
    """The attention mask of an ordered encoder over the tokens [latent, image]: bool
    (latent + image, latent + image), True where the row's token attends to the column's.
    Latent token i attends to latent tokens 0..i and to every image token; image tokens attend
    to image tokens only (else a later latent token would reach an earlier one through them in
    the next block). So latent token i depends on the image and on no later latent token
    (FlexTok's causal register tokens, Bachmann et al. 2025; ``MMDiTSpec.latent_attention``).

    Raises:
        ValueError: ``latent`` or ``image`` not an int >= 0.
    """
    for name, v in (("latent", latent), ("image", image)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name} must be a number of tokens (an int >= 0), got {v!r}")
    n = latent + image
    rows = torch.arange(n, device=device)[:, None]
    cols = torch.arange(n, device=device)[None, :]
    return ((rows >= latent) & (cols >= latent)) | ((rows < latent) & ((cols >= latent) | (cols <= rows)))
