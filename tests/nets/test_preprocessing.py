"""Network input preprocessing of the perceptual distances and evaluation networks, checked
against INDEPENDENT references (never our own code run twice):

* antialiased bilinear resize: PIL's ``Image.resize(..., Image.BILINEAR)`` on float32
  ("F" mode) single-channel images (PIL's triangle filter, support widened by the
  downscale factor, which torch's ``antialias=True`` is designed to match);
* plain bilinear resize (``align_corners=False``, no antialias): a numpy formula below;
* normalisations: constants written out here.

Real photos (scikit-image's astronaut, chelsea, coffee; bundled, no download) are used
where resampling matters: on them the old ResNet-50 preprocessing (no antialiasing)
differs from the release's by ~0.4 in network-input units.
"""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo.nets  # noqa: F401  registers the distances
from flowmo.losses import build_distance
from flowmo.nets import distances as dist_mod
from flowmo.nets.distances import ResNet50LogitsDistance, ResNet50LogitsSpec
from flowmo.nets.inception import FIDInceptionV3
from flowmo.nets.lpips import LPIPS_SCALE, LPIPS_SHIFT, lpips_alex, lpips_vgg
from flowmo.nets.resnet import resnet50
from flowmo.spec import PerceptualSpec

skdata = pytest.importorskip("skimage.data")

# written-out constants (torchvision ImageNet normalisation; lpips ScalingLayer)
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float64)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float64)
LP_SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float64)
LP_SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float64)

PHOTOS = ("astronaut", "chelsea", "coffee")


# ------------------------------------------------------------------------ references
def _photo(name: str, size: int = 256) -> np.ndarray:
    """Centre ``size`` x ``size`` crop of a bundled scikit-image photo, float64 in [0, 1],
    (H, W, 3); a native-resolution crop, so it keeps the photo's fine detail."""
    img = getattr(skdata, name)()
    h, w = img.shape[:2]
    y0, x0 = (h - size) // 2, (w - size) // 2
    return img[y0 : y0 + size, x0 : x0 + size, :3].astype(np.float64) / 255.0


def _to_pm1_tensor(img01: np.ndarray) -> torch.Tensor:
    """(H, W, 3) in [0, 1] -> (1, 3, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(img01 * 2.0 - 1.0).float().permute(2, 0, 1)[None].contiguous()


def _pil_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """PIL's (antialiased) bilinear resize of each channel of (H, W, C) as a float32 image."""
    chans = []
    for c in range(img.shape[2]):
        im = Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
        assert im.mode == "F"
        chans.append(np.asarray(im.resize((out_w, out_h), Image.BILINEAR), dtype=np.float64))
    return np.stack(chans, axis=-1)


