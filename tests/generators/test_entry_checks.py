"""generate() checks its arguments once, and the decoding loop keeps no per-step check: the
overflow of guided or temperature-scaled logits (the sampling kernels' device-side flags) is
refused once, after the loop, naming both settings."""

from __future__ import annotations

import pytest
import torch

from flowmo.generators import AutoregressiveGenerator, MaskGiT


def _perturbed(cls):
    g = cls(vocab_size=8, seq_len=6, num_classes=3, width=32, depth=1, heads=2, mlp_ratio=2.0)
    rng = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn(p.shape, generator=rng) * 0.1)
    return g


@pytest.mark.parametrize("cls", [MaskGiT, AutoregressiveGenerator])
@pytest.mark.parametrize("kw", [dict(cfg_scale=1e300), dict(temperature=1e-300)])
def test_overflowing_settings_are_refused_after_the_loop(cls, kw):
    g = _perturbed(cls)
    with pytest.raises(ValueError, match="cfg_scale .* or temperature .* made the logits overflow float32"):
        g.generate(torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0), **kw)
    out = g.generate(torch.tensor([0, 1]), cfg_scale=3.0, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 6)


def test_maskgit_steps_beyond_the_sequence_are_refused_at_generate():
    with pytest.raises(ValueError, match=r"steps \(each decodes at least one token\) must be an int in \[1, 6\]"):
        _perturbed(MaskGiT).generate(torch.tensor([0]), steps=7)
