"""Named sampler settings (use as ``model.decode(code, sampler=SAMPLER_PRESETS["fast"])``)."""

from __future__ import annotations

from typing import Mapping, Optional

from ..spec import SamplerSpec

__all__ = ["SAMPLER_PRESETS", "resolve_preset"]

SAMPLER_PRESETS: dict[str, SamplerSpec] = {
    # the release: 25 Euler steps on pow 0.25, CFG 1.5 on the EDM sigma interval (0.17, 1.02): 31 calls
    "release": SamplerSpec(),
    # the same grid and guidance with 8 steps: 10 calls. On the demo model (README, "Fewer decoder
    # calls") it loses no PSNR against "release" (+0.8 dB, SSIM 0.130 vs 0.103): fewer steps
    # also average more, so check sharpness on your own model before relying on it
    "fast": SamplerSpec(steps=8),
}


def resolve_preset(name: str, model_presets: Optional[Mapping[str, SamplerSpec]] = None) -> SamplerSpec:
    """The sampler a preset ``name`` stands for: the model's own preset of that name
    (``FlowMoSpec.sampler_presets``, e.g. a few-step decoder's ``"distillation-4"``) when it
    has one, else the global :data:`SAMPLER_PRESETS` entry. Raises ValueError listing both
    kinds of names when neither has it."""
    model_presets = model_presets or {}
    if name in model_presets:
        return model_presets[name]
    if name in SAMPLER_PRESETS:
        return SamplerSpec.model_validate(name)
    own = f"; this model's own: {', '.join(model_presets)}" if model_presets else ""
    raise ValueError(f"unknown sampler preset {name!r}; global presets: {', '.join(SAMPLER_PRESETS)}{own} "
                     "(or give a SamplerSpec or a dict of its fields)")
