"""The Frechet distance (flowmo.metrics.frechet_distance): exact values on rank-deficient and
large-valued inputs (issue 16, fault 7), closed forms, non-negativity, clear errors, and the
evaluator's rFID on rank-deficient features.

Expected values are computed independently of the implementation: closed forms written out by
hand (rank-1 covariances, diagonal / commuting / scaled covariances, 1-D Gaussians) and
``scipy.linalg.sqrtm`` in float64 of the symmetric PSD matrix ``S1^1/2 S2 S1^1/2``.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import linalg
from torch import nn

from flowmo.metrics import Evaluator
from flowmo.metrics.codebook import codebook_statistics
from flowmo.metrics.feature_stats import FeatureStats, feature_statistics
from flowmo.metrics.frechet import frechet_distance


def _two_sample_closed_form(a: np.ndarray, b: np.ndarray) -> float:
    """FD of the Gaussians fitted to 2 samples each: the covariances are rank 1, ``u u^T`` with
    ``u = (a0 - a1) / sqrt(2)`` (np.cov's N - 1 = 1), and ``tr sqrt(S1^1/2 S2 S1^1/2) = |u . v|``."""
    u = (a[0] - a[1]) / math.sqrt(2.0)
    v = (b[0] - b[1]) / math.sqrt(2.0)
    d = a.mean(0) - b.mean(0)
    return float(d @ d + u @ u + v @ v - 2.0 * abs(u @ v))


def _sqrtm_reference(mu1, s1, mu2, s2) -> float:
    """|mu1 - mu2|^2 + tr S1 + tr S2 - 2 tr sqrtm(R S2 R), R = sqrtm(S1), by scipy in float64."""
    r = np.real(linalg.sqrtm(s1))
    m = r @ s2 @ r
    root = np.real(linalg.sqrtm(0.5 * (m + m.T)))
    d = mu1 - mu2
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(root))


# ------------------------------------------------------------------------- the cases
def test_two_samples_of_4d_features_spread_100_is_exact():
    """Issue 16: these raised 'significant imaginary part' (an absolute 1e-3 test on sqrtm's
    imaginary part); the exact value is 49932.18..."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 4)) * 100, rng.normal(size=(2, 4)) * 100
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    want = _two_sample_closed_form(a, b)
    assert want == pytest.approx(49932.18350652, rel=1e-10)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("spread", [1e-3, 1.0, 100.0, 1e4])
@pytest.mark.parametrize("seed", range(4))
def test_two_sample_sets_match_the_rank_one_closed_form(spread, seed):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(2, 40))
    a = rng.normal(size=(2, d)) * spread + rng.normal(size=d) * spread
    b = rng.normal(size=(2, d)) * spread
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_two_sample_closed_form(a, b), rel=1e-6)


def test_a_set_against_itself_is_never_negative():
    """Issue 16: 32 samples of high-dimensional features against themselves came out negative
    (-8e-4 at 2048-d; already -6e-6 at 128-d with scipy's sqrtm)."""
    rng = np.random.default_rng(0)
    f = rng.normal(size=(32, 128))
    mu, s = feature_statistics(f)
    assert frechet_distance(mu, s, mu, s) == 0.0
    mu2, s2 = feature_statistics(f[rng.permutation(32)])  # equal up to round-off, not bitwise
    assert not np.array_equal(s, s2)
    v = frechet_distance(mu, s, mu2, s2)
    assert 0.0 <= v <= 1e-10 * (np.trace(s) + np.trace(s2))


# ------------------------------------------------------------------------- closed forms
def test_one_dimensional_gaussians():
    # W2^2 of N(m1, a^2), N(m2, b^2) is (m1 - m2)^2 + (a - b)^2
    for m1, m2, a, b in [(0.0, 3.0, 1.0, 2.0), (1e3, -1e3, 1e-3, 5e2), (2.0, 2.0, 0.0, 7.0)]:
        got = frechet_distance([m1], [[a * a]], [m2], [[b * b]])
        assert got == pytest.approx((m1 - m2) ** 2 + (a - b) ** 2, rel=1e-12, abs=1e-12)


def test_scaled_covariance_and_zero_covariances():
    rng = np.random.default_rng(2)
    d = 12
    x = rng.normal(size=(d, 5))
    s = x @ x.T  # rank 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    dd = float((mu1 - mu2) @ (mu1 - mu2))
    for c in (0.0, 0.3, 1.0, 4.0):
        # S2 = c^2 S: sqrt(S^1/2 c^2 S S^1/2) = c S, so FD = |dmu|^2 + (1 - c)^2 tr S
        want = dd + (1 - c) ** 2 * np.trace(s)
        assert frechet_distance(mu1, s, mu2, c * c * s) == pytest.approx(want, rel=1e-10, abs=1e-10)
    z = np.zeros((d, d))
    assert frechet_distance(mu1, z, mu2, z) == pytest.approx(dd, rel=1e-14)
    assert frechet_distance(mu1, z, mu1, s) == pytest.approx(np.trace(s), rel=1e-12)


def test_rank_one_covariances_in_general_position():
    rng = np.random.default_rng(3)
    for scale in (1e-3, 1.0, 1e3):
        u, v = rng.normal(size=30) * scale, rng.normal(size=30) * scale
        got = frechet_distance(np.zeros(30), np.outer(u, u), np.zeros(30), np.outer(v, v))
        assert got == pytest.approx(u @ u + v @ v - 2 * abs(u @ v), rel=1e-9)


def test_full_rank_matches_scipy_sqrtm_of_the_symmetric_product():
    rng = np.random.default_rng(4)
    for d in (3, 10, 40):
        a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
        s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
        mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
        assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_sqrtm_reference(mu1, s1, mu2, s2), rel=1e-9)


