"""Bad input to the metrics (flowmo.metrics, the Evaluator): clear ValueErrors naming the
argument, never a silent wrong value; exact values where the input is valid but extreme.

Expected values are closed forms written out here (1-D Gaussians:
``(mu1 - mu2)^2 + (sqrt(s1) - sqrt(s2))^2``; PSNR ``10 log10(255^2 / mse)``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from flowmo.metrics import Evaluator
from flowmo.metrics.feature_stats import FeatureStats, feature_statistics
from flowmo.metrics.pixel import batched_psnr, psnr, ssim
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.eight_bit import quantise_pair


def _fd_1d(m1, s1, m2, s2) -> float:
    return (m1 - m2) ** 2 + (math.sqrt(s1) - math.sqrt(s2)) ** 2


# ------------------------------------------------------------------ Frechet distance near float64's max
@pytest.mark.parametrize("s1,s2", [(1e308, 0.0), (9e307, 1e307), (1.7e308, 1.6e308), (1.7e308, 1e-300),
                                   (1e-320, 0.0), (5e-324, 5e-324 * 4)])
def test_frechet_1d_extreme_variances_exact(s1, s2):
    want = _fd_1d(0.0, s1, 0.0, s2)
    got = frechet_distance([0.0], [[s1]], [0.0], [[s2]])
    assert math.isfinite(got) and got >= 0.0
    assert got == pytest.approx(want, rel=1e-12, abs=0.0)
    assert frechet_distance([0.0], [[s2]], [0.0], [[s1]]) == pytest.approx(want, rel=1e-12, abs=0.0)


def test_frechet_the_testers_cases():
    assert frechet_distance([0.0], [[1e308]], [0.0], [[0.0]]) == pytest.approx(1e308, rel=1e-12)
    assert frechet_distance([0.0], [[9e307]], [0.0], [[1e307]]) == pytest.approx(4e307, rel=1e-12)


def test_frechet_huge_full_covariances_scale_exactly():
    """d^2 is homogeneous of degree 1 in (S1, S2) at equal means: scaling both by 2^1000 scales
    the result by 2^1000 (the computation no longer overflows on the way)."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    s1, s2 = s1 / np.abs(s1).max(), s2 / np.abs(s1).max()
    mu = np.zeros(4)
    base = frechet_distance(mu, s1, mu, s2)
    big = frechet_distance(mu, np.ldexp(s1, 1020), mu, np.ldexp(s2, 1020))
    assert big == pytest.approx(math.ldexp(base, 1020), rel=1e-10)


def test_frechet_overflowing_result_raises():
    with pytest.raises(ValueError, match="overflows"):
        frechet_distance([0.0], [[1.7e308]], [0.0], [[0.0]]) + frechet_distance([1e200], [[1.0]], [-1e200], [[1.0]])


def test_frechet_nan_inside_raises_not_rank_zero(monkeypatch):
    """A NaN arising inside (here: forced from eigh) raises the documented ValueError."""
    real = np.linalg.eigh

    def nan_eigh(a):
        w, v = real(a)
        return np.full_like(w, np.nan), v

    monkeypatch.setattr(np.linalg, "eigh", nan_eigh)
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance([0.0], [[1.0]], [0.0], [[2.0]])


def test_frechet_huge_asymmetric_matrix_still_refused():
    with pytest.raises(ValueError, match="sigma2 is not symmetric"):
        frechet_distance([0.0, 0.0], np.eye(2), [0.0, 0.0], [[1e308, 1e308], [-1e308, 1e308]])


@pytest.mark.parametrize("bad", [np.array([[1.0 + 1j]]), torch.ones(1, 1, dtype=torch.complex64),
                                 np.array([[True]]), [["1.0"]], torch.ones(1, 1, device="meta")])
def test_frechet_refuses_non_real_inputs(bad):
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance([0.0], [[1.0]], [0.0], bad)


# ------------------------------------------------------------------ feature statistics
def test_feature_statistics_overflowing_covariance_names_features():
    x = np.random.default_rng(0).normal(size=(5, 3)) * 1e200
    with pytest.raises(ValueError, match="features"):
        feature_statistics(x)
    with pytest.raises(ValueError, match="features"):
        FeatureStats().update(x)


