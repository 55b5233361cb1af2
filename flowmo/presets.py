"""Named specs: the release's FlowMo-Lo / FlowMo-Hi sizes and small presets for CPUs."""

from __future__ import annotations

from typing import Callable

from .spec import FlowMoSpec, LFQSpec, MMDiTSpec

__all__ = ["release_spec", "flowmo_lo", "flowmo_hi", "flowmo_tiny", "flowmo_small", "flowmo_medium",
           "PRESETS", "get_preset"]


def release_spec(
    *,
    mup_width: int = 6,
    enc_mup_width: int = 4,
    enc_depth: int = 8,
    dec_depth: int = 16,
    code_length: int = 256,
    context_dim: int = 18,
    codebook_size_for_entropy: int = 9,
    image_size: int = 256,
    patch_size: int = 4,
    heads: int = 12,
    posttrain_sample_k: int = 8,
) -> FlowMoSpec:
    """The spec of the release for its configuration values (``model.*`` / ``data.*`` keys).

    The release writes widths as multiples of 192: width w gives hidden 192 w, 12 heads and
    RoPE axes [2w, 7w, 7w].
    """

    def backbone(w: int, depth: int) -> MMDiTSpec:
        return MMDiTSpec(width=192 * w, heads=heads, depth=depth, axes_dim=(2 * w, 7 * w, 7 * w))

    return FlowMoSpec.model_validate(
        {
            "image_size": image_size,
            "patch_size": patch_size,
            "code_length": code_length,
            "code_channels": context_dim,
            "encoder": backbone(enc_mup_width, enc_depth),
            "decoder": backbone(mup_width, dec_depth),
            "quantizer": LFQSpec(group_bits=codebook_size_for_entropy),
            "posttrain": {"name": "mode_seeking", "k": posttrain_sample_k},
        }
    )


def flowmo_lo() -> FlowMoSpec:
    """FlowMo-Lo: 18 bits per token, 256 tokens (0.0703 bits per pixel), 945,374,085 parameters."""
    return release_spec(context_dim=18, codebook_size_for_entropy=9)


def flowmo_hi() -> FlowMoSpec:
    """FlowMo-Hi: 56 bits per token, 256 tokens (0.219 bits per pixel), 945,520,081 parameters."""
    return release_spec(context_dim=56, codebook_size_for_entropy=14)


def flowmo_tiny() -> FlowMoSpec:
    """32x32 images, 16 tokens of 18 bits, one encoder and two decoder blocks of width 128 (tests)."""
    return FlowMoSpec(
        image_size=32, patch_size=4, code_length=16, code_channels=18,
        encoder=MMDiTSpec(width=128, heads=4, depth=1, axes_dim=(4, 14, 14)),
        decoder=MMDiTSpec(width=128, heads=4, depth=2, axes_dim=(4, 14, 14)),
        quantizer=LFQSpec(group_bits=9),
    )


def flowmo_small() -> FlowMoSpec:
    """64x64 images, 32 tokens of 18 bits, width 256 (CPU demo and training tests)."""
    return FlowMoSpec(
        image_size=64, patch_size=4, code_length=32, code_channels=18,
        encoder=MMDiTSpec(width=256, heads=4, depth=2, axes_dim=(8, 28, 28)),
        decoder=MMDiTSpec(width=256, heads=4, depth=4, axes_dim=(8, 28, 28)),
        quantizer=LFQSpec(group_bits=9),
    )


def flowmo_medium() -> FlowMoSpec:
    """128x128 images, 64 tokens of 18 bits, width 512 (CPU/GPU benchmarks)."""
    return FlowMoSpec(
        image_size=128, patch_size=4, code_length=64, code_channels=18,
        encoder=MMDiTSpec(width=512, heads=8, depth=4, axes_dim=(8, 28, 28)),
        decoder=MMDiTSpec(width=512, heads=8, depth=8, axes_dim=(8, 28, 28)),
        quantizer=LFQSpec(group_bits=9),
    )


PRESETS: dict[str, Callable[[], FlowMoSpec]] = {
    "flowmo_lo": flowmo_lo,
    "flowmo_hi": flowmo_hi,
    "tiny": flowmo_tiny,
    "small": flowmo_small,
    "medium": flowmo_medium,
}


def get_preset(name: str) -> FlowMoSpec:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)}") from None
