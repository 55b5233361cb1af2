"""The double-stream (MM-DiT) block: two token streams with their own weights, one shared attention."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import SelfAttention, attention
from .modulation import Modulation, ModulationOut, modulate

__all__ = ["DoubleStreamBlock", "mlp", "TanhGELU"]


class TanhGELU(nn.Module):
    """GELU with the tanh approximation; in place when autograd will not need its input.

    In place saves allocating (and, for large blocks, page-faulting) one hidden-sized tensor
    per MLP call during sampling; with autograd recording it is the ordinary out-of-place op.
    (A forward hook on the preceding ``Linear`` that keeps its output sees it after GELU when
    autograd is off: clone it in the hook.)
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.gelu(x, approximate="tanh")
        return torch.ops.aten.gelu_(x, approximate="tanh")


def mlp(width: int, ratio: float) -> nn.Sequential:
    """Linear -> GELU(tanh) -> Linear (keys ``0`` and ``2``)."""
    hidden = int(width * ratio)
    return nn.Sequential(nn.Linear(width, hidden), TanhGELU(), nn.Linear(hidden, width))


class DoubleStreamBlock(nn.Module):
    """Image stream (``img_*``) and latent stream (``txt_*``) attend jointly over [latent, image].

    With ``vec`` (a time embedding) each stream is adaLN-modulated and gated; with ``vec=None``
    it is a plain pre-norm block (shift 0, scale 0, gate 1), as the release's encoder runs.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 softmax_scale: Optional[float] = None):
        super().__init__()
        self.width = width
        self.heads = heads
        self.softmax_scale = softmax_scale if softmax_scale is not None else (width // heads) ** -0.5
        for s in ("img", "txt"):
            setattr(self, f"{s}_mod", Modulation(width))
            setattr(self, f"{s}_norm1", nn.LayerNorm(width, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_attn", SelfAttention(width, heads, qkv_bias))
            setattr(self, f"{s}_norm2", nn.LayerNorm(width, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_mlp", mlp(width, mlp_ratio))

    def forward(self, img: Tensor, txt: Tensor, vec: Optional[Tensor], freqs: Tensor) -> tuple[Tensor, Tensor]:
        if vec is not None:
            img_m1, img_m2 = self.img_mod(vec)
            txt_m1, txt_m2 = self.txt_mod(vec)
        else:
            img_m1 = img_m2 = txt_m1 = txt_m2 = None

        iq, ik, iv = self.img_attn.qkv_heads(modulate(self.img_norm1(img), img_m1))
        tq, tk, tv = self.txt_attn.qkv_heads(modulate(self.txt_norm1(txt), txt_m1))
        # latent tokens first, then image tokens
        q = torch.cat((tq, iq), dim=2)
        k = torch.cat((tk, ik), dim=2)
        v = torch.cat((tv, iv), dim=2)
        out = attention(q, k, v, freqs, self.softmax_scale)
        n_txt = txt.shape[1]
        txt_a, img_a = out[:, :n_txt], out[:, n_txt:]

        img = _residual(img, self.img_attn.proj(img_a), img_m1)
        img = _residual(img, self.img_mlp(modulate(self.img_norm2(img), img_m2)), img_m2)
        txt = _residual(txt, self.txt_attn.proj(txt_a), txt_m1)
        txt = _residual(txt, self.txt_mlp(modulate(self.txt_norm2(txt), txt_m2)), txt_m2)
        return img, txt


def _residual(res: Tensor, x: Tensor, mod: Optional[ModulationOut]) -> Tensor:
    """res + gate * x in one pass (res + x without conditioning)."""
    return res + x if mod is None else torch.addcmul(res, mod.gate, x)
