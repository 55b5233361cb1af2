"""Every place that runs a network the caller passed in runs it in eval mode without gradients
and leaves it as it was: each submodule's ``training`` flag (a mixed train/eval module stays
mixed), its buffers (BatchNorm statistics), and outputs that do not depend on the batch.

The generation metrics' ``inception=`` (evaluate_generation, measure_reference) are tested in
tests/eval/test_eval_gen.py; here: inception_features, the reconstruction Evaluator's
``inception=`` and ``lpips_nets=``, evaluate_model's model, generate_images' tokenizer, the token
generators' own ``generate``, and the classifier's features (the few-step benchmark's FD)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import flowmo
from flowmo.data.token_layout import layout_for
from flowmo.metrics import Evaluator
from examples.fashion.classifier import SmallClassifier, classifier_frechet
from flowmo.metrics.run import evaluate_model
from flowmo.metrics.generation import inception_features
from flowmo.generators import AutoregressiveGenerator, MaskGiT, generate_images
from flowmo.nets.inception import FIDInceptionV3


def _flags(module: nn.Module) -> list:
    return [m.training for m in module.modules()]


def _buffers(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.named_buffers()}


def _same_buffers(module: nn.Module, before: dict) -> bool:
    after = dict(module.named_buffers())
    return after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


def _mixed(module: nn.Module, eval_child: nn.Module) -> nn.Module:
    """``module`` in training mode with one child in eval mode (a state to give back exactly)."""
    module.train()
    eval_child.eval()
    return module


def _bn_with_statistics(bn: nn.BatchNorm2d, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn.running_mean.copy_(torch.rand(bn.num_features, generator=g) - 0.5)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
    return bn


class _Features(nn.Module):
    """(B, 3, H, W) -> (B, 6): conv, BatchNorm, conv, BatchNorm, spatial mean."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = _bn_with_statistics(nn.BatchNorm2d(6), seed)
        self.head = nn.Sequential(nn.Conv2d(6, 6, 1), _bn_with_statistics(nn.BatchNorm2d(6), seed + 1))

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x)))).mean(dim=(2, 3))


class _Distance(nn.Module):
    """An LPIPS-like (x, y) -> (B,) distance through BatchNorm features."""

    def __init__(self):
        super().__init__()
        self.features = _Features(3)

    def forward(self, x, y):
        return (self.features(x) - self.features(y)).pow(2).sum(dim=1)