def _plain_bilinear_axis(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear interpolation with align_corners=False and no
    antialiasing: source coordinate (i + 0.5) * n_in / n_out - 0.5, clamped below at 0;
    the two neighbouring pixels (the upper one clamped to the last pixel)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m


def _plain_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Plain (non-antialiased) align_corners=False bilinear resize of (H, W, C), float64."""
    h, w, c = img.shape
    rows, cols = _plain_bilinear_axis(h, out_h), _plain_bilinear_axis(w, out_w)
    tmp = (rows @ img.reshape(h, w * c)).reshape(out_h, w, c)  # along H
    return (tmp.transpose(0, 2, 1) @ cols.T).transpose(0, 2, 1)  # along W


def _imagenet_normalise(img01: np.ndarray) -> np.ndarray:
    """(H, W, 3) [0, 1] -> ImageNet-normalised (3, H, W) with the written-out constants."""
    return ((img01 - MEAN) / STD).transpose(2, 0, 1)


# ------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    """A randomly initialised ResNet-50 state dict in torchvision's file layout."""
    path = tmp_path_factory.mktemp("resnet_weights") / "resnet50-0676ba61.pth"
    torch.manual_seed(0)
    torch.save(resnet50(pretrained=False).state_dict(), path)
    return path


def _resnet_distance(resnet_file, **fields) -> ResNet50LogitsDistance:
    spec = PerceptualSpec.model_validate({"name": "resnet50_logits", "weights_path": str(resnet_file), **fields})
    d = build_distance(spec)
    assert isinstance(d, ResNet50LogitsDistance)
    return d


# ------------------------------------------------------------------------ ResNet-50 logits distance
@pytest.mark.parametrize("photo", PHOTOS)
def test_resnet_preprocess_is_pil_antialiased_bilinear_on_photos(resnet_file, photo):
    """256 px photo -> 224: the network input is PIL's antialiased bilinear resize of the
    [0, 1] image, ImageNet-normalised with the written-out constants (fails on the old,
    non-antialiased code by ~0.1 in [0, 1] units)."""
    d = _resnet_distance(resnet_file)
    img = _photo(photo)
    got = d.preprocess(_to_pm1_tensor(img))
    assert got.shape == (1, 3, 224, 224) and got.dtype == torch.float32
    # compare in [0, 1] units: undo the normalisation with the written-out constants
    got01 = got[0].double().numpy() * STD[:, None, None] + MEAN[:, None, None]
    ref01 = _pil_bilinear(img, 224, 224).transpose(2, 0, 1)
    err = np.abs(got01 - ref01)
    assert err.max() < 5e-5, err.max()
    assert err.mean() < 5e-6, err.mean()
    # and the normalised tensor itself against the normalised PIL reference
    np.testing.assert_allclose(got[0].double().numpy(), _imagenet_normalise(_pil_bilinear(img, 224, 224)),
                               rtol=0, atol=2.5e-4)


def test_resnet_old_plain_bilinear_differs_a_lot_from_the_release_on_a_photo(resnet_file):
    """Regression for issue 16: on a 256 px real photo the old inputs (plain bilinear, no
    antialiasing) differ from the release's (antialiased) by ~0.47 in network-input units.
    ``antialias=False`` reproduces the old inputs, checked against the numpy formula."""
    img = _photo("astronaut")
    x = _to_pm1_tensor(img)
    new = _resnet_distance(resnet_file).preprocess(x)[0].double().numpy()
    old = _resnet_distance(resnet_file, antialias=False).preprocess(x)[0].double().numpy()
    ref_old = _imagenet_normalise(_plain_bilinear(img, 224, 224))
    ref_new = _imagenet_normalise(_pil_bilinear(img, 224, 224))
    np.testing.assert_allclose(old, ref_old, rtol=0, atol=2.5e-4)
    np.testing.assert_allclose(new, ref_new, rtol=0, atol=2.5e-4)
    gap = np.abs(old - new).max()
    assert gap > 0.3, gap
    # the two references themselves: the gap is a property of the resampling, not of our code
    assert np.abs(ref_old - ref_new).max() > 0.3


def test_resnet_upsampling_nonsquare_and_identity(resnet_file):
    d = _resnet_distance(resnet_file)
    rng = np.random.default_rng(0)
    # enlarging (64 -> 224): antialiased bilinear equals plain bilinear; both references agree
    small = rng.random((64, 64, 3))
    got = d.preprocess(_to_pm1_tensor(small))[0].double().numpy()
    np.testing.assert_allclose(got, _imagenet_normalise(_pil_bilinear(small, 224, 224)), rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, _imagenet_normalise(_plain_bilinear(small, 224, 224)), rtol=0, atol=1e-4)
    # non-square (documented choice): stretched to exactly 224x224, antialiased per axis
    photo = getattr(skdata, "coffee")().astype(np.float64) / 255.0  # 400 x 600
    got = d.preprocess(_to_pm1_tensor(photo))
    assert got.shape == (1, 3, 224, 224)
    np.testing.assert_allclose(got[0].double().numpy(), _imagenet_normalise(_pil_bilinear(photo, 224, 224)),
                               rtol=0, atol=2.5e-4)
    # 224x224 input: no resampling at all, only the normalisation
    exact = rng.random((224, 224, 3))
    np.testing.assert_allclose(d.preprocess(_to_pm1_tensor(exact))[0].double().numpy(),
                               _imagenet_normalise(exact), rtol=0, atol=1e-5)
    # resize=False: the network sees the images at their own size
    flat = _resnet_distance(resnet_file, resize=False).preprocess(_to_pm1_tensor(small))
    assert flat.shape == (1, 3, 64, 64)
    np.testing.assert_allclose(flat[0].double().numpy(), _imagenet_normalise(small), rtol=0, atol=1e-5)


def test_resnet_forward_feeds_the_antialiased_inputs(resnet_file):
    """forward(photo, noisy copy) = mean over logits of (net(ref(x)) - net(ref(y)))^2 with
    ref the PIL-resized, written-out-normalised inputs (the setting of issue 16). With these
    random weights the old resampling changes the distance by ~+60% (issue 16 measured
    +58% with the real weights), so this fails on the old code."""
    d = _resnet_distance(resnet_file)
    a = _photo("astronaut")
    b = np.clip(a + np.random.default_rng(1).normal(0.0, 0.1, a.shape), 0.0, 1.0)
    x, y = _to_pm1_tensor(a), _to_pm1_tensor(b)
    refs = [torch.from_numpy(_imagenet_normalise(_pil_bilinear(i, 224, 224))).float()[None] for i in (a, b)]
    with torch.no_grad():
        want = (d.net(refs[0]) - d.net(refs[1])).pow(2).mean(1)
        got = d(x, y)
    assert got.shape == (1,) and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-3, atol=0.0)
    with torch.no_grad():
        old = _resnet_distance(resnet_file, antialias=False)(x, y)
    assert float(old / got) > 1.2, float(old / got)


