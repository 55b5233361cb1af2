"""The "release" metric protocol (issue 16, fault 3): 8 bits by float32 truncation, scikit-image's
default SSIM, PSNR over batches of 5, network inputs as the released FlowMo evaluation
(``flowmo/evaluate.py`` of the release) makes them; "standard" unchanged and the default.

Expected values are computed independently: the truncation is written out in numpy float32 (a
numpy float -> uint8 cast truncates, as torch's does), SSIM by scikit-image's
``structural_similarity`` called with the release's exact arguments on float32 ``u8 / 255`` HWC
arrays, and PSNR with the release's batching written out with numpy / scikit-image.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.metrics import Evaluator, evaluate_model
from flowmo.metrics.pixel import batched_psnr, psnr, ssim
from flowmo.metrics.eight_bit import quantise_pair, release_originals, to_uint8
from flowmo.nets import lpips_alex

skimage = pytest.importorskip("skimage")
from scipy import ndimage  # noqa: E402
from skimage import data as skdata  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

F32 = np.float32


def _release_loader(u8: np.ndarray) -> np.ndarray:
    """The release's data loader: ``(image / 127.5 - 1.0).astype(np.float32)`` (float64 arithmetic)."""
    return (u8 / 127.5 - 1.0).astype(F32)


def _release_trunc(x: np.ndarray, clamp: bool) -> np.ndarray:
    """The release's 8 bits, by hand in float32: clamp (reconstructions), (x + 1) / 2, * 255, cast."""
    x = np.asarray(x, dtype=F32)
    if clamp:
        x = np.clip(x, F32(-1), F32(1))
    v = ((x + F32(1)) / F32(2)) * F32(255.0)
    assert v.dtype == F32
    return v.astype(np.uint8)  # truncation


@pytest.fixture(scope="module")
def photo_pairs():
    """(uint8 original HWC, float32 reconstruction CHW in [-1, 1] off the 8-bit grid) on real photos."""
    rng = np.random.default_rng(16)
    crops = [skdata.astronaut()[40:136, 180:276], skdata.chelsea()[40:136, 150:246],
             skdata.coffee()[100:196, 200:296]]
    pairs = []
    for c in crops:
        x = _release_loader(c).transpose(2, 0, 1)
        noisy = (x + rng.normal(0, 0.06, x.shape)).astype(F32)  # some values beyond [-1, 1]
        blurred = ndimage.gaussian_filter(x.astype(np.float64), sigma=(0, 1.3, 1.3)).astype(F32)
        pairs += [(c, noisy), (c, blurred)]
    return pairs


# ------------------------------------------------------------------------------- 8 bits
def test_truncation_written_out_by_hand():
    x = torch.tensor([0.999 * 2 - 1, -1.0, 1.0, -3.0, 2.5, 0.0], dtype=torch.float32).view(1, 1, 1, 6)
    # (x + 1) / 2 = 0.999 -> 254.745: truncated to 254 by the release, rounded to 255 by standard
    assert to_uint8(x, "release").flatten().tolist() == [254, 0, 255, 0, 255, 127]
    assert to_uint8(x, "standard").flatten().tolist() == [255, 0, 255, 0, 255, 128]
    assert to_uint8(x).flatten().tolist() == [255, 0, 255, 0, 255, 128]  # the default is standard
    assert to_uint8(x, "release").dtype == torch.uint8
    # every float32 value the same chain gives in numpy
    g = np.random.default_rng(0)
    v = g.uniform(-1.3, 1.3, size=(2, 3, 8, 8)).astype(F32)
    assert np.array_equal(to_uint8(torch.from_numpy(v), "release").numpy(), _release_trunc(v, clamp=True))


def test_release_loader_values_and_the_95_lowered_levels():
    u = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    ours = torch.from_numpy(u).float() / 127.5 - 1.0  # our loaders: float32 arithmetic
    theirs = _release_loader(u)
    assert not np.array_equal(ours.numpy(), theirs)  # levels 64..191 differ in the last bit
    assert np.array_equal(release_originals(ours).numpy(), theirs)
    assert np.array_equal(release_originals(ours.double()).numpy(), theirs)
    lowered = _release_trunc(theirs, clamp=False).astype(int) - u.astype(int)
    assert set(np.unique(lowered)) == {-1, 0} and int((lowered == -1).sum()) == 95
    o8, r8 = quantise_pair(ours, ours, "release")
    assert np.array_equal(o8.numpy(), _release_trunc(theirs, clamp=False))
    assert np.array_equal(r8.numpy(), _release_trunc(ours.numpy(), clamp=True))  # as given
    assert torch.equal(quantise_pair(ours, ours)[0], torch.from_numpy(u))  # standard: exact


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1.5, 1.5, width=32), min_size=1, max_size=64))
def test_truncation_is_rounding_or_one_level_below(values):
    x = torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)
    d = to_uint8(x, "release").int() - to_uint8(x, "standard").int()
    assert bool(((d == 0) | (d == -1)).all())


