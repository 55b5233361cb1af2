"""Tests for flowmo.metrics: PSNR/SSIM against scikit-image, Frechet distance, feature stats."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.metrics.feature_stats import FeatureStats, feature_statistics
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.pixel import psnr, ssim
from flowmo.metrics.eight_bit import to_uint8

skimage = pytest.importorskip("skimage")
from scipy import ndimage  # noqa: E402
from skimage import data as skdata  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402


def _to_tensor(u8: np.ndarray) -> torch.Tensor:
    """HWC uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    return (torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1)[None].float() / 127.5) - 1.0


def _from_tensor(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [-1, 1] -> HWC uint8 via the module's quantisation."""
    return to_uint8(t).permute(1, 2, 0).numpy()


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
    )


@pytest.fixture(scope="module")
def photo_pairs():
    """Crops of real photos paired with noisy / blurred / shifted / JPEG-ish distortions."""
    rng = np.random.default_rng(1234)
    crops = [
        skdata.astronaut()[60:188, 180:308],
        skdata.chelsea()[40:168, 150:278],
        skdata.coffee()[100:228, 200:328],
    ]
    pairs = []
    for c in crops:
        noisy = np.clip(c.astype(np.float64) + rng.normal(0, 12, c.shape), 0, 255).round().astype(np.uint8)
        blurred = ndimage.gaussian_filter(c.astype(np.float64), sigma=(1.2, 1.2, 0)).round().astype(np.uint8)
        shifted = np.roll(c, 3, axis=1)
        dark = (c.astype(np.float64) * 0.7).round().astype(np.uint8)
        pairs += [(c, noisy), (c, blurred), (c, shifted), (c, dark), (c, c)]
    return pairs


def test_to_uint8_roundtrip_and_clamp():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    x = u.float() / 127.5 - 1.0
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(x.double()), u)
    y = torch.tensor([-5.0, -1.0, 0.0, 1.0, 7.0]).view(1, 1, 1, 5)
    assert to_uint8(y).flatten().tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds half-to-even
    assert to_uint8(y).dtype == torch.uint8


def test_psnr_matches_skimage(photo_pairs):
    a = torch.cat([_to_tensor(p[0]) for p in photo_pairs])
    b = torch.cat([_to_tensor(p[1]) for p in photo_pairs])
    ours = psnr(a, b)
    assert ours.shape == (len(photo_pairs),)
    for i, (x, y) in enumerate(photo_pairs):
        if np.array_equal(x, y):
            assert math.isinf(ours[i].item()) and ours[i].item() > 0
            continue
        ref = peak_signal_noise_ratio(x, y, data_range=255)
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)


def test_psnr_quantises_before_comparing():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    # Perturbation far below one uint8 step away from rounding boundaries.
    q = to_uint8(x).float() / 127.5 - 1
    assert torch.isinf(psnr(q, q + 1e-4)).all()


def test_ssim_matches_skimage(photo_pairs):
    a = torch.cat([_to_tensor(p[0]) for p in photo_pairs])
    b = torch.cat([_to_tensor(p[1]) for p in photo_pairs])
    ours = ssim(a, b)
    assert ours.shape == (len(photo_pairs),)
    assert ours.dtype == torch.float64
    for i, (x, y) in enumerate(photo_pairs):
        assert ours[i].item() == pytest.approx(_sk_ssim(x, y), abs=1e-4)


def test_ssim_matches_skimage_non_square_and_minimum_size():
    rng = np.random.default_rng(7)
    c = skdata.coffee()
    for h, w in [(11, 11), (13, 40), (57, 23)]:
        x = c[50 : 50 + h, 70 : 70 + w]
        y = np.clip(x.astype(int) + rng.integers(-30, 31, x.shape), 0, 255).astype(np.uint8)
        ours = ssim(_to_tensor(x), _to_tensor(y)).item()
        assert ours == pytest.approx(_sk_ssim(x, y), abs=1e-4)


