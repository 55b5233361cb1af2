"""The conformance kit covers every component kind: every registered component passes it (the
tests iterate the registries, so a newly registered component is checked without a new
test), and the kit catches each kind of broken component."""

from __future__ import annotations

import pytest
import torch

import flowmo
from flowmo.blocks import MMDiT
from flowmo.losses import MSEDistance, PerceptualDistance, RectifiedFlowLoss
from flowmo.losses.posttrain import ModeSeeking
from flowmo.nets.weights import MissingWeightsError
from flowmo.quantizers import LFQ, Quantizer, QuantizerOutput
from flowmo.samplers import TimeGrid
from flowmo.spec import LFQSpec, MMDiTSpec, ModeSeekingSpec, RectifiedFlowLossSpec
from flowmo.testing import (
    check_backbone,
    check_component,
    check_distance,
    check_flow_loss,
    check_posttrain,
    check_quantizer,
    check_time_grid,
)

# specs for registered components whose spec has required fields (the others use their defaults);
# a newly registered component with required fields fails below until it gets an entry here
EXAMPLE_SPECS = {
    ("backbone", "mmdit"): {"width": 16, "heads": 1, "depth": 1, "axes_dim": [4, 6, 6]},
    # small sizes for speed (the defaults are valid too)
    ("generator", "maskgit"): {"width": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0},
    ("generator", "autoregressive"): {"width": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0},
}
BACKBONE_WIRING = {"patch_dim": 12, "txt_in_dim": 6, "txt_out_dim": 7}
GENERATOR_WIRING = {"vocab_size": 16, "seq_len": 8, "num_classes": 3}


def _builtin_components():
    import flowmo.nets  # noqa: F401  the network distances

    return [(kind, name) for kind, reg in flowmo.REGISTRIES.items() for name in reg if reg.get(name).builtin]


def _wiring(kind: str, spec) -> dict:
    if kind == "backbone":
        return dict(BACKBONE_WIRING)
    if kind == "quantizer":
        for channels in (18, 6, 8, 12, 16, 3, 1):
            try:
                spec.check_channels(channels)
            except ValueError:
                continue
            return {"channels": channels}
        pytest.fail(f"no channel count fits the quantizer {spec.name!r}")
    if kind == "generator":
        return dict(GENERATOR_WIRING)
    return {}


@pytest.mark.parametrize("kind,name", _builtin_components(), ids="-".join)
def test_every_registered_component_passes_the_kit(kind, name):
    registry = flowmo.REGISTRIES[kind]
    fields = EXAMPLE_SPECS.get((kind, name), {})
    try:
        spec = registry.spec_base.model_validate({"name": name, **fields})
    except ValueError as e:
        pytest.fail(f"{kind} {name!r} needs an example spec in EXAMPLE_SPECS: {e}")
    try:
        report = check_component(spec, max_examples=4, **_wiring(kind, spec))
    except MissingWeightsError:
        pytest.skip(f"{kind} {name!r} needs weight files that are not installed")
    assert report and all(n >= 1 for n in report.values())


def test_check_component_refuses_what_is_not_a_component_spec():
    with pytest.raises(TypeError, match="component spec"):
        check_component(flowmo.flowmo_tiny())


# ----------------------------------------------------------------------------- time grids
class _ReversedGrid(TimeGrid):
    def __call__(self, steps):
        return self.fractions(steps).flip(0)


class _BumpyGrid(TimeGrid):
    """Runs 1 -> 0 but goes up once in the middle."""

    def __call__(self, steps):
        t = self.fractions(steps)
        if steps >= 3:
            t[1], t[2] = t[2].clone(), t[1].clone()
        return t


class _ShortGrid(TimeGrid):
    def __call__(self, steps):
        return self.fractions(steps)[:-1]


class _Float32Grid(TimeGrid):
    def __call__(self, steps):
        return self.fractions(steps).float()


class _EndsAboveZeroGrid(TimeGrid):
    def __call__(self, steps):
        return self.fractions(steps) * 0.99 + 0.01