# ------------------------------------------------------------------------- properties
def _features(n, d, rank, scale, seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, rank)) @ rng.normal(size=(rank, d))
    return f * scale + rng.normal(size=d) * scale * 3


_sets = st.tuples(
    st.integers(2, 40),  # samples
    st.integers(1, 24),  # dimension
    st.floats(0.0, 1.0),  # rank fraction
    st.floats(-3.0, 3.0),  # log10 scale
    st.integers(0, 2**31 - 1),
)


def _unpack(spec):
    n, d, frac, log_scale, seed = spec
    rank = max(1, min(d, round(frac * d)))
    return n, d, rank, 10.0**log_scale, seed


@settings(max_examples=60, deadline=None)
@given(_sets)
def test_a_set_against_itself_is_zero_or_tiny_non_negative(spec):
    n, d, rank, scale, seed = _unpack(spec)
    f = _features(n, d, rank, scale, seed)
    mu, s = feature_statistics(f)
    assert frechet_distance(mu, s, mu, s) == 0.0
    # the same rows in another order (and streamed): equal statistics up to round-off
    perm = np.random.default_rng(seed + 1).permutation(n)
    acc = FeatureStats()
    for chunk in np.array_split(f[perm], 3):
        acc.update(chunk)
    mu2, s2 = acc.statistics()
    v = frechet_distance(mu, s, mu2, s2)
    assert 0.0 <= v <= 1e-9 * (np.trace(s) + np.trace(s2) + float(mu @ mu)) + 1e-300


@settings(max_examples=40, deadline=None)
@given(_sets, _sets)
def test_non_negative_symmetric_and_scales_quadratically(spec_a, spec_b):
    n, d, rank, scale, seed = _unpack(spec_a)
    n2, _, rank2, scale2, seed2 = _unpack(spec_b)
    a = _features(n, d, rank, scale, seed)
    b = _features(n2, d, min(rank2, d), scale2, seed2)
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    ab, ba = frechet_distance(mu1, s1, mu2, s2), frechet_distance(mu2, s2, mu1, s1)
    size = np.trace(s1) + np.trace(s2) + float((mu1 - mu2) @ (mu1 - mu2))
    assert ab >= 0.0 and ba >= 0.0
    assert abs(ab - ba) <= 1e-9 * size
    # d(c x, c y) = c^2 d(x, y); a common shift of the means changes nothing
    c = 7.0
    assert abs(frechet_distance(c * mu1, c * c * s1, c * mu2, c * c * s2) - c * c * ab) <= 1e-9 * c * c * size
    shift = np.full(d, 3.0 * scale)
    assert abs(frechet_distance(mu1 + shift, s1, mu2 + shift, s2) - ab) <= 1e-9 * size


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 10), st.floats(-3.0, 3.0), st.integers(0, 2**31 - 1))
def test_rank_deficient_pairs_match_scipy_on_the_common_subspace(rank, log_scale, seed):
    """Covariances of rank r inside the same r-dimensional subspace of R^20: the distance equals
    the full-rank r-dimensional one, computed by scipy's sqrtm there."""
    rng = np.random.default_rng(seed)
    scale = 10.0**log_scale
    q, _ = np.linalg.qr(rng.normal(size=(20, rank)))  # (20, r) orthonormal columns
    a, b = rng.normal(size=(rank, rank)), rng.normal(size=(rank, rank))
    c1, c2 = (a @ a.T + 0.5 * np.eye(rank)) * scale**2, (b @ b.T + 0.5 * np.eye(rank)) * scale**2
    m1, m2 = rng.normal(size=rank) * scale, rng.normal(size=rank) * scale
    want = _sqrtm_reference(m1, c1, m2, c2)
    got = frechet_distance(q @ m1, q @ c1 @ q.T, q @ m2, q @ c2 @ q.T)
    assert got == pytest.approx(want, rel=1e-7, abs=1e-9 * (np.trace(c1) + np.trace(c2)))