# ------------------------------------------------------------------------------- SSIM
def test_release_ssim_is_skimage_default_with_the_release_arguments(photo_pairs):
    for c, rec in photo_pairs:
        gt = _release_trunc(_release_loader(c), clamp=False)  # HWC uint8
        rgb = _release_trunc(rec, clamp=True).transpose(1, 2, 0)
        # the release: ssim_loss(rgb_restored_s, rgb_gt_s, data_range=1.0, channel_axis=-1), float32 / 255
        ref32 = structural_similarity(rgb.astype(F32) / F32(255.0), gt.astype(F32) / F32(255.0),
                                      data_range=1.0, channel_axis=-1)
        ref64 = structural_similarity(rgb / 255.0, gt / 255.0, data_range=1.0, channel_axis=-1)
        x = torch.from_numpy(c.astype(np.float64)).permute(2, 0, 1)[None].float() / 127.5 - 1.0
        r = torch.from_numpy(rec)[None]
        ours = ssim(x, r, "release").item()
        assert ours == pytest.approx(ref64, abs=1e-10)
        assert ours == pytest.approx(ref32, abs=5e-6)  # scikit-image computes float32 there
        # the standard protocol is the Gaussian-window SSIM on rounded images: a different number
        a = to_uint8(x)[0].permute(1, 2, 0).numpy().astype(np.float64)
        b = to_uint8(r)[0].permute(1, 2, 0).numpy().astype(np.float64)
        std_ref = structural_similarity(a, b, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=255)
        assert ssim(x, r).item() == pytest.approx(std_ref, abs=1e-9)
        assert abs(ours - std_ref) > 1e-3


def test_release_ssim_window_sizes_and_identity():
    g = torch.Generator().manual_seed(0)
    # images as the release's loader makes them: identical inputs give identical 8-bit images
    x = release_originals(torch.rand(2, 3, 7, 9, generator=g) * 2 - 1)
    s = ssim(x, x, "release")
    assert torch.allclose(s, torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert torch.isinf(psnr(x, x, "release")).all()
    # our loaders' float32 u / 127.5 - 1 is not the release's for levels 64..191: as a
    # "reconstruction" it is truncated as given, so some levels come out one lower
    u = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16).expand(1, 3, 16, 16)
    ours = u / 127.5 - 1
    o8, r8 = quantise_pair(ours, ours, "release")
    assert int((o8.int() - r8.int()).abs().sum()) == 3 * (95 - 63)
    with pytest.raises(ValueError, match="11x11"):
        ssim(x, x)  # standard needs 11x11
    with pytest.raises(ValueError, match="7x7"):
        ssim(x[..., :6, :], x[..., :6, :], "release")


# ------------------------------------------------------------------------------- PSNR
def _release_psnr_by_hand(gts: np.ndarray, recs: np.ndarray, bs: int = 5) -> float:
    """flowmo/evaluate.py: per batch, B times psnr_loss(rgb_gt, rgb_restored) of the WHOLE batch
    (float32 u8 / 255, skimage infers data range 1), divided by B; averaged over batches."""
    vals = []
    for s in range(0, len(gts), bs):
        gt = gts[s:s + bs].astype(F32) / F32(255.0)
        rec = recs[s:s + bs].astype(F32) / F32(255.0)
        vals.append(sum(peak_signal_noise_ratio(gt, rec) for _ in range(len(gt))) / len(gt))
    return float(np.mean(vals))


