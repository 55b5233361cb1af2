"""The registered perceptual distances of flowmo.nets: construction from specs, refusal
without weight files, behaviour with (random, fake) weight files, SSIM against skimage."""

import numpy as np
import pytest
import torch

import flowmo
import flowmo.nets  # registers the distances
from flowmo.losses import build_distance
from flowmo.nets.distances import IMAGENET_MEAN, IMAGENET_STD, ResNet50LogitsDistance, ssim_map_torch
from flowmo.nets.lpips import lpips_alex, lpips_vgg
from flowmo.nets.resnet import resnet50
from flowmo.nets.weights import MissingWeightsError
from flowmo.spec import PerceptualSpec

NETWORK = ("lpips_vgg", "lpips_alex", "resnet50_logits")
FILES = {
    "lpips_vgg": ("vgg16-397923af.pth", "vgg.pth"),
    "lpips_alex": ("alexnet-owt-7be5be79.pth", "alex.pth"),
    "resnet50_logits": ("resnet50-0676ba61.pth",),
}


def _images(b=2, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, s, s, generator=g) * 2 - 1


@pytest.fixture
def no_weights(tmp_path, monkeypatch):
    """Empty TORCH_HOME and FLOWMO_WEIGHTS_DIR."""
    home, wdir = tmp_path / "torch_home", tmp_path / "weights"
    home.mkdir()
    wdir.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(wdir))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return wdir


@pytest.fixture(scope="module")
def fake_weights(tmp_path_factory):
    """One folder with random state dicts of the right layouts for every network distance."""
    d = tmp_path_factory.mktemp("fake_weights")
    for factory, trunk, heads in ((lpips_vgg, "vgg16-397923af.pth", "vgg.pth"),
                                  (lpips_alex, "alexnet-owt-7be5be79.pth", "alex.pth")):
        m = factory(pretrained=False)
        torch.save(m.net.state_dict(), d / trunk)  # features only: the classifier is not used
        torch.save(m.heads().state_dict(), d / heads)
    torch.save(resnet50(pretrained=False).state_dict(), d / "resnet50-0676ba61.pth")
    return d


@pytest.fixture
def with_weights(fake_weights, no_weights, monkeypatch):
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(fake_weights))
    return fake_weights


# ------------------------------------------------------------------ registry and specs
def test_all_registered_and_specs_round_trip():
    for name in (*NETWORK, "ssim", "mse", "l1"):
        assert name in flowmo.PERCEPTUAL_DISTANCES
        spec = PerceptualSpec.model_validate({"name": name})
        assert spec.name == name and type(spec) is not PerceptualSpec or name in ("mse", "l1")
        assert PerceptualSpec.model_validate_json(spec.model_dump_json()) == spec
    s = PerceptualSpec.model_validate({"name": "lpips_vgg", "weights_path": "/w/vgg.pth", "trunk_weights_path": "/w"})
    assert (s.weights_path, s.trunk_weights_path) == ("/w/vgg.pth", "/w")
    assert PerceptualSpec.model_validate({"name": "resnet50_logits"}).resize is True
    with pytest.raises(ValueError, match="unexpected field weights_path"):
        PerceptualSpec.model_validate({"name": "ssim", "weights_path": "x"})


@pytest.mark.parametrize("name", ["mse", "l1", "ssim"])
def test_weightless_distances_build_from_spec_dicts(name, no_weights):
    d = build_distance(PerceptualSpec.model_validate({"name": name}))
    x, y = _images(seed=1), _images(seed=2)
    assert d(x, y).shape == (2,) and bool((d(x, y) > 0).all()) and bool((d(x, x) == 0).all())


# ------------------------------------------------------------------ refusal without weights
@pytest.mark.parametrize("name", NETWORK)
def test_missing_weights_refused_at_construction(name, no_weights):
    spec = PerceptualSpec.model_validate({"name": name})
    with pytest.raises(MissingWeightsError) as ei:
        build_distance(spec)
    msg = str(ei.value)
    for f in FILES[name]:
        assert f"'{f}'" in msg  # each missing file is named exactly
    assert name in msg and str(no_weights) in msg and "FLOWMO_WEIGHTS_DIR" in msg


def test_missing_heads_only_names_the_heads(fake_weights, no_weights, tmp_path):
    trunk_only = tmp_path / "trunk_only"
    trunk_only.mkdir()
    (trunk_only / "vgg16-397923af.pth").write_bytes((fake_weights / "vgg16-397923af.pth").read_bytes())
    with pytest.raises(MissingWeightsError) as ei:
        build_distance(PerceptualSpec.model_validate({"name": "lpips_vgg", "weights_path": str(trunk_only)}))
    assert "missing weight file vgg.pth." in str(ei.value) and "'vgg16-397923af.pth'" not in str(ei.value)


def test_flowmo_spec_with_lpips_validates_and_flow_loss_refuses(no_weights):
    spec = flowmo.flowmo_tiny().replace(flow_loss={"name": "rectified_flow", "perceptual": {"name": "lpips_vgg"}})
    assert spec.flow_loss.perceptual.name == "lpips_vgg"
    assert flowmo.FlowMoSpec.from_json(spec.to_json()) == spec
    spec_1b = spec.replace(posttrain={"name": "mode_seeking", "distance": {"name": "resnet50_logits"}})
    model = flowmo.build(spec_1b)  # building the model needs no weights
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        model.flow_loss
    with pytest.raises(MissingWeightsError, match="resnet50-0676ba61.pth"):
        model.posttrain_objective


