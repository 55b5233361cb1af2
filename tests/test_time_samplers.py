"""Training-time samplers: shift, logit-normal, the release's fat mix, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.losses import FatLogitNormalTime, LogitNormalTime, UniformTime, shift_time
from flowmo.registry import TIME_SAMPLERS
from flowmo.spec import FatLogitNormalTimeSpec, LogitNormalTimeSpec, TimeSamplerSpec, UniformTimeSpec

FAST = settings(max_examples=30, deadline=None, derandomize=True, database=None)
shifts = st.floats(0.05, 20.0)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@FAST
@given(shifts)
def test_shift_maps_unit_interval_onto_itself_monotonically(s):
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    y = shift_time(t, s)
    assert float(y[0]) == 0.0 and float(y[-1]) == 1.0  # exactly
    assert (y >= 0).all() and (y <= 1).all()
    assert (y.diff() > 0).all()
    # and it is the map s t / (1 + (s - 1) t), with inverse shift 1 / s
    torch.testing.assert_close(y, s * t / (1 + (s - 1) * t))
    torch.testing.assert_close(shift_time(y, 1 / s), t)


@FAST
@given(shifts, st.floats(0.0, 1.0))
def test_shift_direction(s, t):
    y = float(shift_time(torch.tensor([t], dtype=torch.float64), s))
    if s > 1:
        assert y >= t - 1e-15  # mass moves towards t = 1 (noise)
    elif s < 1:
        assert y <= t + 1e-15


def test_shift_one_is_identity():
    t = torch.rand(100)
    assert shift_time(t, 1.0) is t


@FAST
@given(st.sampled_from(["uniform", "logit_normal", "fat_logit_normal"]), shifts, st.integers(0, 2**32 - 1))
def test_shifted_draws_are_shifted_plain_draws(name, s, seed):
    spec = TimeSamplerSpec.model_validate({"name": name, "shift": s})
    plain = TimeSamplerSpec.model_validate({"name": name})
    a = TIME_SAMPLERS.create(name, spec).sample(500, generator=_gen(seed), dtype=torch.float64)
    b = TIME_SAMPLERS.create(name, plain).sample(500, generator=_gen(seed), dtype=torch.float64)
    torch.testing.assert_close(a, shift_time(b, s))
    assert (a >= 0).all() and (a <= 1).all()


@pytest.mark.parametrize("mean,std", [(0.0, 1.0), (1.0, 0.5), (-2.0, 1.5)])
def test_logit_normal_median_and_spread(mean, std):
    t = LogitNormalTime(LogitNormalTimeSpec(mean=mean, std=std)).sample(200_000, generator=_gen(1),
                                                                        dtype=torch.float64)
    # sigmoid is monotone: the median of t is sigmoid(mean), quartiles sigmoid(mean +- 0.6745 std)
    assert float(t.median()) == pytest.approx(1 / (1 + math.exp(-mean)), abs=0.01)
    q1, q3 = torch.quantile(t[:100_000], torch.tensor([0.25, 0.75], dtype=torch.float64)).tolist()
    assert q1 == pytest.approx(1 / (1 + math.exp(-(mean - 0.6745 * std))), abs=0.01)
    assert q3 == pytest.approx(1 / (1 + math.exp(-(mean + 0.6745 * std))), abs=0.01)
    logit = torch.logit(t.clamp(1e-12, 1 - 1e-12))
    assert float(logit.mean()) == pytest.approx(mean, abs=0.02)
    assert float(logit.std()) == pytest.approx(std, rel=0.02)


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 1.0])
def test_fat_logit_normal_uniform_fraction(fraction):
    """A narrow logit-normal puts almost nothing outside [0.4, 0.6]; the uniform part puts 80% there."""
    n = 200_000
    spec = FatLogitNormalTimeSpec(mean=0.0, std=0.05, uniform_fraction=fraction)
    t = FatLogitNormalTime(spec).sample(n, generator=_gen(2), dtype=torch.float64)
    outside = float(((t < 0.4) | (t > 0.6)).double().mean())
    # P(logit-normal outside) = P(|N| > logit(0.6) / 0.05 ~ 8.1) ~ 0: so outside ~ 0.8 * fraction
    estimated_fraction = outside / 0.8
    sd = math.sqrt(max(fraction * (1 - fraction), 1e-6) / n) / 0.8
    assert abs(estimated_fraction - fraction) <= max(5 * sd, 1e-3)


def test_fat_logit_normal_release_default_matches_mixture_cdf():
    # release default: sigmoid(N(0, 1)) with probability 0.9, U(0, 1) with probability 0.1
    t = FatLogitNormalTime(FatLogitNormalTimeSpec()).sample(200_000, generator=_gen(3), dtype=torch.float64)
    for x in (0.05, 0.2, 0.5, 0.7, 0.95):
        logit = math.log(x / (1 - x))
        cdf = 0.9 * 0.5 * (1 + math.erf(logit / math.sqrt(2))) + 0.1 * x
        assert float((t <= x).double().mean()) == pytest.approx(cdf, abs=0.006)


@pytest.mark.parametrize("sampler", [
    UniformTime(UniformTimeSpec(shift=2.0)),
    LogitNormalTime(LogitNormalTimeSpec()),
    FatLogitNormalTime(FatLogitNormalTimeSpec()),
], ids=["uniform", "logit_normal", "fat_logit_normal"])
def test_generator_reproducibility(sampler):
    a = sampler.sample(1000, generator=_gen(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = sampler.sample(1000, generator=_gen(7))
    assert torch.equal(a, b)
    c = sampler.sample(1000, generator=_gen(8))
    assert not torch.equal(a, c)
    g = _gen(7)
    first, second = sampler.sample(500, generator=g), sampler.sample(500, generator=g)
    assert not torch.equal(first, second)
    # without a generator the global RNG is used
    torch.manual_seed(5)
    d = sampler(100)
    torch.manual_seed(5)
    assert torch.equal(d, sampler(100))


@FAST
@given(st.sampled_from([torch.float32, torch.float64, torch.float16, torch.bfloat16]), st.integers(0, 50))
def test_dtype_and_shape(dtype, n):
    for sampler in (UniformTime(UniformTimeSpec(shift=0.2)), FatLogitNormalTime(FatLogitNormalTimeSpec(std=4.0))):
        t = sampler.sample(n, generator=_gen(n), dtype=dtype)
        assert t.dtype == dtype and t.shape == (n,)
        assert (t >= 0).all() and (t <= 1).all()


@pytest.mark.parametrize("n", [-1, 1.5, "3"])
def test_bad_n(n):
    with pytest.raises(ValueError, match="n must be"):
        UniformTime(UniformTimeSpec()).sample(n)


def test_uniform_is_uniform():
    t = UniformTime(UniformTimeSpec()).sample(200_000, generator=_gen(4), dtype=torch.float64)
    hist = torch.histc(t, bins=10, min=0, max=1) / len(t)
    assert (hist - 0.1).abs().max() < 0.005
    assert float(t.mean()) == pytest.approx(0.5, abs=0.003)
