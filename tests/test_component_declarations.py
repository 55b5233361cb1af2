"""What a component registered with one decorator line declares, and what is refused at build:

- loss terms and channel checks are declared on the class (classmethods taking the spec),
  with the interface's defaults (a quantizer: no terms, any channel count; a flow loss or
  post-training objective: undeclared, refused by ``loss_terms`` with how to declare them);
- a quantizer whose constructor forgets ``codebook_size`` (or ``channels``) is refused when
  built, naming the attribute;
- messages say "an ODE solver", and a channel mismatch says which field to set."""

from __future__ import annotations

import pytest
import torch

import flowmo
import flowmo.testing
from flowmo import LossTerm
from flowmo.losses import FlowLoss, PosttrainObjective
from flowmo.quantizers import Quantizer, QuantizerOutput
from flowmo.registry import with_article


@pytest.fixture
def registered():
    added = []

    def register(registry, name, obj):
        registry.register(name)(obj)
        added.append((registry, name))
        return obj

    yield register
    for registry, name in added:
        if name in registry:
            registry.unregister(name)


class _Sign(Quantizer):
    """The README's quantizer: declares nothing."""

    def __init__(self, *, scale: float = 1.0, channels: int):
        super().__init__()
        self.scale, self.channels, self.codebook_size = scale, channels, 2**channels

    def forward(self, z):
        q = torch.where(z > 0, self.scale, -self.scale).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q))

    def codes_to_indices(self, codes):
        return ((codes > 0).long() << torch.arange(self.channels, device=codes.device)).sum(-1)

    def indices_to_codes(self, indices):
        bits = (indices[..., None] >> torch.arange(self.channels, device=indices.device)) & 1
        return (bits.float() * 2 - 1) * self.scale


class _CommittingSign(_Sign):
    """Adds a commitment term, declares it and needs an even channel count."""

    def __init__(self, *, scale: float = 1.0, commit_weight: float = 0.25, channels: int):
        super().__init__(scale=scale, channels=channels)
        self.commit_weight = commit_weight

    def forward(self, z):
        out = super().forward(z)
        # finite for any finite z (the kit's extreme inputs), 0 for no tokens
        mse = (z.float().clamp(-1e4, 1e4) - out.values.detach().float()).square().sum() / max(z.numel(), 1)
        out.losses = {"commitment": self.commit_weight * mse}
        return out

    @classmethod
    def loss_terms(cls, spec):
        return [LossTerm("commitment", spec.commit_weight, "mean((z - sign(z))^2)")]

    @classmethod
    def check_channels(cls, spec, channels):
        if channels % 2:
            raise ValueError(f"code_channels ({channels}) must be even for this quantizer")


