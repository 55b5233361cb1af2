"""The double-stream (MM-DiT) block: two token streams with their own weights, one shared attention."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import (check_like, check_positive_int, check_positive_real, check_streams, check_table, check_tensor,
                      check_vec, first_parameter, shape_of)
from .attention import SelfAttention, _attend
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
    """Linear(width, int(width * ratio)) -> GELU(tanh) -> Linear(back to width) (keys ``0``, ``2``).

    Takes and returns tokens (..., width). Raises ValueError when int(width * ratio) < 1.
    """
    width = check_positive_int(width, "width")
    hidden = int(width * check_positive_real(ratio, "ratio (the MLP ratio)"))
    if hidden < 1:
        raise ValueError(f"ratio ({ratio}) gives an MLP hidden size int(width * ratio) = {hidden}; it must be >= 1")
    return nn.Sequential(nn.Linear(width, hidden), TanhGELU(), nn.Linear(hidden, width))


class DoubleStreamBlock(nn.Module):
    """Image stream (``img_*``) and latent stream (``txt_*``) attend jointly over [latent, image].

    Each stream has its own weights (pre-norm attention and MLP); the attention runs once over
    the concatenation of the latent tokens FIRST, then the image tokens (the release's order),
    so the RoPE table ``freqs`` must cover both, in that order (FlowMo's:
    ``rope_freqs(rope_angles(flowmo_positions(T, grid), axes_dim))``).

    With ``vec`` (a time embedding) each stream is adaLN-modulated and gated; with ``vec=None``
    it is a plain pre-norm block (shift 0, scale 0, gate 1), as the release's encoder runs.

    Args:
        width: D, the token size of both streams.
        heads: attention heads (divides ``width``; head_dim = width / heads must be even for RoPE).
        mlp_ratio: MLP hidden size / width.
        qkv_bias: bias on the qkv projections.
        softmax_scale: the attention's softmax scale. The default here is the standard
            head_dim**-0.5; FlowMo's spec default (``MMDiTSpec.attn_scale="mup"``, the
            release's) is 8 / head_dim: the two agree only at head_dim 64. Pass
            ``8 / head_dim`` to match the release.
        outputs: the streams this block updates and returns, a subset (not empty) of
            ("img", "txt"). A stream left out only offers keys and values (SD3's
            "context_pre_only"): it has no output projection, MLP or queries and ``forward``
            returns None for it. Use it for a last block whose output of that stream is never
            used (an encoder reading only the latent tokens), so that no parameter of it goes
            without a gradient. The default updates both (the release's layout).
        modulation: with False the block has no ``img_mod`` / ``txt_mod`` layers and takes only
            ``vec=None``: every parameter gets a gradient, so an encoder without time
            conditioning trains under DDP without ``find_unused_parameters``. The default
            (True) keeps the release's key layout: FlowMo's own encoder keeps these layers so
            the released weights load, and they get no gradient there.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 softmax_scale: Optional[float] = None, *, modulation: bool = True,
                 outputs: Sequence[str] = ("img", "txt")):
        super().__init__()
        width = check_positive_int(width, "width")
        heads = check_positive_int(heads, "heads")
        if width % heads or (width // heads) % 2:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads}) and the head dim width / heads = "
                             f"{width} / {heads} = {width / heads:g} must be even (RoPE rotates pairs)")
        if softmax_scale is not None:
            check_positive_real(softmax_scale, "softmax_scale", "None or a finite number > 0")
        if not isinstance(modulation, bool) or not isinstance(qkv_bias, bool):
            raise TypeError(f"modulation must be a bool and qkv_bias must be a bool, got {modulation!r}, {qkv_bias!r}")
        self.width = width
        self.heads = heads
        self.head_dim = width // heads
        self.modulation = modulation
        self.outputs = check_streams(outputs, "outputs")
        self.softmax_scale = float(softmax_scale) if softmax_scale is not None else self.head_dim ** -0.5
        for s in ("img", "txt"):
            full = s in self.outputs
            if modulation:  # a stream without output uses only (shift1, scale1)
                setattr(self, f"{s}_mod", Modulation(width, chunks=6 if full else 3))
            setattr(self, f"{s}_norm1", nn.LayerNorm(width, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_attn", SelfAttention(width, heads, qkv_bias, queries=full))
            if full:
                setattr(self, f"{s}_norm2", nn.LayerNorm(width, elementwise_affine=False, eps=1e-6))
                setattr(self, f"{s}_mlp", mlp(width, mlp_ratio))

    def forward(self, img: Tensor, txt: Tensor, vec: Optional[Tensor],
                freqs: Tensor, mask: Optional[Tensor] = None) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """One block over both streams.

        Args:
            img: image tokens (B, N_img, D) (patches in row-major grid order).
            txt: latent tokens (B, N_txt, D).
            vec: the conditioning vector (B, D) (e.g. :class:`TimeEmbedding` of t in [0, 1]),
                or None for no conditioning (the only choice with ``modulation=False``).
            freqs: float32 RoPE table (N_txt + N_img, head_dim / 2, 2) covering every token,
                latent rows first, then image rows.
            mask: None (every token attends to every token) or bool (N_txt + N_img, N_txt + N_img),
                True where the row's token attends to the column's, in the table's order
                (:func:`latent_causal_mask`).

        Returns:
            (img, txt): the updated streams, shapes of the inputs, in the inputs' dtype (which
            is the parameters'; under ``torch.autocast``, the dtype autocast computes in); None
            for a stream not in the block's ``outputs``. Batches and token counts of 0 give
            empty outputs.

        Raises:
            TypeError / ValueError: a stream not (B, N, D), different batches, ``vec`` not
                (B, D) (e.g. (B, 1, D)) or given to a block built without modulation, a table that
                does not cover N_txt + N_img tokens; ``img``, ``txt``, ``vec`` or ``freqs`` on another
                device than the block's parameters (ValueError), or ``img``, ``txt``, ``vec`` of
                another dtype outside ``torch.autocast`` (TypeError: cast the block with
                ``block.to(dtype)`` or the inputs).
        """
        self._check_inputs(img, txt, vec, freqs, mask)
        n_txt = txt.shape[1]
        img_m1 = img_m2 = txt_m1 = txt_m2 = None
        if vec is not None:
            img_m1, img_m2 = _triples(self.img_mod._split(vec))
            txt_m1, txt_m2 = _triples(self.txt_mod._split(vec))

        iq, ik, iv = self.img_attn._project(modulate(self.img_norm1(img), img_m1))
        tq, tk, tv = self.txt_attn._project(modulate(self.txt_norm1(txt), txt_m1))
        # latent tokens first, then image tokens
        k = torch.cat((tk, ik), dim=2)
        v = torch.cat((tv, iv), dim=2)
        if iq is not None and tq is not None:
            out = _attend(torch.cat((tq, iq), dim=2), k, v, freqs, self.softmax_scale, mask=mask)
            txt_a, img_a = out[:, :n_txt], out[:, n_txt:]
        elif tq is not None:  # only the latent tokens ask
            txt_a, img_a = _attend(tq, k, v, freqs, self.softmax_scale, q_freqs=freqs[:n_txt],
                                   mask=None if mask is None else mask[:n_txt]), None
        else:  # only the image tokens ask
            txt_a, img_a = None, _attend(iq, k, v, freqs, self.softmax_scale, q_freqs=freqs[n_txt:],
                                         mask=None if mask is None else mask[n_txt:])

        if img_a is not None:
            img = _residual(img, self.img_attn.proj(img_a), img_m1)
            img = _residual(img, self.img_mlp(modulate(self.img_norm2(img), img_m2)), img_m2)
        if txt_a is not None:
            txt = _residual(txt, self.txt_attn.proj(txt_a), txt_m1)
            txt = _residual(txt, self.txt_mlp(modulate(self.txt_norm2(txt), txt_m2)), txt_m2)
        return (img if img_a is not None else None), (txt if txt_a is not None else None)

    def _check_inputs(self, img: Tensor, txt: Tensor, vec: Optional[Tensor], freqs: Tensor,
                      mask: Optional[Tensor]) -> None:
        """The block's one input check (metadata only; see :meth:`forward`'s Raises)."""
        for name, x in (("img", img), ("txt", txt)):
            check_tensor(x, name, f"(B, N, {self.width})", 3, self.width)
        if txt.shape[0] != img.shape[0]:
            raise ValueError(f"txt has batch {txt.shape[0]} but the other stream has batch {img.shape[0]}")
        check_vec(vec, img.shape[0], self.width, self.modulation)
        n_txt, n_img = txt.shape[1], img.shape[1]
        only_img = isinstance(freqs, Tensor) and freqs.shape[:1] == (n_img,) != (n_txt,)
        check_table(freqs, "freqs", n_txt + n_img, self.head_dim,
                    f"{' (it covers only the image tokens)' * only_img} but the block attends over N_txt + N_img = "
                    f"{n_txt} + {n_img} = {n_txt + n_img} tokens",
                    f"this block's head dim is {self.head_dim} (width / heads)")
        check_like(first_parameter(self), "the block", dict(img=img, txt=txt, vec=vec, freqs=freqs), ("freqs",))
        n = n_txt + n_img
        if mask is not None and (not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.shape != (n, n)
                                 or mask.device != img.device):
            raise ValueError(f"mask must be None or a bool ({n}, {n}) tensor (N_txt + N_img tokens) on {img.device}, "
                             f"got {shape_of(mask)}{' of ' + str(mask.dtype) if isinstance(mask, Tensor) else ''}")


def _triples(mods: list[ModulationOut]) -> tuple[ModulationOut, Optional[ModulationOut]]:
    """(attention triple, MLP triple); the MLP one is None for a stream without output."""
    return mods[0], (mods[1] if len(mods) > 1 else None)


def _residual(res: Tensor, x: Tensor, mod: Optional[ModulationOut]) -> Tensor:
    """res + gate * x in one pass (res + x without conditioning)."""
    return res + x if mod is None else torch.addcmul(res, mod.gate, x)
