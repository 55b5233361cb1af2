"""Guidance, top-k and temperature sampling on hand-worked logits."""

import math

import numpy as np
import pytest
import torch

from flowmo.generators.sampling import guide, gumbel_noise, sample_logits, top_k_filter


def test_guide_hand():
    c = torch.tensor([1.0, 0.9, 0.0])
    u = torch.tensor([1.0, 0.0, 0.0])
    assert torch.allclose(guide(c, u, 3.0), torch.tensor([1.0, 2.7, 0.0]))
    assert torch.equal(guide(c, u, 0.0), u)


def test_top_k_hand():
    x = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    out = top_k_filter(x, 2)
    assert torch.equal(out, torch.tensor([[-math.inf, 2.0, -math.inf, 1.0]]))
    assert top_k_filter(x, None) is x
    assert torch.equal(top_k_filter(x, 4), x)


def test_temperature_zero_is_argmax_without_draws():
    x = torch.randn(5, 7, 11)
    g = torch.Generator().manual_seed(0)
    state = g.get_state()
    assert torch.equal(sample_logits(x, 0.0, generator=g), x.argmax(-1))
    assert torch.equal(g.get_state(), state)  # no random draw made


def test_top_k_one_is_argmax_at_any_temperature():
    x = torch.randn(64, 10)
    for temperature in (0.5, 1.0, 100.0):
        got = sample_logits(top_k_filter(x, 1), temperature, generator=torch.Generator().manual_seed(1))
        assert torch.equal(got, x.argmax(-1))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_frequencies_match_softmax(temperature):
    logits = torch.tensor([0.0, 1.0, -0.5, 2.0])
    n = 40000
    draws = sample_logits(logits.expand(n, 4), temperature, generator=torch.Generator().manual_seed(2))
    freq = np.bincount(draws.numpy(), minlength=4) / n
    z = np.exp(logits.numpy() / temperature)
    expected = z / z.sum()
    assert np.abs(freq - expected).max() < 0.012


def test_filtered_tokens_never_drawn():
    logits = top_k_filter(torch.tensor([0.0, 0.1, 0.2, 5.0, 0.3]).expand(5000, 5), 3)
    draws = sample_logits(logits, 3.0, generator=torch.Generator().manual_seed(3))
    assert set(draws.unique().tolist()) <= {2, 3, 4}


def test_gumbel_moments():
    g = gumbel_noise((200000,), generator=torch.Generator().manual_seed(4))
    assert torch.isfinite(g).all()
    assert abs(g.double().mean().item() - 0.5772156649) < 0.01          # Euler-Mascheroni constant
    assert abs(g.double().var().item() - math.pi ** 2 / 6) < 0.03


@pytest.mark.parametrize("call, name", [
    (lambda: guide(torch.zeros(3), torch.zeros(4), 1.0), "cond"),
    (lambda: guide(torch.zeros(3), torch.zeros(3), -1.0), "scale"),
    (lambda: top_k_filter(torch.zeros(3), 0), "k"),
    (lambda: top_k_filter(torch.zeros(3), 4), "k"),
    (lambda: sample_logits(torch.zeros(3), -0.1), "temperature"),
    (lambda: sample_logits(torch.zeros(3), float("nan")), "temperature"),
    (lambda: sample_logits(torch.zeros(3, dtype=torch.long), 1.0), "logits"),
])
def test_bad_arguments_named(call, name):
    with pytest.raises((TypeError, ValueError), match=name):
        call()


def test_overflowing_guidance_or_temperature_is_refused_not_turned_into_token_zero():
    import pytest
    import torch

    from flowmo.generators.sampling import guide, sample_logits

    cond, uncond = torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([[1.0, -2.0, 0.0]])
    with pytest.raises(ValueError, match="cfg_scale .* overflow"):
        guide(cond, uncond, 1e300)
    assert torch.isfinite(guide(cond, uncond, 100.0)).all()
    with pytest.raises(ValueError, match="temperature .* too small"):
        sample_logits(cond, 1e-300, generator=torch.Generator().manual_seed(0))
    # -inf entries of a top-k filter are not an overflow
    filtered = torch.tensor([[-torch.inf, 3.0, 1.0]])
    assert sample_logits(filtered, 1e-3, generator=torch.Generator().manual_seed(0)).item() == 1