def test_feature_statistics_large_but_representable_is_exact():
    """Centred values 1.3e154: their squares sum past float64's max in np.cov, the covariance
    (that sum / 2) does not; it is computed (exactly scaled, per column) instead of inf, and a
    small column next to the huge one keeps its own variance."""
    x = np.array([[1.3e154, 0.0], [-1.3e154, 1.0], [0.0, 2.0]])
    with np.errstate(over="ignore"):
        assert not np.all(np.isfinite(np.cov(x, rowvar=False)))  # the plain computation overflows
    mu, sigma = feature_statistics(x)
    assert np.all(np.isfinite(sigma))
    # by hand: column means (0, 1); centred columns (1.3e154, -1.3e154, 0) and (-1, 0, 1); N - 1 = 2
    assert sigma[0, 0] == pytest.approx(1.3e154**2, rel=1e-15)  # (2 * 1.3e154^2) / 2
    assert sigma[1, 1] == 1.0
    assert sigma[0, 1] == sigma[1, 0] == pytest.approx(-1.3e154 / 2, rel=1e-15)
    np.testing.assert_array_equal(mu, [0.0, 1.0])


def test_feature_statistics_huge_mean_does_not_overflow():
    """The plain mean's sum overflows; the mean itself (and the covariance) are representable."""
    x = np.array([[1.7e308, 1.0], [1.7e308, 3.0]])
    mu, sigma = feature_statistics(x)
    np.testing.assert_array_equal(mu, [1.7e308, 2.0])
    np.testing.assert_array_equal(sigma, [[0.0, 0.0], [0.0, 2.0]])
    st = FeatureStats().update(x)
    mu2, sigma2 = st.statistics()
    np.testing.assert_array_equal(mu2, [1.7e308, 2.0])
    np.testing.assert_array_equal(sigma2, [[0.0, 0.0], [0.0, 2.0]])


@pytest.mark.parametrize("bad,what", [
    (np.ones((3, 2)) * (1 + 1j), "complex"),
    (torch.ones(3, 2, dtype=torch.complex128), "complex"),
    (np.ones((3, 2), dtype=bool), "real"),
    (torch.ones(3, 2, dtype=torch.bool), "real"),
    ([["1", "2"], ["3", "4"]], "real"),
    (torch.ones(3, 2, device="meta"), "meta"),
])
def test_feature_statistics_refuses_non_real(bad, what):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ComplexWarning: refused before any cast
        with pytest.raises(ValueError, match=f"features.*{what}|{what}.*features"):
            feature_statistics(bad)
        with pytest.raises(ValueError, match="features"):
            FeatureStats().update(bad)


@pytest.mark.parametrize("dim", [True, False, 0, -1, 2.0, "3"])
def test_feature_stats_dim_refuses_bools_and_non_ints(dim):
    with pytest.raises(ValueError, match="dim"):
        FeatureStats(dim=dim)


def test_feature_stats_dim_accepts_numpy_int():
    assert FeatureStats(dim=np.int64(3)).dim == 3


@pytest.mark.parametrize("state,key", [
    ({"count": "3"}, "count"),
    ({"count": True, "dim": 2}, "count"),
    ({"count": -1, "dim": 2}, "count"),
    ({"count": 2.0, "dim": 2}, "count"),
    ({}, "count"),
    ({"count": 2, "dim": True}, "dim"),
    ({"count": 2, "dim": None}, "dim"),
    ({"count": 2, "dim": 2, "sum": np.zeros(2), "sum_outer": np.zeros((2, 2))}, "shift"),
    ({"count": 2, "dim": 2, "shift": np.zeros(3), "sum": np.zeros(2), "sum_outer": np.zeros((2, 2))}, "shift"),
    ({"count": 2, "dim": 2, "shift": np.zeros(2), "sum": np.array([np.nan, 0]), "sum_outer": np.zeros((2, 2))},
     "sum"),
    ({"count": 2, "dim": 2, "shift": np.zeros(2), "sum": np.zeros(2), "sum_outer": "x"}, "sum_outer"),
    ("not a dict", "state"),
])
def test_feature_stats_from_state_dict_names_the_key(state, key):
    with pytest.raises(ValueError, match=key):
        FeatureStats.from_state_dict(state)


def test_feature_stats_state_dict_round_trip_still_works():
    rng = np.random.default_rng(1)
    st = FeatureStats().update(rng.normal(size=(7, 3)))
    back = FeatureStats.from_state_dict(st.state_dict())
    for a, b in zip(st.statistics(), back.statistics()):
        np.testing.assert_array_equal(a, b)
    empty = FeatureStats.from_state_dict(FeatureStats(dim=4).state_dict())
    assert empty.count == 0 and empty.dim == 4


