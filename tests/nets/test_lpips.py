"""LPIPS properties with random (explicitly requested) trunk and heads."""

import pytest
import torch
from torch import nn

from flowmo.nets.lpips import LPIPS, lpips_alex, lpips_vgg


@pytest.fixture(scope="module", params=["vgg", "alex"])
def model(request):
    torch.manual_seed(0)
    return lpips_vgg(pretrained=False) if request.param == "vgg" else lpips_alex(pretrained=False)


def _img(b=3, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


def test_identical_inputs_give_exactly_zero(model):
    x = _img()
    d = model(x, x.clone())
    assert d.shape == (3,)
    assert torch.equal(d, torch.zeros(3))


def test_symmetric_positive_and_shape(model):
    x, y = _img(seed=1), _img(seed=2)
    d_xy, d_yx = model(x, y), model(y, x)
    assert d_xy.shape == (3,)
    assert torch.equal(d_xy, d_yx)
    assert (d_xy > 0).all()


@pytest.mark.parametrize("b, h, w", [(1, 32, 32), (2, 40, 56)])
def test_shapes_batch_and_non_square(model, b, h, w):
    d = model(_img(b, h, w, 3), _img(b, h, w, 4))
    assert d.shape == (b,) and torch.isfinite(d).all()


def test_per_image_independence(model):
    x, y = _img(seed=5), _img(seed=6)
    y2 = y.clone()
    y2[1] = x[1]  # only image 1 becomes identical
    d = model(x, y2)
    assert d[1] == 0 and d[0] > 0 and d[2] > 0
    torch.testing.assert_close(d[[0, 2]], model(x, y)[[0, 2]])


def test_matches_formula(model):
    """Re-derive the distance from the spec: fixed scaling with the literal constants,
    unit-normalised taps, squared difference, 1x1 head, spatial mean, sum."""
    x, y = _img(seed=7), _img(seed=8)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fx = model.net.lpips_features((x - shift) / scale)
    fy = model.net.lpips_features((y - shift) / scale)
    total = torch.zeros(3)
    for k, (a, b) in enumerate(zip(fx, fy)):
        a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = model.heads()[f"lin{k}"].model[1].weight  # (1, C, 1, 1)
        total += ((a - b) ** 2 * w).sum(1).mean((1, 2))
    torch.testing.assert_close(model(x, y), total, rtol=1e-5, atol=1e-7)


def test_normalize_flag_maps_01_to_pm1(model):
    x01, y01 = (_img(seed=9) + 1) / 2, (_img(seed=10) + 1) / 2
    torch.testing.assert_close(model(x01, y01, normalize=True), model(2 * x01 - 1, 2 * y01 - 1))


def test_taps_are_post_relu_and_of_the_right_size(model):
    x = _img(1, 64, 64, 11)
    feats = model.net.lpips_features(x)
    assert tuple(f.shape[1] for f in feats) == model.channels
    assert all((f >= 0).all() for f in feats)
    if model.net_name == "vgg":
        assert model.channels == (64, 128, 256, 512, 512)
        assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4]
        idx = (3, 8, 15, 22, 29)
    else:
        assert model.channels == (64, 192, 384, 256, 256)
        assert [f.shape[-1] for f in feats] == [15, 7, 3, 3, 3]
        idx = (1, 4, 7, 9, 11)
    for f, i in zip(feats, idx):
        torch.testing.assert_close(f, model.net.features[: i + 1](x), rtol=0, atol=0)


def test_frozen_eval_and_stays_eval(model):
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    parent = nn.Sequential(model)
    parent.train()
    assert parent.training and not model.training
    assert all(not m.training for m in model.modules())


def test_gradients_reach_the_inputs(model):
    x = _img(2, seed=12).requires_grad_(True)
    y = _img(2, seed=13)
    model(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())


def test_float64(model):
    x, y = _img(2, seed=14), _img(2, seed=15)
    m64 = LPIPS(model.net_name)
    m64.load_state_dict(model.state_dict())
    m64 = m64.double()
    d64 = m64(x.double(), y.double())
    assert d64.dtype == torch.float64
    torch.testing.assert_close(d64.float(), model(x, y), rtol=1e-4, atol=1e-6)


def test_bfloat16_runs_and_returns_input_dtype(model):
    x, y = _img(1, 32, 32, 16), _img(1, 32, 32, 17)
    mb = LPIPS(model.net_name)
    mb.load_state_dict(model.state_dict())
    mb = mb.to(torch.bfloat16)
    d = mb(x.bfloat16(), y.bfloat16())
    assert d.dtype == torch.bfloat16 and torch.isfinite(d.float()).all() and (d.float() > 0).all()


def test_no_hardcoded_device():
    """Running on the meta device only works if nothing inside is pinned to the CPU."""
    m = LPIPS("alex").to("meta")
    x = torch.empty(2, 3, 64, 64, device="meta")
    d = m(x, x)
    assert d.shape == (2,) and d.device.type == "meta"


def test_input_validation(model):
    with pytest.raises(ValueError):
        model(_img(2), _img(3))
    with pytest.raises(ValueError):
        model(torch.zeros(2, 1, 32, 32), torch.zeros(2, 1, 32, 32))


def test_random_heads_are_non_negative():
    m = LPIPS("vgg")
    assert all((m.heads()[f"lin{k}"].model[1].weight >= 0).all() for k in range(5))