def test_ssim_matches_skimage_on_unquantised_float_inputs():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1.2, 1.2)  # out-of-range values are clamped
    ours = ssim(x, y)
    for i in range(3):
        ref = _sk_ssim(_from_tensor(x[i]), _from_tensor(y[i]))
        assert ours[i].item() == pytest.approx(ref, abs=1e-4)


def test_ssim_too_small_raises():
    x = torch.zeros(1, 3, 10, 32)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x)


_images = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 3),  # channels
    st.integers(11, 20),
    st.integers(11, 20),
    st.integers(0, 2**31 - 1),
)


def _random_pair(spec):
    b, c, h, w, seed = spec
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g) * 2 - 1
    mode = seed % 3
    if mode == 0:
        y = torch.rand(b, c, h, w, generator=g) * 2 - 1
    elif mode == 1:
        # clamped: the symmetry tests pass y as originals too, which must lie in [-1, 1]
        y = (x + 0.1 * torch.randn(b, c, h, w, generator=g)).clamp(-1, 1)
    else:
        y = -x  # anti-correlated
    return x, y


@settings(max_examples=30, deadline=None)
@given(_images)
def test_psnr_symmetric(spec):
    x, y = _random_pair(spec)
    assert torch.equal(psnr(x, y), psnr(y, x))


@settings(max_examples=30, deadline=None)
@given(_images)
def test_ssim_identical_is_one(spec):
    x, _ = _random_pair(spec)
    s = ssim(x, x)
    assert torch.allclose(s, torch.ones_like(s), atol=1e-12)
    assert torch.isinf(psnr(x, x)).all()


@settings(max_examples=30, deadline=None)
@given(_images)
def test_ssim_bounded_and_symmetric(spec):
    x, y = _random_pair(spec)
    s = ssim(x, y)
    assert bool(((s >= -1.0) & (s <= 1.0)).all())
    assert torch.allclose(s, ssim(y, x), atol=1e-12)


def test_constant_images():
    x = torch.full((1, 3, 16, 16), -1.0)
    y = torch.full((1, 3, 16, 16), 1.0)
    assert psnr(x, y).item() == pytest.approx(0.0, abs=1e-12)
    ref = _sk_ssim(_from_tensor(x[0]), _from_tensor(y[0]))
    assert ssim(x, y).item() == pytest.approx(ref, abs=1e-4)


@pytest.mark.parametrize("fn", [psnr, ssim])
def test_bad_inputs_name_argument(fn):
    good = torch.zeros(1, 3, 16, 16)
    with pytest.raises(ValueError, match="originals"):
        fn(torch.zeros(3, 16, 16), good)
    with pytest.raises(ValueError, match="reconstructions"):
        fn(good, torch.zeros(3, 16, 16))
    with pytest.raises(ValueError, match="originals"):
        fn(torch.zeros(1, 3, 16, 16, dtype=torch.uint8), good)
    with pytest.raises(ValueError, match="reconstructions"):
        fn(good, torch.zeros(1, 3, 16, 16, dtype=torch.int64))
    bad = good.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="originals"):
        fn(bad, good)
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="reconstructions"):
        fn(good, bad)
    with pytest.raises(ValueError, match="reconstructions"):
        fn(good, torch.zeros(1, 3, 16, 17))
    with pytest.raises(ValueError, match="originals"):
        fn(good.numpy(), good)


# --------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------


def test_frechet_closed_form_diagonal():
    rng = np.random.default_rng(0)
    d = 16
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert isinstance(got, float)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-10)


def test_frechet_closed_form_commuting_full_covariances():
    # Covariances sharing eigenvectors: sqrt(S1 S2) = Q sqrt(L1 L2) Q^T.
    rng = np.random.default_rng(1)
    d = 10
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    l1, l2 = rng.uniform(0.2, 2.0, d), rng.uniform(0.2, 2.0, d)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(l1 + l2 - 2 * np.sqrt(l1 * l2))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8, abs=1e-8)