class _JitteredGrid(TimeGrid):
    """Random interior times from the global RNG."""

    def __call__(self, steps):
        t = self.fractions(steps)
        t[1:-1] = (t[1:-1] + 1e-4 * torch.rand(steps - 1, dtype=torch.float64)).clamp(0, 1)
        return t


class _NoStepCheckGrid(TimeGrid):
    def __call__(self, steps):
        n = max(int(steps), 1)
        return torch.arange(n, -1, -1, dtype=torch.float64) / n


class _FloatsOffGrid(TimeGrid):
    """Its floats (what the sampler uses) are not its tensor (what the kit checks otherwise)."""

    def __call__(self, steps):
        return TimeGrid.fractions(steps)

    def floats(self, steps):
        return [t ** 2 for t in TimeGrid.fractions(steps).tolist()]


@pytest.mark.parametrize("grid,prop,message", [
    (_ReversedGrid(), "endpoints", "runs from 0 to 1: it is reversed"),
    (_EndsAboveZeroGrid(), "endpoints", "end at exactly 0"),
    (_BumpyGrid(), "monotone", "not strictly decreasing"),
    (_ShortGrid(), "shape", "expected"),
    (_Float32Grid(), "shape", "float64"),
    (_JitteredGrid(), "deterministic", "non-deterministic"),
    (_NoStepCheckGrid(), "bad_steps", "grid\\(0\\) did not raise"),
    (_FloatsOffGrid(), "floats", "the sampler would integrate another grid"),
])
def test_kit_catches_broken_time_grids(grid, prop, message):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: .*{message}"):
        check_time_grid(grid, max_examples=10)


def test_the_sampler_validates_what_a_grid_returns():
    flowmo.TIME_GRIDS.register("test_kinds_reversed")(_ReversedGrid)
    flowmo.TIME_GRIDS.register("test_kinds_bumpy")(_BumpyGrid)
    try:
        decoder = lambda x, t, c: torch.zeros_like(x)  # noqa: E731
        noise, cond = torch.randn(1, 3, 4, 4), torch.zeros(1, 2, 3)
        with pytest.raises(ValueError, match="time grid 'test_kinds_reversed' must run from t = 1"):
            flowmo.samplers.sample(decoder, noise, cond, {"steps": 4, "grid": {"name": "test_kinds_reversed"}})
        with pytest.raises(ValueError, match=r"'test_kinds_bumpy' must be strictly decreasing .* t\[1\]"):
            flowmo.samplers.sample(decoder, noise, cond, {"steps": 4, "grid": {"name": "test_kinds_bumpy"}})
    finally:
        flowmo.TIME_GRIDS.unregister("test_kinds_reversed")
        flowmo.TIME_GRIDS.unregister("test_kinds_bumpy")


# ----------------------------------------------------------------------------- quantizers
class _NormalisedSign(LFQ):
    """Normalises each token to unit length first: an all-zero token gives 0 / 0 = NaN."""

    def forward(self, z):
        zn = z / z.norm(dim=-1, keepdim=True)
        out = super().forward(zn)
        return QuantizerOutput(out.values, out.indices, out.losses, out.stats)


class _Float64StraightThroughSign(LFQ):
    """values = z + (q - z).detach() in float64: exact for ordinary inputs (bfloat16 included),
    but 1e30 + (1 - 1e30) is 0, not the codeword 1."""

    def forward(self, z):
        out = super().forward(z)
        z64 = z.double()
        values = (z64 + (out.values.detach().double() - z64).detach()).to(z.dtype)
        return QuantizerOutput(values, out.indices, out.losses, out.stats)


