"""Analytic FLOP counts of the MM-DiT backbone (multiply-adds count 2)."""

from __future__ import annotations

from flowmo.spec import FlowMoSpec, MMDiTSpec

__all__ = ["backbone_flops", "decoder_flops", "encoder_flops", "attention_flops"]


def backbone_flops(b: MMDiTSpec, n_img: int, n_txt: int, patch_dim: int, txt_in: int, txt_out: int,
                   timed: bool, heads_out: tuple[str, ...]) -> int:
    """FLOPs of one forward pass for one image."""
    w, r = b.width, b.mlp_ratio
    hidden = int(w * r)
    n = n_img + n_txt
    per_token = 2 * w * 3 * w + 2 * w * w + 2 * 2 * w * hidden  # qkv, proj, MLP
    block = n * per_token + 2 * 2 * n * n * w  # + QK^T and AV over all heads
    if timed:
        block += 2 * 2 * w * 6 * w  # two modulations (one vector per image)
    total = b.depth * block
    total += 2 * n_img * patch_dim * w + 2 * n_txt * txt_in * w  # input projections
    if timed:
        total += 2 * (256 * w + w * w)  # time embedding MLP
    if "img" in heads_out:
        total += 2 * n_img * w * patch_dim + (2 * w * 2 * w if timed else 0)
    if "txt" in heads_out:
        total += 2 * n_txt * w * txt_out + (2 * w * 2 * w if timed else 0)
    return total


def decoder_flops(spec: FlowMoSpec) -> int:
    g, p, c = spec.grid_size, spec.patch_size, spec.code_channels
    return backbone_flops(spec.decoder, g * g, spec.code_length, 3 * p * p, c + 1, c + 1, True, ("img",))


def encoder_flops(spec: FlowMoSpec) -> int:
    g, p, c = spec.grid_size, spec.patch_size, spec.code_channels
    return backbone_flops(spec.encoder, g * g, spec.code_length, 3 * p * p, c, c, False, ("txt",))


def attention_flops(b: MMDiTSpec, spec: FlowMoSpec) -> int:
    """The QK^T and AV part of one image's forward pass (inside the SDPA kernel)."""
    n = spec.grid_size**2 + spec.code_length
    return b.depth * 2 * 2 * n * n * b.width