def test_feature_stats_overflowing_statistics_and_merge_raise():
    a = FeatureStats().update(np.array([[1e150], [-1e150]]))
    b = FeatureStats().update(np.array([[-1.7e308], [-1.7e308]]))
    with pytest.raises(ValueError, match="overflow"):
        a.merge(b)
    assert a.count == 2  # unchanged by the refused merge


# ------------------------------------------------------------------ batched PSNR
def test_batched_psnr_huge_mse_is_a_value_not_overflowerror():
    got = batched_psnr([1e308, 1e308])
    assert got == pytest.approx(10 * math.log10(255**2 / 1e308), rel=1e-12)


def test_batched_psnr_subnormal_mse_is_finite():
    got = batched_psnr([1e-320])
    assert math.isfinite(got)
    assert got == pytest.approx(10 * (2 * math.log10(255) - math.log10(1e-320)), rel=1e-12)


def test_batched_psnr_ordinary_values_unchanged():
    m = [3.0, 5.0, 7.0, 11.0, 13.0, 17.0]
    want = (10 * math.log10(255**2 / (39.0 / 5)) + 10 * math.log10(255**2 / 17.0)) / 2
    assert batched_psnr(m) == want


@pytest.mark.parametrize("bad", [[1 + 1j], np.array([True, False]), ["3"]])
def test_batched_psnr_refuses_non_real(bad):
    with pytest.raises(ValueError, match="mse"):
        batched_psnr(bad)


# ------------------------------------------------------------------ value range of psnr / ssim
def _img(seed=0, shape=(2, 3, 16, 16)):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("fn", [psnr, ssim, quantise_pair])
@pytest.mark.parametrize("protocol", ["standard", "release"])
def test_images_in_0_255_are_refused_naming_the_argument(fn, protocol):
    x = _img()
    u8 = (x + 1) * 127.5
    with pytest.raises(ValueError, match=r"originals.*\[0, 255\]"):
        fn(u8, u8, protocol)
    with pytest.raises(ValueError, match=r"originals.*\[0, 255\]"):
        fn(u8, x, protocol)
    with pytest.raises(ValueError, match=r"reconstructions.*\[0, 255\]"):
        fn(x, u8, protocol)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_originals_outside_unit_range_are_refused(fn):
    x = _img().clamp(-0.99, 0.99)
    for bad in (x * 1.05, x - 0.02, x * 3):
        with pytest.raises(ValueError, match="originals"):
            fn(bad, x)
    # within the 1e-3 tolerance: accepted, and measured as the clamped image
    near = x.clone()
    near[0, 0, 0, 0] = 1.0009
    ref = x.clone()
    ref[0, 0, 0, 0] = 1.0
    assert torch.equal(fn(near, x), fn(ref, x))


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_overshooting_reconstructions_are_clamped(fn):
    """An unclipped sampler's output (some values beyond [-1, 1], dark values present) is
    measured as its clamped image; so is an untrained model's N(0, I)-like output."""
    x = _img()
    over = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert float(over.abs().max()) > 1.0
    assert torch.equal(fn(x, over), fn(x, over.clamp(-1, 1)))
    wild = 4 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    assert torch.equal(fn(x, wild), fn(x, wild.clamp(-1, 1)))


def test_the_testers_case_no_longer_gives_38_db():
    x = _img()
    y = (x + 0.01 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    with pytest.raises(ValueError, match="originals"):
        psnr((x + 1) * 127.5, (y + 1) * 127.5)


def test_evaluator_refuses_0_255_images():
    ev = Evaluator(lpips=(), fid=False)
    x = _img(shape=(2, 3, 16, 16))
    with pytest.raises(ValueError, match="originals"):
        ev.update((x + 1) * 127.5, (x + 1) * 127.5)
    with pytest.raises(ValueError, match="reconstructions"):
        ev.update(x, (x + 1) * 127.5)
    ev.update(x, x * 1.2)  # an overshooting reconstruction: clamped, fine
    assert ev.compute()["psnr"] > 0


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_empty_batch_still_gives_an_empty_result(fn):
    x = torch.zeros(0, 3, 16, 16)
    assert fn(x, x).shape == (0,)