# ------------------------------------------------------------------ with (fake) weights
@pytest.mark.parametrize("name", ["lpips_vgg", "lpips_alex"])
def test_lpips_with_weights(name, with_weights):
    d = build_distance(PerceptualSpec.model_validate({"name": name}))
    assert all(not p.requires_grad for p in d.parameters())
    x, y = _images(seed=1), _images(seed=2)
    out = d(x, y)
    assert out.shape == (2,) and out.dtype == torch.float32 and bool((out > 0).all())
    assert torch.equal(d(x, x), torch.zeros(2))
    xr = x.clone().requires_grad_(True)
    d(xr, y).sum().backward()
    assert xr.grad is not None and bool(xr.grad.abs().sum() > 0)
    # an explicit folder in the spec works too, with nothing in the environment
    explicit = build_distance(PerceptualSpec.model_validate({"name": name, "weights_path": str(with_weights)}))
    assert torch.equal(explicit(x, y), out)


def test_resnet50_logits_with_weights(with_weights):
    d = build_distance(PerceptualSpec.model_validate({"name": "resnet50_logits", "weights_path": str(with_weights)}))
    assert isinstance(d, ResNet50LogitsDistance) and not d.training
    x, y = _images(seed=1), _images(seed=2)
    out = d(x, y)
    assert out.shape == (2,) and bool((out >= 0).all()) and bool((out > 0).any())
    assert torch.equal(d(x, x), torch.zeros(2))
    # the documented preprocessing: [0, 1], antialiased bilinear 224, ImageNet normalisation,
    # MSE of logits (independent checks of the resampling: tests/nets/test_preprocessing.py)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def logits(z):
        z = torch.nn.functional.interpolate((z + 1) / 2, size=(224, 224), mode="bilinear", align_corners=False,
                                            antialias=True)
        return d.net((z - mean) / std)

    torch.testing.assert_close(out, (logits(x) - logits(y)).pow(2).mean(1), rtol=1e-4, atol=1e-6)


def test_resnet50_logits_without_resize_and_gradients(with_weights):
    d = build_distance(PerceptualSpec.model_validate({"name": "resnet50_logits", "resize": False}))
    x, y = _images(seed=1), _images(seed=2)
    assert d.preprocess(x).shape == (2, 3, 32, 32)
    xr = x.clone().requires_grad_(True)
    d(xr, y).sum().backward()
    assert xr.grad is not None and bool(xr.grad.abs().sum() > 0)


def test_model_loss_with_lpips_term(with_weights):
    spec = flowmo.flowmo_tiny().replace(flow_loss={"name": "rectified_flow", "perceptual": {"name": "lpips_vgg"}})
    out = flowmo.build(spec).loss(_images())
    assert "perceptual" in out.terms and float(out.terms["perceptual"].detach()) > 0


# ------------------------------------------------------------------ SSIM
def test_ssim_distance_matches_skimage_and_has_gradients(no_weights):
    from skimage.metrics import structural_similarity

    d = build_distance(PerceptualSpec.model_validate({"name": "ssim"}))
    x, y = _images(2, 24, seed=1), _images(2, 24, seed=2)
    y = (0.7 * x + 0.3 * y).clamp(-1, 1)
    out = d(x.double(), y.double())
    for i in range(2):
        a, b = ((x[i].double() + 1) / 2).numpy(), ((y[i].double() + 1) / 2).numpy()
        ref = structural_similarity(a, b, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, data_range=1.0)
        assert abs((1 - float(out[i])) - ref) < 1e-7
    assert torch.equal(d(x, x), torch.zeros(2))
    assert bool((d(x, y) > 0).all())
    xr = x.clone().requires_grad_(True)
    d(xr, y).sum().backward()
    assert xr.grad is not None and torch.isfinite(xr.grad).all() and bool(xr.grad.abs().sum() > 0)
    assert d(x.bfloat16(), y.bfloat16()).dtype == torch.float32
    with pytest.raises(ValueError, match="11x11"):
        d(_images(1, 8), _images(1, 8))
    with pytest.raises(ValueError, match="same shape"):
        d(_images(1, 16), _images(1, 24))
    assert np.isclose(float(ssim_map_torch((x + 1) / 2, (x + 1) / 2)[0]), 1.0)


def test_both_stages_run_with_ssim_and_no_weights(no_weights):
    spec = flowmo.flowmo_tiny().replace(
        flow_loss={"name": "rectified_flow", "perceptual": {"name": "ssim"}},
        posttrain={"name": "mode_seeking", "k": 2, "distance": {"name": "ssim"}},
    )
    model = flowmo.build(spec)
    a = model.loss(_images())
    assert "perceptual" in a.terms
    b = model.posttrain_loss(_images())
    b.total.backward()
    assert all(torch.isfinite(v) for v in b.terms.values())


def test_weightless_distances_are_never_negative_on_near_identical_flat_images():
    """1 - SSIM, MSE and L1 are >= 0 by definition; round-off must not make them negative
    (1 - SSIM reached -3.7e-5 on nearly flat, nearly identical float32 images)."""
    g = torch.Generator().manual_seed(0)
    for name in ("ssim", "mse", "l1"):
        d = build_distance(PerceptualSpec.model_validate({"name": name}))
        for _ in range(50):
            base = torch.rand(1, 1, 1, 1, generator=g) * 2 - 1
            x = (base + torch.randn(4, 3, 16, 16, generator=g) * 1e-3).clamp(-1, 1)
            y = (x + torch.randn(4, 3, 16, 16, generator=g) * 1e-4).clamp(-1, 1)
            assert float(d(x, y).min()) >= 0.0, name