def test_a_decorator_quantizer_declares_no_terms_by_default(registered):
    registered(flowmo.QUANTIZERS, "t15_sign", _Sign)
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "t15_sign"})
    assert spec.quantizer.loss_terms() == []
    assert [t.name for t in spec.loss_terms("1a")] == ["diffusion"]
    assert [t.name for t in spec.loss_terms("1b")] == ["diffusion", "mode_seeking"]
    model = flowmo.build(spec).train()
    out = model.loss(torch.zeros(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {t.name for t in spec.loss_terms("1a")}
    assert flowmo.testing.check_component(spec.quantizer, max_examples=3, channels=18)["declared_loss_terms"] == 1


def test_a_decorator_quantizer_declares_terms_and_channels_on_its_class(registered):
    registered(flowmo.QUANTIZERS, "t15_commit", _CommittingSign)
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "t15_commit", "commit_weight": 0.5})
    assert spec.loss_terms("1a") == [spec.loss_terms("1a")[0], LossTerm("quantizer/commitment", 0.5,
                                                                        "mean((z - sign(z))^2)")]
    model = flowmo.build(spec).train()
    out = model.loss(torch.zeros(1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    assert set(out.terms) == {t.name for t in spec.loss_terms("1a")} == {"diffusion", "quantizer/commitment"}
    with pytest.raises(ValueError, match=r"code_channels \(5\) must be even for this quantizer"):
        spec.replace(code_channels=5)
    flowmo.testing.check_component(spec.quantizer, max_examples=3, channels=18)


def test_the_kit_finds_terms_a_quantizer_returns_without_declaring(registered):
    class Undeclared(_CommittingSign):
        @classmethod
        def loss_terms(cls, spec):
            return Quantizer.loss_terms(spec)  # back to the default: []

    registered(flowmo.QUANTIZERS, "t15_undeclared", Undeclared)
    spec = flowmo.QuantizerSpec.model_validate({"name": "t15_undeclared"})
    with pytest.raises(AssertionError, match=r"'declared_loss_terms' failed: .*returns the terms \['commitment'\] "
                                             r"but its spec declares \[\].*classmethod loss_terms\(cls, spec\)"):
        flowmo.testing.check_component(spec, max_examples=3, channels=4)


class _Flow(FlowLoss):
    def __init__(self, *, weight: float = 2.0):
        self.weight = weight

    def __call__(self, velocity, x, cond, t, noise, *, dropout=True, generator=None):
        tt = t.view(-1, 1, 1, 1).to(x.dtype)
        v = velocity((1 - tt) * x + tt * noise, t, cond)
        return {"mine": self.weight * (v - (noise - x)).square().mean()}


class _DeclaredFlow(_Flow):
    @classmethod
    def loss_terms(cls, spec):
        return [LossTerm("mine", spec.weight, "mean((v - (eps - x))^2)")]


class _Objective(PosttrainObjective):
    def __init__(self, *, weight: float = 0.5):
        self.weight = weight

    def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype) if noise is None else noise
        v = velocity(eps, torch.ones(x.shape[0], dtype=x.dtype), cond)
        return {"one_step": self.weight * (eps - v - x).square().mean()}

    @classmethod
    def loss_terms(cls, spec):
        return [LossTerm("one_step", spec.weight, "mean((x - one Euler step from noise)^2)")]


def test_flow_losses_and_objectives_declare_on_their_class(registered):
    registered(flowmo.FLOW_LOSSES, "t15_flow", _DeclaredFlow)
    registered(flowmo.POSTTRAIN_OBJECTIVES, "t15_post", _Objective)
    spec = flowmo.flowmo_tiny().replace(flow_loss={"name": "t15_flow", "weight": 3.0},
                                        posttrain={"name": "t15_post", "flow_weight": 0.5})
    assert [(t.name, t.weight) for t in spec.loss_terms("1a")] == [
        ("mine", 3.0), ("quantizer/entropy", 0.0025), ("quantizer/commitment", 0.000625)]
    assert [(t.name, t.weight) for t in spec.loss_terms("1b")] == [
        ("mine", 1.5), ("quantizer/entropy", 0.0025), ("quantizer/commitment", 0.000625), ("one_step", 0.5)]
    model = flowmo.build(spec).train()
    images = torch.zeros(1, 3, 32, 32)
    assert set(model.loss(images, generator=torch.Generator().manual_seed(0)).terms) == {
        t.name for t in spec.loss_terms("1a")}
    assert set(model.posttrain_loss(images, generator=torch.Generator().manual_seed(0)).terms) == {
        t.name for t in spec.loss_terms("1b")}
    for part in (spec.flow_loss, spec.posttrain):
        assert flowmo.testing.check_component(part, max_examples=2)["declared_loss_terms"] == 1


def test_an_undeclared_flow_loss_is_refused_saying_how_to_declare(registered):
    registered(flowmo.FLOW_LOSSES, "t15_flow_silent", _Flow)
    spec = flowmo.flowmo_tiny().replace(flow_loss={"name": "t15_flow_silent"})
    assert spec.flow_loss.loss_terms() is None
    with pytest.raises(ValueError, match=r"flow_loss 't15_flow_silent' does not declare its loss terms.*classmethod "
                                         r"`loss_terms\(cls, spec\)` returning \[flowmo.LossTerm"):
        spec.loss_terms("1a")
    with pytest.raises(AssertionError, match="does not declare its loss terms"):
        flowmo.testing.check_component(spec.flow_loss, max_examples=2)


def test_a_quantizer_without_codebook_size_is_refused_at_build(registered):
    class Forgetful(_Sign):
        def __init__(self, *, channels: int):
            Quantizer.__init__(self)
            self.channels = channels  # no codebook_size

    class NoChannels(_Sign):
        def __init__(self, *, channels: int):
            Quantizer.__init__(self)
            self.codebook_size = 2**channels

    class WrongChannels(_Sign):
        def __init__(self, *, channels: int):
            super().__init__(channels=channels + 1)

    registered(flowmo.QUANTIZERS, "t15_forgetful", Forgetful)
    registered(flowmo.QUANTIZERS, "t15_nochannels", NoChannels)
    registered(flowmo.QUANTIZERS, "t15_wrongchannels", WrongChannels)
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "t15_forgetful"})  # a spec: no component built yet
    message = r"quantizer 't15_forgetful': .*Forgetful does not set codebook_size .* set self.codebook_size in its " \
              r"constructor"
    with pytest.raises(TypeError, match=message):
        flowmo.build(spec)
    with pytest.raises(TypeError, match=message):
        spec.bits_per_pixel  # noqa: B018
    with pytest.raises(TypeError, match="NoChannels does not set channels"):
        flowmo.QUANTIZERS.build("t15_nochannels", channels=4)
    with pytest.raises(ValueError, match=r"WrongChannels.channels is 5 but it was built with channels=4"):
        flowmo.QUANTIZERS.build("t15_wrongchannels", channels=4)


def test_channel_mismatch_messages_say_what_to_set():
    with pytest.raises(ValueError, match=r"levels has 6 entries but code_channels is 18.*set code_channels to 6 "
                                         r"\(--set model.code_channels=6"):
        flowmo.flowmo_tiny().replace(quantizer={"name": "fsq"})
    with pytest.raises(ValueError, match=r"must be divisible by quantizer.group_bits \(9\): set code_channels to a "
                                         r"multiple of 9 \(e.g. 18; .* a divisor of 20 \(e.g. 5;"):
        flowmo.flowmo_tiny().replace(code_channels=20)


def test_articles_in_messages():
    assert [with_article(n) for n in ("ODE solver", "quantizer", "entropy group", "LFQ", "FSQSpec", "MMDiT",
                                      "QuantizerSpec", "uniform grid", "unknown name", "time sampler")] == [
        "an ODE solver", "a quantizer", "an entropy group", "an LFQ", "an FSQSpec", "an MMDiT", "a QuantizerSpec",
        "a uniform grid", "an unknown name", "a time sampler"]
    with pytest.raises(TypeError, match=r"\(an ODE solver takes: none\)"):
        flowmo.SOLVERS.build("euler", channels=3)
    assert flowmo.SOLVERS.spec_base.registry is flowmo.SOLVERS