class _Reconstructor(nn.Module):
    """images -> images + 0.1 * BatchNorm(conv(images)), a reconstruction that depends on BatchNorm."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = _bn_with_statistics(nn.BatchNorm2d(3), 4)

    def forward(self, x):
        return (x + 0.1 * self.bn(self.conv(x))).clamp(-1, 1)


def _images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------------------------- helper
def test_evaluating_gives_back_each_flag_also_after_an_error():
    from flowmo.nets.frozen import evaluating

    net = _Features()
    _mixed(net, net.head)
    flags, buffers = _flags(net), _buffers(net)
    with pytest.raises(RuntimeError, match="inside"):
        with evaluating(net):
            assert not any(_flags(net)) and not torch.is_grad_enabled()
            net(_images(2, 0))
            raise RuntimeError("inside")
    assert _flags(net) == flags and flags != [False] * len(flags) and flags != [True] * len(flags)
    assert _same_buffers(net, buffers) and torch.is_grad_enabled()


# ---------------------------------------------------------------------------------------------- inception_features
class _TinyInception(FIDInceptionV3):
    """A FIDInceptionV3 (accepted by inception_features) with a cheap forward through its real
    ``Mixed_6d.branch1x1`` (conv, BatchNorm, ReLU) on the images area-resized to 17x17 and tiled
    to 768 channels."""

    def __init__(self):
        torch.manual_seed(6)
        super().__init__()
        _bn_with_statistics(self.Mixed_6d.branch1x1.bn, 6)

    def forward(self, x):
        small = nn.functional.interpolate(x, size=(17, 17), mode="area").repeat(1, 256, 1, 1)
        spatial = self.Mixed_6d.branch1x1(small)
        return nn.functional.pad(spatial.mean(dim=(2, 3)), (0, 2048 - 192))


def test_inception_features():
    net = _TinyInception()
    _mixed(net, net.Conv2d_1a_3x3)
    flags, buffers = _flags(net), _buffers(net)
    x = _images(4, 1)
    both = inception_features(net, x)
    first = inception_features(net, x[:1])
    for a, b in zip(both, first):
        torch.testing.assert_close(a[:1], b, rtol=1e-5, atol=1e-6)
    assert not both.pool.requires_grad
    assert _flags(net) == flags and _same_buffers(net, buffers)


# ---------------------------------------------------------------------------------------------- Evaluator
def test_the_reconstruction_evaluators_explicit_networks():
    inc, dist = _Features(), _Distance()
    expected_net = copy.deepcopy(dist).eval()
    _mixed(inc, inc.head)
    _mixed(dist, dist.features.head)
    flags = (_flags(inc), _flags(dist))
    buffers = (_buffers(inc), _buffers(dist))
    x, y = _images(6, 2), _images(6, 3)

    def run(batch):
        ev = Evaluator(lpips=(), inception=inc, lpips_nets={"vgg": dist}, device="cpu")
        assert (_flags(inc), _flags(dist)) == flags  # building the evaluator changes nothing
        for a in range(0, 6, batch):
            ev.update(x[a:a + batch], y[a:a + batch])
        return ev.compute(), ev.per_image()["lpips_vgg"]

    (m6, lp6), (m2, lp2) = run(6), run(2)
    assert m6["rfid"] == pytest.approx(m2["rfid"], rel=1e-6)
    torch.testing.assert_close(torch.from_numpy(lp6), torch.from_numpy(lp2), rtol=1e-5, atol=1e-7)
    with torch.no_grad():  # the eval-mode network's values on the 8-bit images (the standard protocol)
        q = lambda t: torch.round((t + 1) * 127.5) / 127.5 - 1  # noqa: E731
        expected = expected_net(q(x), q(y))
    torch.testing.assert_close(torch.from_numpy(lp6).float(), expected, rtol=1e-5, atol=1e-7)
    assert (_flags(inc), _flags(dist)) == flags
    assert _same_buffers(inc, buffers[0]) and _same_buffers(dist, buffers[1])


# ---------------------------------------------------------------------------------------------- evaluate_model
def test_evaluate_models_model():
    model = _Reconstructor()
    _mixed(model, model.bn)
    flags, buffers = _flags(model), _buffers(model)
    x = _images(6, 5)
    psnr = {}
    for batch in (6, 2):
        ev = Evaluator(lpips=(), fid=False)
        evaluate_model(model, x, evaluator=ev, batch_size=batch, progress=False)
        psnr[batch] = ev.per_image()["psnr"]
    assert psnr[6].tolist() == pytest.approx(psnr[2].tolist(), rel=1e-6)
    assert _flags(model) == flags and _same_buffers(model, buffers)


# ---------------------------------------------------------------------------------------------- generators
@pytest.fixture(scope="module")
def tokenizer():
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2}))


def _generator(cls, layout):
    torch.manual_seed(1)
    return cls(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=2, width=32, depth=1, heads=2,
               mlp_ratio=2.0)


def test_generate_images_tokenizer_and_generator(tokenizer):
    layout = layout_for(tokenizer)
    gen = _generator(MaskGiT, layout)
    _mixed(tokenizer, tokenizer.decoder)
    _mixed(gen, next(iter(gen.children())))
    flags = (_flags(tokenizer), _flags(gen))
    buffers = (_buffers(tokenizer), _buffers(gen))
    out = generate_images(gen, tokenizer, [0, 1], steps=2, layout=layout, sampler={"steps": 2})
    assert out.images.shape[0] == 2 and not out.images.requires_grad
    assert (_flags(tokenizer), _flags(gen)) == flags
    assert _same_buffers(tokenizer, buffers[0]) and _same_buffers(gen, buffers[1])


@pytest.mark.parametrize("cls", [MaskGiT, AutoregressiveGenerator])
def test_a_generators_own_generate(tokenizer, cls):
    gen = _generator(cls, layout_for(tokenizer))
    _mixed(gen, next(iter(gen.children())))
    flags = _flags(gen)
    steps = 2 if cls is MaskGiT else None
    gen.generate(torch.tensor([0, 1]), steps=steps, generator=torch.Generator().manual_seed(0))
    assert _flags(gen) == flags


# ---------------------------------------------------------------------------------------------- classifier
def test_the_classifiers_features_and_frechet():
    clf = SmallClassifier(image_size=8, num_classes=2, channels=(4, 4), feature_dim=8)
    _mixed(clf, clf.conv1)
    flags = _flags(clf)
    x = _images(6, 7, size=8)
    feats = clf.features(x, batch_size=2)
    torch.testing.assert_close(feats, clf.features(x, batch_size=6))
    assert not feats.requires_grad
    classifier_frechet(clf, x[:3], x[3:], batch_size=2)
    clf.predict(x)
    assert _flags(clf) == flags