def test_release_psnr_is_averaged_over_batches_of_5(photo_pairs):
    xs = np.stack([_release_loader(c).transpose(2, 0, 1) for c, _ in photo_pairs] * 2)[:10]
    rs = np.stack([rec for _, rec in photo_pairs] * 2)[:10]
    rs[7] = rs[7] * 0.5  # make the batches differ
    gts, recs = _release_trunc(xs, clamp=False), _release_trunc(rs, clamp=True)
    want = _release_psnr_by_hand(gts, recs)
    # written out in float64 on the 8-bit values: PSNR of each batch's pooled MSE
    d = gts.astype(np.float64) - recs.astype(np.float64)
    exact = np.mean([10 * np.log10(255.0**2 / np.mean(d[s:s + 5] ** 2)) for s in (0, 5)])
    assert want == pytest.approx(exact, abs=1e-4)

    x, r = torch.from_numpy(xs), torch.from_numpy(rs)
    ev = Evaluator(lpips=(), fid=False, protocol="release")
    ev.update(x[:3], r[:3])
    ev.update(x[3:], r[3:])  # batching of updates does not matter, ids do
    res = ev.compute()
    assert res["protocol"] == "release"
    assert res["psnr"] == res["psnr_batches_of_5"]
    assert res["psnr"] == pytest.approx(exact, abs=1e-10)
    assert res["psnr"] == pytest.approx(want, abs=1e-4)  # the release's float32 arithmetic
    per_image = psnr(x, r, "release").numpy()
    assert res["psnr_mean_over_images"] == pytest.approx(per_image.mean(), abs=1e-10)
    assert res["psnr_mean_over_images"] > res["psnr"]  # log is concave: pooling lowers PSNR
    assert res["ssim"] == pytest.approx(ssim(x, r, "release").mean().item(), abs=1e-12)
    assert "7x7 uniform" in res["conventions"]["ssim"]
    assert np.array_equal(ev.per_image()["mse"], (d**2).reshape(10, -1).mean(1))

    std = Evaluator(lpips=(), fid=False)
    std.update(x, r)
    sres = std.compute()
    assert sres["protocol"] == "standard" and sres["psnr"] == sres["psnr_mean_over_images"]
    assert sres["psnr"] == pytest.approx(psnr(x, r).mean().item(), abs=1e-10)
    assert abs(sres["ssim"] - res["ssim"]) > 1e-3


def test_batched_psnr_function():
    m = np.array([1.0, 4.0, 0.0, 2.0, 3.0, 9.0, 0.5])
    want = (10 * math.log10(255**2 / 2.0) + 10 * math.log10(255**2 / 4.75)) / 2
    assert batched_psnr(m) == pytest.approx(want, abs=1e-12)
    assert batched_psnr(m, batch_size=1) == pytest.approx(math.inf)  # one exact image -> inf as the release
    capped = batched_psnr([0.0, 0.0], batch_size=2, values_per_image=12)
    assert capped == pytest.approx(10 * math.log10(255**2 * 12 * 2))
    with pytest.raises(ValueError, match="batch_size"):
        batched_psnr(m, batch_size=0)
    with pytest.raises(ValueError, match="mse"):
        batched_psnr([1.0, -1.0])
    with pytest.raises(ValueError, match="mse"):
        batched_psnr([])
    with pytest.raises(ValueError, match="values_per_image"):
        batched_psnr(m, values_per_image=[3, 4])


# ------------------------------------------------------------------------------- networks, API
def test_release_network_inputs_are_the_float_images():
    g = torch.Generator().manual_seed(2)
    u = torch.randint(0, 256, (2, 3, 32, 32), generator=g)
    x = u.float() / 127.5 - 1
    r = x + 0.3 * torch.randn(x.shape, generator=g)  # beyond [-1, 1]: clamped by the release
    torch.manual_seed(0)
    net = lpips_alex(pretrained=False)
    ev = Evaluator(lpips_nets={"alex": net}, fid=False, protocol="release")
    ev.update(x, r)
    xo = torch.from_numpy(_release_loader(u.numpy().astype(np.uint8)))
    rc = r.clamp(-1, 1)
    with torch.no_grad():
        want = net(((xo + 1) / 2) * 2 - 1, ((rc + 1) / 2) * 2 - 1).double().numpy()
        q = (lambda t: to_uint8(t).float() / 127.5 - 1)
        std = net(q(x), q(r)).double().numpy()
    np.testing.assert_allclose(ev.per_image()["lpips_alex"], want, rtol=1e-6)
    assert not np.allclose(want, std, rtol=1e-6)


def test_protocol_is_checked_and_reaches_evaluate_model():
    x = torch.zeros(5, 3, 16, 16)
    for fn in (lambda: to_uint8(x, "paper"), lambda: psnr(x, x, "paper"), lambda: ssim(x, x, "Release"),
               lambda: Evaluator(lpips=(), fid=False, protocol="paper"),
               lambda: evaluate_model(lambda t: t, x, lpips=(), fid=False, progress=False, protocol="x")):
        with pytest.raises(ValueError, match="protocol"):
            fn()
    res = evaluate_model(lambda t: t * 0.5, x, lpips=(), fid=False, progress=False, protocol="release")
    assert res["protocol"] == "release"
    ev = Evaluator(lpips=(), fid=False)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_model(lambda t: t, x, evaluator=ev, progress=False, protocol="release")
    assert evaluate_model(lambda t: t, x, evaluator=ev, progress=False, protocol="standard")["protocol"] == "standard"
