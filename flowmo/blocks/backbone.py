"""The MM-DiT backbone used for both FlowMo's encoder and decoder."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..registry import BACKBONES
from ..spec import MMDiTSpec
from .base import Backbone
from .double_block import DoubleStreamBlock
from .embeddings import TimeEmbedding
from .output import FinalLayer
from .rope import RopeTable, flowmo_positions

__all__ = ["MMDiT"]


@BACKBONES.register("mmdit", spec=MMDiTSpec)
class MMDiT(Backbone):
    """Double-stream transformer over [latent tokens, image patches].

    Args:
        spec: sizes (width, heads, depth, RoPE axes, ...).
        patch_dim: channels of an image token (3 * p * p).
        txt_in_dim / txt_out_dim: channels of a latent token in and out.

    ``forward(img, txt, t, grid)`` returns ``(img_out, txt_out)``; pass ``outputs`` to skip a
    head whose result is unused (the release computes and discards them; skipping changes nothing).
    Keys follow the release (``img_in``, ``txt_in``, ``time_in``, ``double_blocks.N``,
    ``final_layer_img``, ``final_layer_txt``).
    """

    def __init__(self, spec: MMDiTSpec, *, patch_dim: int, txt_in_dim: int, txt_out_dim: int):
        super().__init__()
        self.spec = spec
        w = spec.width
        self.time_in = TimeEmbedding(w, time_factor=spec.time_factor)
        self.img_in = nn.Linear(patch_dim, w)
        self.txt_in = nn.Linear(txt_in_dim, w)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(w, spec.heads, spec.mlp_ratio, spec.qkv_bias, spec.softmax_scale)
            for _ in range(spec.depth)
        )
        self.final_layer_img = FinalLayer(w, patch_dim)
        self.final_layer_txt = FinalLayer(w, txt_out_dim)
        self.rope = RopeTable(spec.axes_dim, spec.rope_theta)

    def compile_units(self) -> tuple[nn.Module, ...]:
        """The double-stream blocks: one compiled block serves every block, step and batch size."""
        return tuple(self.double_blocks)

    def rope_tables(self, code_length: int, grid: tuple[int, int], device: torch.device) -> Tensor:
        """The complex rotation table (N, head_dim / 2) for this token layout, built once per
        (layout, device) and cached."""
        return self.rope.get((code_length, tuple(grid)), device,
                             lambda dev: flowmo_positions(code_length, grid, dev))

    def forward(
        self,
        img: Tensor,
        txt: Tensor,
        t: Optional[Tensor],
        grid: tuple[int, int],
        outputs: tuple[str, ...] = ("img", "txt"),
    ) -> tuple[Optional[Tensor], Optional[Tensor]]:
        freqs = self.rope_tables(txt.shape[1], grid, img.device)
        vec = self.time_in(t) if t is not None else None
        img = self.img_in(img)
        txt = self.txt_in(txt)
        ckpt = self.spec.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.double_blocks:
            if ckpt:
                img, txt = checkpoint(block, img, txt, vec, freqs, use_reentrant=False)
            else:
                img, txt = block(img, txt, vec, freqs)
        img_out = self.final_layer_img(img, vec) if "img" in outputs else None
        txt_out = self.final_layer_txt(txt, vec) if "txt" in outputs else None
        return img_out, txt_out