def test_resnet_spec_antialias_field_and_old_json(resnet_file):
    old_json = json.dumps({"name": "resnet50_logits", "weights_path": None, "resize": True})
    spec = PerceptualSpec.model_validate_json(old_json)  # saved before the field existed
    assert isinstance(spec, ResNet50LogitsSpec) and spec.resize is True and spec.antialias is True
    off = PerceptualSpec.model_validate({"name": "resnet50_logits", "antialias": False})
    assert PerceptualSpec.model_validate_json(off.model_dump_json()) == off and off.antialias is False
    assert ResNet50LogitsSpec.__doc__ and "antialias" in dist_mod.__doc__
    doc = ResNet50LogitsDistance.preprocess.__doc__
    for needle in ("antialias", "PIL", "224x224", "non-square", "[-1, 1]", "0.485", "0.229"):
        assert needle in doc or needle.lower() in doc.lower(), needle


def test_resnet_preprocess_dtypes_gradients_and_errors(resnet_file):
    d = _resnet_distance(resnet_file)
    x = _to_pm1_tensor(_photo("coffee"))
    # bfloat16 input: resampled in float32 (no CPU antialiased bf16 kernel), same result to bf16 rounding
    lo = d.preprocess(x.bfloat16())
    assert lo.dtype == torch.float32
    torch.testing.assert_close(lo, d.preprocess(x.bfloat16().float()))
    xr = x.clone().requires_grad_(True)
    d.preprocess(xr).sum().backward()
    assert xr.grad is not None and bool(xr.grad.abs().sum() > 0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        d.preprocess(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        d.preprocess(torch.zeros(3, 8, 8))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        d.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------------ FID InceptionV3
@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return FIDInceptionV3(), FIDInceptionV3(input_range="01")


@pytest.mark.parametrize("photo, size", [("astronaut", 512), ("chelsea", 256), ("coffee", 400)])
def test_inception_preprocess_is_plain_bilinear_299(inception, photo, size):
    """pytorch-fid: [0, 1] images resized to 299x299 (bilinear, align_corners=False, NO
    antialias), then 2 * x - 1. Checked against the numpy formula, in both input ranges;
    when shrinking (512 -> 299) an antialiased resize would be far off."""
    net_pm1, net_01 = inception
    img = _photo(photo, size)
    ref = 2.0 * _plain_bilinear(img, 299, 299).transpose(2, 0, 1) - 1.0  # resize, then 2x - 1
    got_pm1 = net_pm1.preprocess(_to_pm1_tensor(img))
    got_01 = net_01.preprocess(torch.from_numpy(img).float().permute(2, 0, 1)[None])
    assert got_pm1.shape == got_01.shape == (1, 3, 299, 299)
    # float32 rounding of torch's source coordinates: ~1e-5 where the photo has edges
    np.testing.assert_allclose(got_pm1[0].double().numpy(), ref, rtol=0, atol=5e-5)
    np.testing.assert_allclose(got_01[0].double().numpy(), ref, rtol=0, atol=5e-5)
    if size > 299:
        aa = 2.0 * _pil_bilinear(img, 299, 299).transpose(2, 0, 1) - 1.0
        assert np.abs(aa - ref).max() > 0.1  # the test can tell the two resamplings apart


def test_inception_preprocess_identity_at_299_and_errors(inception):
    net_pm1, _ = inception
    x = torch.rand(2, 3, 299, 299) * 2 - 1
    assert torch.equal(net_pm1.preprocess(x), x)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        net_pm1.preprocess([[0.0]])
    with pytest.raises(ValueError, match=r"x must have shape \(B, 3, H, W\)"):
        net_pm1.preprocess(torch.zeros(1, 1, 8, 8))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        net_pm1.preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------------ LPIPS
def test_lpips_constants_are_the_lpips_packages():
    np.testing.assert_array_equal(np.array(LPIPS_SHIFT), LP_SHIFT)
    np.testing.assert_array_equal(np.array(LPIPS_SCALE), LP_SCALE)
    # the package's ScalingLayer is the ImageNet normalisation re-expressed for [-1, 1] inputs
    np.testing.assert_allclose(LP_SHIFT, 2 * MEAN - 1, atol=1e-12)
    np.testing.assert_allclose(LP_SCALE, 2 * STD, atol=1e-12)
    np.testing.assert_array_equal(np.array(dist_mod.IMAGENET_MEAN), MEAN)
    np.testing.assert_array_equal(np.array(dist_mod.IMAGENET_STD), STD)


@pytest.mark.parametrize("factory", [lpips_alex, lpips_vgg], ids=["alex", "vgg"])
def test_lpips_trunk_input_is_scaled_photo_at_native_size(factory, monkeypatch):
    """The trunk sees (x - shift) / scale of the [-1, 1] photo, at the photo's own size (no
    resize, no crop); normalize=True maps [0, 1] by 2x - 1 first."""
    torch.manual_seed(0)
    model = factory(pretrained=False)
    seen = []
    orig = model.net.lpips_features

    def spy(z):
        seen.append(z.detach().clone())
        return orig(z)

    monkeypatch.setattr(model.net, "lpips_features", spy)
    img = _photo("chelsea", 96)[:80]  # non-square 80 x 96
    want = ((img * 2.0 - 1.0 - LP_SHIFT) / LP_SCALE).transpose(2, 0, 1)
    model(_to_pm1_tensor(img), _to_pm1_tensor(img[::-1].copy()))
    model(torch.from_numpy(img).float().permute(2, 0, 1)[None], torch.zeros(1, 3, 80, 96), normalize=True)
    assert seen[0].shape == seen[2].shape == (1, 3, 80, 96)
    np.testing.assert_allclose(seen[0][0].double().numpy(), want, rtol=0, atol=1e-5)
    np.testing.assert_allclose(seen[2][0].double().numpy(), want, rtol=0, atol=1e-5)
    with pytest.raises(TypeError, match="x and y must be torch.Tensors"):
        model(np.zeros((1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))


@pytest.mark.parametrize("field", ["resize", "antialias"])
@pytest.mark.parametrize("value", ["no", "off", 0, 1, "true", None])
def test_resnet_spec_bool_fields_take_only_booleans(field, value):
    from pydantic import ValidationError

    from flowmo.nets.distances import ResNet50LogitsSpec

    with pytest.raises(ValidationError, match=field):
        ResNet50LogitsSpec(**{field: value})
    assert getattr(ResNet50LogitsSpec(**{field: False}), field) is False