# all-zero tokens also occur among the drawn inputs' exact zeros: 'output' may see them first
@pytest.mark.parametrize("cls,prop", [(_NormalisedSign, "(all_zero|output)"), (_Float64StraightThroughSign, "extreme")])
def test_kit_catches_quantizers_that_fail_on_zero_or_extreme_inputs(cls, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_quantizer(lambda: cls(LFQSpec(group_bits=3), channels=6), 6, max_examples=10)


class _BadBits(LFQ):
    @property
    def bits_per_token(self):
        return self.channels + 1.0  # more than log2(codebook_size)


def test_kit_checks_the_declared_capabilities():
    with pytest.raises(AssertionError, match="property 'attributes' failed: bits_per_token"):
        check_quantizer(_BadBits(LFQSpec(group_bits=3), channels=6), 6, max_examples=2)


# ----------------------------------------------------------------------------- backbones
_SMALL = MMDiTSpec(width=16, heads=1, depth=1, axes_dim=(4, 6, 6))


class _BatchMixing(MMDiT):
    def forward(self, img, txt, t, grid, outputs=("img", "txt")):
        io, to = super().forward(img, txt, t, grid, outputs)
        return (None if io is None else io + io.mean(0, keepdim=True)), to


class _DeafDecoder(MMDiT):
    """The image output ignores the latent tokens."""

    def forward(self, img, txt, t, grid, outputs=("img", "txt")):
        io, _ = super().forward(img, torch.zeros_like(txt), t, grid, outputs)
        _, to = super().forward(img, txt, t, grid, outputs)
        return io, to


class _NoisyBackbone(MMDiT):
    def forward(self, img, txt, t, grid, outputs=("img", "txt")):
        io, to = super().forward(img, txt, t, grid, outputs)
        return (None if io is None else io + 1e-3 * torch.randn_like(io)), to


class _ShortOutput(MMDiT):
    def forward(self, img, txt, t, grid, outputs=("img", "txt")):
        io, to = super().forward(img, txt, t, grid, outputs)
        return (None if io is None else io[:, :, :-1]), to


class _IgnoresOutputs(MMDiT):
    def forward(self, img, txt, t, grid, outputs=("img", "txt")):
        return super().forward(img, txt, t, grid)


@pytest.mark.parametrize("cls,prop,message", [
    (_BatchMixing, "batch_independent", "depends on the rest of the batch"),
    (_DeafDecoder, "cross_stream", "does not depend on the latent tokens"),
    (_NoisyBackbone, "deterministic", "non-deterministic: two eval-mode calls gave different img_out"),
    (_ShortOutput, "output", "img_out has shape"),
    (_IgnoresOutputs, "output", "returned as None"),
])
def test_kit_catches_broken_backbones(cls, prop, message):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: .*{message}"):
        check_backbone(lambda: cls(_SMALL, **BACKBONE_WIRING), **BACKBONE_WIRING, max_examples=4)


def test_kit_reports_a_non_deterministic_backbone_plainly():
    class Noisy(MMDiT):
        def forward(self, img, txt, t, grid, outputs=("img", "txt")):
            io, to = super().forward(img, txt, t, grid, outputs)
            return io, (None if to is None else to + 1e-3 * torch.randn_like(to))

    with pytest.raises(AssertionError, match="non-deterministic"):
        check_backbone(Noisy(_SMALL, **BACKBONE_WIRING), **BACKBONE_WIRING, max_examples=4)


def test_kit_rejects_a_non_backbone():
    with pytest.raises(AssertionError, match="expected a flowmo.blocks.base.Backbone"):
        check_backbone(torch.nn.Linear(2, 2), **BACKBONE_WIRING)


# ----------------------------------------------------------------------------- flow losses
class _DetachedLoss(RectifiedFlowLoss):
    def __call__(self, velocity, x, cond, t, noise, *, dropout=True, generator=None):
        terms = super().__call__(velocity, x, cond, t, noise, dropout=dropout, generator=generator)
        return {k: v.detach() for k, v in terms.items()}


class _GlobalRngLoss(RectifiedFlowLoss):
    def __call__(self, velocity, x, cond, t, noise, *, dropout=True, generator=None):
        return super().__call__(velocity, x, cond, t, torch.randn_like(noise), dropout=dropout, generator=generator)


class _VectorLoss(RectifiedFlowLoss):
    def __call__(self, velocity, x, cond, t, noise, *, dropout=True, generator=None):
        v = velocity((1 - t.view(-1, 1, 1, 1)) * x + t.view(-1, 1, 1, 1) * noise, t, cond)
        return {"diffusion": (noise - x - v).pow(2).flatten(1).mean(1)}  # (B,), not a scalar


class _WrongTimeShape(RectifiedFlowLoss):
    def __call__(self, velocity, x, cond, t, noise, *, dropout=True, generator=None):
        return super().__call__(lambda x_t, tt, c: velocity(x_t, tt[:, None], c), x, cond, t, noise,
                                dropout=dropout, generator=generator)


@pytest.mark.parametrize("cls,prop,message", [
    (_DetachedLoss, "gradients", "no gradient reached the velocity"),
    (_GlobalRngLoss, "deterministic", "non-deterministic"),
    (_VectorLoss, "terms", "must be a scalar"),
    (_WrongTimeShape, "terms", "called velocity with t of shape"),
])
def test_kit_catches_broken_flow_losses(cls, prop, message):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: .*{message}"):
        check_flow_loss(cls(RectifiedFlowLossSpec()), max_examples=5)


# ----------------------------------------------------------------------------- distances
class _OffsetDistance(MSEDistance):
    def forward(self, x, y):
        return super().forward(x, y) + 0.1


class _BatchNormalisedDistance(MSEDistance):
    def forward(self, x, y):
        d = super().forward(x, y)
        return d / d.mean().clamp_min(1e-12)


class _SignedDistance(PerceptualDistance):
    def forward(self, x, y):
        return (x - y).flatten(1).mean(1)


class _DetachedDistance(MSEDistance):
    def forward(self, x, y):
        return super().forward(x.detach(), y)


class _BroadcastingDistance(PerceptualDistance):
    def forward(self, x, y):
        return (x.mean((2, 3), keepdim=True) - y.mean((2, 3), keepdim=True)).pow(2).flatten(1).mean(1)


@pytest.mark.parametrize("cls,prop", [
    (_OffsetDistance, "identity"),
    (_BatchNormalisedDistance, "batch_independent"),
    (_SignedDistance, "output"),
    (_DetachedDistance, "gradients"),
    (_BroadcastingDistance, "mismatch"),
])
def test_kit_catches_broken_distances(cls, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_distance(cls(), max_examples=5)


# ----------------------------------------------------------------------------- post-training objectives
_MS = ModeSeekingSpec(k=2, checkpoint=False)


class _GlobalRngObjective(ModeSeeking):
    def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
        return super().__call__(velocity, x, cond, noise=noise, u=torch.rand(x.shape[0], self.spec.k + 1),
                                generator=generator)


class _NoiseIgnoringObjective(ModeSeeking):
    def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
        return super().__call__(velocity, x, cond, noise=None, u=u, generator=generator)


class _DetachedObjective(ModeSeeking):
    def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
        terms = super().__call__(velocity, x, cond, noise=noise, u=u, generator=generator)
        return {k: v.detach() for k, v in terms.items()}


@pytest.mark.parametrize("cls,prop", [
    (_GlobalRngObjective, "deterministic"),
    (_NoiseIgnoringObjective, "noise"),
    (_DetachedObjective, "gradients"),
])
def test_kit_catches_broken_posttrain_objectives(cls, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_posttrain(cls(_MS), max_examples=3)


def test_kit_checks_for_the_interface():
    class NotAQuantizer(torch.nn.Module):
        pass

    assert not isinstance(NotAQuantizer(), Quantizer)
    with pytest.raises(AssertionError, match="expected a flowmo.losses.perceptual.PerceptualDistance"):
        check_distance(lambda x, y: (x - y).abs().mean((1, 2, 3)))
    with pytest.raises(AssertionError, match="expected a flowmo.losses.flow.FlowLoss"):
        check_flow_loss(lambda *a, **k: {})
