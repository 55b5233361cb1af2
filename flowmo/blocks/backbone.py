"""The MM-DiT backbone used for both FlowMo's encoder and decoder."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..registry import BACKBONES
from ..spec import MMDiTSpec
from ._checks import check_grid, check_like, check_positive_int, check_streams, check_tensor, first_parameter, shape_of
from .base import Backbone
from .attention import latent_causal_mask
from .double_block import DoubleStreamBlock
from .embeddings import TimeEmbedding
from .output import FinalLayer
from .rope import RopeTable, flowmo_positions

__all__ = ["MMDiT"]


@BACKBONES.register("mmdit", spec=MMDiTSpec)
class MMDiT(Backbone):
    """Double-stream transformer over [latent tokens, image patches] (FlowMo's encoder and decoder).

    Args:
        spec: sizes (width, heads, depth, RoPE axes, ...). Its ``attn_scale`` defaults to the
            release's "mup" (softmax scale 8 / head_dim), which differs from
            :class:`DoubleStreamBlock`'s own default head_dim**-0.5 unless head_dim is 64.
        patch_dim: channels of an image token (3 * p * p for RGB patches of side p).
        txt_in_dim / txt_out_dim: channels of a latent token in and out.
        time_conditioning: with False there is no time embedding and no modulation layer
            (blocks and final layers built with ``modulation=False``) and ``forward`` takes only
            ``t=None``: an encoder for your own tokenizer whose parameters all get gradients.
            FlowMo's own encoder keeps the default True (it runs with ``t=None`` but holds the
            release's ``time_in`` / ``*_mod`` / ``adaLN_modulation`` keys so released weights load).
        outputs: the output heads to build, a non-empty subset of ("img", "txt"); ``forward``
            can compute only these. A stream without a head has no ``final_layer_*`` and, in the
            last block, no output projection, MLP or queries (it only gives keys and values),
            so with ``time_conditioning=False, outputs=("txt",)`` every parameter of an encoder
            gets a gradient. FlowMo builds both heads in each backbone (the release's layout)
            and skips the unused one in ``forward``, so there that head and the last block's
            weights of that stream get no gradient (the trainer freezes them).

    With ``spec.latent_attention="causal"`` every block attends under :func:`latent_causal_mask`
    (an ordered encoder: no latent token depends on a later one).

    Keys follow the release (``img_in``, ``txt_in``, ``time_in``, ``double_blocks.N``,
    ``final_layer_img``, ``final_layer_txt``).
    """

    def __init__(self, spec: MMDiTSpec, *, patch_dim: int, txt_in_dim: int, txt_out_dim: int,
                 time_conditioning: bool = True, outputs: Sequence[str] = ("img", "txt")):
        super().__init__()
        if not isinstance(time_conditioning, bool):
            raise TypeError(f"time_conditioning must be a bool, got {type(time_conditioning).__name__}")
        if isinstance(spec, dict):
            spec = MMDiTSpec.model_validate(spec)
        if not isinstance(spec, MMDiTSpec):
            raise TypeError(f"spec must be an MMDiTSpec (or a dict of its fields), got {type(spec).__name__}")
        self.spec = spec
        self.time_conditioning = time_conditioning
        self.outputs = check_streams(outputs, "outputs")
        w = spec.width
        self.time_in = TimeEmbedding(w, time_factor=spec.time_factor) if time_conditioning else None
        self.img_in = nn.Linear(check_positive_int(patch_dim, "patch_dim"), w)
        self.txt_in = nn.Linear(check_positive_int(txt_in_dim, "txt_in_dim"), w)
        # a stream without an output head only gives keys and values in the last block
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(w, spec.heads, spec.mlp_ratio, spec.qkv_bias, spec.softmax_scale,
                              modulation=time_conditioning,
                              outputs=self.outputs if i == spec.depth - 1 else ("img", "txt"))
            for i in range(spec.depth)
        )
        if "img" in self.outputs:
            self.final_layer_img = FinalLayer(w, patch_dim, modulation=time_conditioning)
        if "txt" in self.outputs:
            self.final_layer_txt = FinalLayer(w, check_positive_int(txt_out_dim, "txt_out_dim"),
                                              modulation=time_conditioning)
        self.rope = RopeTable(spec.axes_dim, spec.rope_theta)

    def compile_units(self) -> tuple[nn.Module, ...]:
        """The double-stream blocks: one compiled block serves every block, step and batch size."""
        return tuple(self.double_blocks)

    def rope_tables(self, code_length: int, grid: tuple[int, int], device: torch.device) -> Tensor:
        """The float32 RoPE table (code_length + rows * cols, head_dim / 2, 2) for the tokens
        [latent, image] (:func:`flowmo_positions`), built once per (layout, device) and cached."""
        return self.rope.get((code_length, tuple(grid)), device, lambda dev: flowmo_positions(code_length, grid, dev))

    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        t: Optional[Tensor],
        grid: tuple[int, int],
        outputs: Optional[Sequence[str]] = None,
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        """Run the transformer over [latent, image] tokens.

        Args:
            img: image patches (B, rows * cols, patch_dim) in row-major grid order (what
                :func:`~flowmo.blocks.patchify` gives).
            txt: latent tokens (B, T, txt_in_dim).
            t: flow times (B,), t in [0, 1] (0 data, 1 noise; not range-checked here), or None
                for no time conditioning (FlowMo's encoder; the only choice when built with
                ``time_conditioning=False``).
            grid: (rows, cols) of the image patches, (H / p, W / p) of the image
                :func:`~flowmo.blocks.patchify` cut; it places each patch for RoPE. Only
                rows * cols = img's token count is checked: the backbone sees tokens, not the
                image, so a grid of the right count but the wrong shape (``(4, 16)`` for the
                8 x 8 patches of a 32 x 32 image) runs, with wrong positions.
                :class:`flowmo.FlowMo`, which knows the image size, checks the image instead.
            outputs: which heads to compute, a non-empty subset of the built ones (default: all
                built; pass only what you use: the release computes and discards the other,
                skipping it changes nothing).

        Returns:
            (img_out (B, rows * cols, patch_dim) or None, txt_out (B, T, txt_out_dim) or None).

        Raises:
            TypeError / ValueError: a token tensor of the wrong shape (the first block reports
                a batch mismatch), ``grid`` not two positive ints or rows * cols not the number of
                patches, ``t`` not (B,) or given without time conditioning, an unknown or unbuilt
                output head.
        """
        outputs = self.outputs if outputs is None else check_streams(outputs, "outputs", self.outputs)
        rows, cols = grid = check_grid(grid)
        check_tensor(img, "img", f"(B, N, {self.img_in.in_features})", 3, self.img_in.in_features)
        check_tensor(txt, "txt", f"(B, N, {self.txt_in.in_features})", 3, self.txt_in.in_features)
        b = img.shape[0]
        if img.shape[1] != rows * cols:
            raise ValueError(f"grid (rows, cols) = ({rows}, {cols}) has {rows * cols} patches but img has "
                             f"{img.shape[1]} tokens")
        if t is not None and self.time_in is None:
            raise ValueError("t must be None: this MMDiT was built with time_conditioning=False")
        if t is not None and (not isinstance(t, Tensor) or t.shape != (b,)):
            raise ValueError(f"t must be None or a (B,) = ({b},) tensor of times in [0, 1], got {shape_of(t)}")
        check_like(first_parameter(self), "the MMDiT", {"img": img, "txt": txt, "t": t}, ("t",))
        freqs = self.rope_tables(txt.shape[1], grid, img.device)
        vec = self.time_in(t) if t is not None else None
        img = self.img_in(img)
        txt = self.txt_in(txt)
        mask = latent_causal_mask(txt.shape[1], img.shape[1], img.device) if self.spec.latent_attention == "causal" else None
        ckpt = self.spec.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.double_blocks:
            if ckpt:
                img, txt = checkpoint(block, img, txt, vec, freqs, mask, use_reentrant=False)
            else:
                img, txt = block(img, txt, vec, freqs, mask)
        img_out = self.final_layer_img(img, vec) if "img" in outputs else None
        txt_out = self.final_layer_txt(txt, vec) if "txt" in outputs else None
        return img_out, txt_out

