"""Forward behaviour of the classifiers and of the FID InceptionV3 (random weights)."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from flowmo.nets import inception as inc
from flowmo.nets.alexnet import AlexNet, alexnet
from flowmo.nets.inception import FIDInceptionV3, inception_fid
from flowmo.nets.resnet import ResNet50, resnet50
from flowmo.nets.vgg import VGG16


@pytest.fixture(scope="module")
def fid_net():
    torch.manual_seed(0)
    return inception_fid(pretrained=False)


def _img(b, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


# ------------------------------------------------------------------------- inception
@pytest.mark.parametrize("size", [64, 299])
def test_inception_outputs_2048_features(fid_net, size):
    f = fid_net(_img(2, size, size))
    assert f.shape == (2, 2048) and f.dtype == torch.float32
    assert torch.isfinite(f).all() and (f >= 0).all()  # avg pool of ReLU outputs


def test_inception_resizes_bilinear_to_299(fid_net):
    x = _img(1, 64, 48, 1)
    pre = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(fid_net.preprocess(x), pre, rtol=0, atol=0)
    torch.testing.assert_close(fid_net(x), fid_net(pre), rtol=1e-5, atol=1e-6)


def test_inception_input_range_01(fid_net):
    net01 = FIDInceptionV3(input_range="01")
    net01.load_state_dict(fid_net.state_dict())
    net01.eval()
    x01 = (_img(1, 64, 64, 2) + 1) / 2
    torch.testing.assert_close(net01(x01), fid_net(2 * x01 - 1))
    with pytest.raises(ValueError):
        FIDInceptionV3(input_range="0255")


def test_inception_frozen(fid_net):
    assert not fid_net.training and all(not p.requires_grad for p in fid_net.parameters())
    fid_net.train()
    assert not any(m.training for m in fid_net.modules())


class _Spy(nn.Module):
    """Stands in for a block's branch_pool conv and records what it is fed."""

    def __init__(self, c_out):
        super().__init__()
        self.c_out = c_out
        self.seen = None

    def forward(self, x):
        self.seen = x
        return x[:, :1].expand(-1, self.c_out, -1, -1)


@pytest.mark.parametrize(
    "block",
    [lambda: inc.FIDInceptionA(8, 4), lambda: inc.FIDInceptionC(8, 4), lambda: inc.FIDInceptionE1(8)],
    ids=["A", "C", "E_1"],
)
def test_avg_pool_excludes_padding(block):
    """count_include_pad=False: a constant map stays constant at the borders too."""
    b = block().eval()
    b.branch_pool = _Spy(b.branch_pool.conv.out_channels)
    b(torch.full((1, 8, 5, 5), 3.0))
    assert torch.equal(b.branch_pool.seen, torch.full((1, 8, 5, 5), 3.0))


def test_e2_pool_branch_is_max_pool():
    b = inc.FIDInceptionE2(8).eval()
    b.branch_pool = _Spy(b.branch_pool.conv.out_channels)
    x = torch.randn(1, 8, 6, 6)
    b(x)
    torch.testing.assert_close(b.branch_pool.seen, F.max_pool2d(x, 3, 1, 1), rtol=0, atol=0)


def test_inception_uses_fid_blocks():
    with torch.device("meta"):
        net = FIDInceptionV3()
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        assert type(getattr(net, name)) is inc.FIDInceptionA
    assert type(net.Mixed_6a) is inc.InceptionB
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        assert type(getattr(net, name)) is inc.FIDInceptionC
    assert type(net.Mixed_7a) is inc.InceptionD
    assert type(net.Mixed_7b) is inc.FIDInceptionE1
    assert type(net.Mixed_7c) is inc.FIDInceptionE2


def test_inception_docstring_documents_preprocessing():
    doc = inc.__doc__ + FIDInceptionV3.__doc__
    for needle in ("299", "bilinear", "[-1, 1]", "2048"):
        assert needle in doc


# ---------------------------------------------------------------------- classifiers
def test_classifier_shapes_on_meta():
    with torch.device("meta"):
        for cls in (VGG16, AlexNet, ResNet50):
            out = cls()(torch.empty(2, 3, 224, 224))
            assert out.shape == (2, 1000), cls


def test_resnet50_logits_stride_and_frozen_bn():
    torch.manual_seed(0)
    net = resnet50(pretrained=False)
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    assert net.layer2[0].downsample[0].stride == (2, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()  # frozen: must stay in eval, BN statistics untouched
    out = net(_img(2, 64, 64))
    assert out.shape == (2, 1000) and torch.isfinite(out).all()
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(not p.requires_grad for p in net.parameters())


def test_unfrozen_is_trainable():
    net = resnet50(pretrained=False, frozen=False)
    assert net.training and all(p.requires_grad for p in net.parameters())


def test_alexnet_forward_and_features_only_variant():
    torch.manual_seed(0)
    net = alexnet(pretrained=False, include_classifier=False)
    assert not hasattr(net, "classifier")
    feats = net.lpips_features(_img(1, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 192, 384, 256, 256]
    with pytest.raises(RuntimeError):
        net(_img(1, 64, 64))


def test_no_cuda_calls_in_sources():
    import pathlib

    import flowmo.nets

    root = pathlib.Path(flowmo.nets.__file__).parent
    for f in root.glob("*.py"):
        assert ".cuda(" not in f.read_text(), f