# ------------------------------------------------------------------------- errors
def test_errors_say_why():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="sigma1 is not symmetric"):
        frechet_distance(mu, np.array([[1.0, 0.5, 0], [0, 1, 0], [0, 0, 1]]), mu, s)
    with pytest.raises(ValueError, match="sigma2 is not positive semi-definite"):
        frechet_distance(mu, s, mu, np.diag([1.0, -0.5, 1.0]))
    with pytest.raises(ValueError, match="mu2 contains non-finite"):
        frechet_distance(mu, s, np.array([0, np.inf, 0]), s)
    with pytest.raises(ValueError, match="sigma1 contains non-finite"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, s)
    with pytest.raises(ValueError, match="different dimensions"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2 has shape"):
        frechet_distance(mu, s, mu, np.eye(4))
    with pytest.raises(ValueError, match="mu1 is empty"):
        frechet_distance(np.zeros(0), np.zeros((0, 0)), mu, s)
    with pytest.raises(ValueError, match="mu1 must be numeric"):
        frechet_distance(["a", "b", "c"], s, mu, s)
    with pytest.raises(ValueError, match="overflows"):
        frechet_distance(np.full(3, 1e200), s, -np.full(3, 1e200), s)
    with pytest.raises(ValueError, match="at least 2 rows"):
        feature_statistics(np.zeros((1, 3)))
    # round-off-sized asymmetry and negative eigenvalues are accepted (as float32 covariances have)
    f = np.random.default_rng(5).normal(size=(50, 6))
    s32 = np.cov(f.astype(np.float32), rowvar=False).astype(np.float32).astype(np.float64)
    s32[0, 1] += 1e-7
    assert frechet_distance(f.mean(0), s32, f.mean(0), s32) == 0.0


def test_codebook_entropy_of_a_single_code_is_plus_zero():
    h = codebook_statistics(np.array([0, 9, 0]), 3)["entropy_bits"]
    assert h == 0.0 and math.copysign(1.0, h) == 1.0  # not -0.0 in metrics.json


# ------------------------------------------------------------------------- the evaluator
class _LargeLowRankFeatures(nn.Module):
    """(B, 3, H, W) -> (B, 4) features of spread ~100 (per-channel means, scaled)."""

    def forward(self, x):
        m = x.mean(dim=(2, 3))  # (B, 3)
        return 100.0 * torch.cat([m, m[:, :1] - m[:, 1:2]], dim=1) + 300.0


def test_evaluator_rfid_on_rank_deficient_large_features():
    """2 images, 4-d features of spread ~100: rank-1 covariances. compute() used to fail here."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    r = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    net = _LargeLowRankFeatures()
    ev = Evaluator(lpips=(), inception=net)
    ev.update(x, r)
    res = ev.compute()
    q = (lambda t: torch.round((t.double() + 1) * 127.5).clamp(0, 255).float() / 127.5 - 1)
    with torch.no_grad():
        fa, fb = net(q(x)).double().numpy(), net(q(r)).double().numpy()
    assert res["rfid"] == pytest.approx(_two_sample_closed_form(fa, fb), rel=1e-6)
    assert res["rfid"] > 1.0
    same = Evaluator(lpips=(), inception=net)
    same.update(x, x)
    assert same.compute()["rfid"] == 0.0
