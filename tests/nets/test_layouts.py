"""Module state dicts (random init, built on the meta device) equal the published
layouts of the standard weight files, written as literal data in ``layouts.py``."""

import pytest
import torch
from torch import nn

from flowmo.nets.alexnet import AlexNet
from flowmo.nets.inception import FIDInceptionV3
from flowmo.nets.lpips import LPIPS
from flowmo.nets.resnet import ResNet50
from flowmo.nets.vgg import VGG16

from . import layouts as L

COUNTER = ".num_batches_tracked"


def _layout(module: nn.Module) -> dict:
    return {k: tuple(v.shape) for k, v in module.state_dict().items() if not k.endswith(COUNTER)}


def _diff(got: dict, want: dict) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    shapes = sorted(f"{k}: {got[k]} != {want[k]}" for k in set(got) & set(want) if got[k] != want[k])
    return f"missing={missing[:10]} extra={extra[:10]} shapes={shapes[:10]}"


def _meta(factory):
    with torch.device("meta"):
        return factory()


@pytest.mark.parametrize(
    "factory, layout, count",
    [
        (VGG16, L.VGG16, L.EXPECTED_COUNTS["VGG16"]),
        (AlexNet, L.ALEXNET, L.EXPECTED_COUNTS["ALEXNET"]),
        (ResNet50, L.RESNET50, L.EXPECTED_COUNTS["RESNET50"]),
        (FIDInceptionV3, L.INCEPTION_FID, L.EXPECTED_COUNTS["INCEPTION_FID"]),
    ],
    ids=["vgg16", "alexnet", "resnet50", "inception_fid"],
)
def test_state_dict_matches_published_layout(factory, layout, count):
    assert len(layout) == count  # the literal data itself is complete
    net = _meta(factory)
    got = _layout(net)
    assert got == layout, _diff(got, layout)


@pytest.mark.parametrize(
    "factory, n",
    [(VGG16, L.VGG16_NUM_PARAMS), (AlexNet, L.ALEXNET_NUM_PARAMS), (ResNet50, L.RESNET50_NUM_PARAMS)],
    ids=["vgg16", "alexnet", "resnet50"],
)
def test_parameter_counts(factory, n):
    net = _meta(factory)
    assert sum(p.numel() for p in net.parameters()) == n


@pytest.mark.parametrize("factory", [ResNet50, FIDInceptionV3], ids=["resnet50", "inception_fid"])
def test_batchnorm_counters_are_the_only_extra_keys(factory):
    net = _meta(factory)
    sd = net.state_dict()
    counters = {k for k in sd if k.endswith(COUNTER)}
    bns = [n for n, m in net.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert counters == {f"{n}{COUNTER}" for n in bns}


def test_inception_basicconv_is_conv_without_bias_and_bn_eps_1e3():
    net = _meta(FIDInceptionV3)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(convs) == len(bns) == 94
    assert all(c.bias is None for c in convs)
    assert all(b.eps == 0.001 for b in bns)


@pytest.mark.parametrize("net, heads, trunk", [("vgg", L.LPIPS_VGG_HEADS, L.VGG16), ("alex", L.LPIPS_ALEX_HEADS, L.ALEXNET)])
def test_lpips_layout(net, heads, trunk):
    model = _meta(lambda: LPIPS(net))
    assert _layout(model.heads()) == heads
    trunk_features = {k: v for k, v in trunk.items() if k.startswith("features.")}
    assert _layout(model.net) == trunk_features
    # full module: trunk under "net.", heads at top level (as in the lpips package);
    # the scaling constants are not part of any weight file
    want = {f"net.{k}": v for k, v in trunk_features.items()} | heads
    assert _layout(model) == want