def test_frechet_torch_inputs_and_self_distance():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 12, generator=g) @ torch.randn(12, 12, generator=g)
    mu, sigma = feature_statistics(feats)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    assert abs(frechet_distance(torch.from_numpy(mu), torch.from_numpy(sigma), mu, sigma)) < 1e-6


def test_frechet_singular_covariance_fallback():
    # Rank-deficient covariances (fewer samples than dimensions): must stay finite.
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 20))
    b = rng.normal(size=(5, 20)) + 0.5
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    val = frechet_distance(mu1, s1, mu2, s2)
    assert math.isfinite(val) and val > 0
    zero = np.zeros((20, 20))
    assert frechet_distance(mu1, zero, mu1, zero) == pytest.approx(0.0, abs=1e-4)


def test_frechet_bad_inputs():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="mu1"):
        frechet_distance(np.zeros((3, 1)), s, mu, s)
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(mu, s, mu, np.eye(4))
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(mu, np.ones((3, 2)), mu, s)
    with pytest.raises(ValueError, match="mu2"):
        frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma1"):
        frechet_distance(mu, np.full((3, 3), np.nan), mu, s)


def test_feature_statistics_matches_numpy():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 7)).astype(np.float32)
    mu, sigma = feature_statistics(x)
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x.astype(np.float64), rowvar=False), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="features"):
        feature_statistics(x[:1])
    with pytest.raises(ValueError, match="features"):
        feature_statistics(x[0])


def test_feature_stats_streaming_equals_batch():
    rng = np.random.default_rng(4)
    x = rng.normal(loc=3.0, scale=2.0, size=(1000, 24)) @ rng.normal(size=(24, 24))
    mu, sigma = feature_statistics(x)
    acc = FeatureStats()
    for chunk in np.array_split(x, [1, 37, 38, 500, 999]):
        acc.update(torch.from_numpy(chunk) if len(chunk) % 2 else chunk)
    assert acc.count == 1000
    smu, ssig = acc.statistics()
    np.testing.assert_allclose(smu, mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ssig, sigma, rtol=0, atol=1e-10)


def test_feature_stats_large_mean_stays_accurate():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 5)) + 1e4
    acc = FeatureStats()
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    mu, sigma = feature_statistics(x)
    smu, ssig = acc.statistics()
    np.testing.assert_allclose(smu, mu, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ssig, sigma, rtol=0, atol=1e-10)


def test_feature_stats_merge_equals_one_pass():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(600, 9)) * np.arange(1, 10) + np.arange(9)
    ranks = [FeatureStats() for _ in range(4)]
    for i, chunk in enumerate(np.array_split(x, 12)):
        ranks[i % 4].update(chunk * 1.0)
    ranks.append(FeatureStats())  # an empty rank must be harmless
    merged = FeatureStats()
    for r in ranks:
        merged.merge(FeatureStats.from_state_dict(r.state_dict()))
    # One pass in a different row order gives the same statistics.
    order = np.concatenate([np.concatenate(np.array_split(x, 12)[k::4]) for k in range(4)])
    one = FeatureStats().update(order)
    mu, sigma = feature_statistics(x)
    for acc in (merged, one):
        assert acc.count == 600
        smu, ssig = acc.statistics()
        np.testing.assert_allclose(smu, mu, rtol=0, atol=1e-10)
        np.testing.assert_allclose(ssig, sigma, rtol=0, atol=1e-10)


def test_feature_stats_errors():
    acc = FeatureStats()
    with pytest.raises(ValueError, match="2 feature vectors"):
        acc.statistics()
    acc.update(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="dimension"):
        acc.update(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="dimension"):
        acc.merge(FeatureStats().update(np.zeros((2, 5))))
    with pytest.raises(ValueError, match="features"):
        acc.update(np.full((2, 4), np.nan))
