"""The conformance kit (flowmo.testing) passes our components and catches broken ones."""

from __future__ import annotations

import pytest
import torch

from flowmo.losses import FatLogitNormalTime, LogitNormalTime, UniformTime
from flowmo.quantizers import FSQ, LFQ, QuantizerOutput
from flowmo.samplers import Euler, Heun, Solver
from flowmo.spec import FatLogitNormalTimeSpec, FSQSpec, LFQSpec, LogitNormalTimeSpec, UniformTimeSpec
from flowmo.testing import check_quantizer, check_solver, check_time_sampler

QUANTIZER_PROPERTIES = {"output", "indices_roundtrip", "codes_roundtrip", "idempotent", "gradients", "losses",
                        "deterministic", "inference", "bfloat16", "all_zero", "extreme", "input_unchanged", "batch_independent",
                        "empty", "state", "state_roundtrip"}


# ----------------------------------------------------------------------------- our components pass
@pytest.mark.parametrize("channels,group_bits", [(18, 9), (56, 14), (62, 2), (62, 1), (6, 3), (1, 1)])
def test_lfq_conforms(channels, group_bits):
    # with 14 bits per group every call scores 2^14 codewords per group and token (losses too, in
    # either mode): fewer drawn examples keep it to seconds (the large explicit input still runs)
    report = check_quantizer(lambda: LFQ(LFQSpec(group_bits=group_bits), channels=channels), channels,
                             max_examples=15 if group_bits < 14 else 2)
    assert set(report) == QUANTIZER_PROPERTIES | {"groups"}  # LFQ has entropy groups
    assert all(n >= 1 for n in report.values())


@pytest.mark.parametrize("levels", [(8, 8, 8, 5, 5, 5), (2, 3), (7,), (4,), (2,), (1000, 2000, 3)])
def test_fsq_conforms(levels):
    # FSQ bounds its input with tanh, which is not the identity on its codewords: forward(values)
    # may land on a neighbouring codeword, so only codebook idempotence is asked of it.
    q = FSQ(FSQSpec(levels=levels), channels=len(levels))
    report = check_quantizer(q, len(levels), max_examples=15)  # FSQ declares forward_idempotent = False
    assert set(report) == QUANTIZER_PROPERTIES


def test_kit_restores_training_mode():
    q = LFQ(LFQSpec(group_bits=3), channels=6).train()
    check_quantizer(q, 6, max_examples=2)
    assert q.training
    q.eval()
    check_quantizer(q, 6, max_examples=2)
    assert not q.training


@pytest.mark.parametrize("sampler", [
    UniformTime(UniformTimeSpec()),
    UniformTime(UniformTimeSpec(shift=3.0)),
    LogitNormalTime(LogitNormalTimeSpec()),
    LogitNormalTime(LogitNormalTimeSpec(mean=-0.5, std=2.0, shift=0.3)),
    FatLogitNormalTime(FatLogitNormalTimeSpec()),
    FatLogitNormalTime(FatLogitNormalTimeSpec(uniform_fraction=1.0, shift=5.0)),
], ids=lambda s: f"{type(s).__name__}-{getattr(s.spec, 'shift', 1.0)}")
def test_time_samplers_conform(sampler):
    report = check_time_sampler(sampler, max_examples=15)
    assert {"draws", "empty", "reproducible", "seeds_differ", "mean"} <= set(report)


@pytest.mark.parametrize("solver,order", [(Euler(), 1), (Heun(), 2), (Heun(), 1)])
def test_solvers_conform(solver, order):
    report = check_solver(solver, order=order, max_examples=20)
    assert ("linear_in_t" in report) == (order >= 2)
    assert report["constant"] >= 1 and report["convergence"] >= 1


# ----------------------------------------------------------------------------- the kit catches broken ones
class _OffByOneLFQ(LFQ):
    """indices_to_codes decodes the next index."""

    def indices_to_codes(self, indices):
        return super().indices_to_codes((indices + 1) % self.codebook_size)


class _NoStraightThroughLFQ(LFQ):
    def forward(self, z):
        out = super().forward(z)
        return QuantizerOutput(out.values.detach(), out.indices, out.losses, out.stats)


class _Float32OnlyLFQ(LFQ):
    """Always returns float32 values, whatever the input dtype."""

    def forward(self, z):
        out = super().forward(z)
        return QuantizerOutput(out.values.float(), out.indices, out.losses, out.stats)


class _NoisyLFQ(LFQ):
    """Non-deterministic: flips the sign of a random channel."""

    def forward(self, z):
        flip = torch.ones(self.channels, dtype=z.dtype)
        flip[torch.randint(self.channels, ())] = -1
        return super().forward(z * flip)


class _NanLossLFQ(LFQ):
    def forward(self, z):
        out = super().forward(z)
        out.losses["entropy"] = out.losses["entropy"] * float("nan")
        return out


class _OldStraightThroughLFQ(LFQ):
    """values = z + (q - z).detach(): not exactly q for large bfloat16 inputs."""

    def forward(self, z):
        out = super().forward(z)
        q = out.values.detach()
        return QuantizerOutput(z + (q - z).detach(), out.indices, out.losses, out.stats)


class _Int32IndicesLFQ(LFQ):
    def forward(self, z):
        out = super().forward(z)
        return QuantizerOutput(out.values, out.indices.int(), out.losses, out.stats)


@pytest.mark.parametrize("cls,prop", [
    (_OffByOneLFQ, "indices_roundtrip"),
    (_NoStraightThroughLFQ, "gradients"),
    (_Float32OnlyLFQ, "bfloat16"),
    (_NoisyLFQ, "deterministic"),
    (_NanLossLFQ, "losses"),
    (_OldStraightThroughLFQ, "bfloat16"),
    (_Int32IndicesLFQ, "output"),
])
def test_kit_catches_broken_quantizers(cls, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_quantizer(lambda: cls(LFQSpec(group_bits=9), channels=18), 18, max_examples=15)


def test_kit_catches_fsq_without_forward_idempotence():
    assert FSQ.forward_idempotent is False and LFQ.forward_idempotent is True  # declared on the interface
    with pytest.raises(AssertionError, match="property 'idempotent' failed.*declare forward_idempotent = False on the quantizer class"):
        check_quantizer(FSQ(FSQSpec(levels=(8, 5)), channels=2), 2, max_examples=25, forward_idempotent=True)


def test_non_determinism_is_reported_plainly():
    with pytest.raises(AssertionError, match="property 'deterministic' failed: non-deterministic: two (eval|train)-mode "
                                             "calls on the same input gave different"):
        check_quantizer(lambda: _NoisyLFQ(LFQSpec(group_bits=9), channels=18), 18, max_examples=15)


def test_kit_rejects_wrong_channels_and_non_quantizers():
    with pytest.raises(AssertionError, match="channels"):
        check_quantizer(LFQ(LFQSpec(group_bits=9), channels=18), 9)
    with pytest.raises(AssertionError, match="Quantizer"):
        check_quantizer(lambda: torch.nn.Identity(), 4)


class _ForwardStepEuler(Solver):
    """Steps with the wrong sign of dt."""

    def step(self, velocity, z, t, t_next):
        return z + (t - t_next) * velocity(z, t)


class _StaleHeun(Solver):
    """Evaluates the corrector at the old time: only first order, not exact for v = a + b t."""

    def step(self, velocity, z, t, t_next):
        dt = t_next - t
        v1 = velocity(z, t)
        return z + dt * 0.5 * (v1 + velocity(z + dt * v1, t))


class _LazyHeun(Solver):
    """Exact for z-independent fields but first order: the corrector ignores the predictor."""

    def step(self, velocity, z, t, t_next):
        return z + (t_next - t) * 0.5 * (velocity(z, t) + velocity(z, t_next))


class _InPlaceEuler(Solver):
    def step(self, velocity, z, t, t_next):
        return z.add_((t_next - t) * velocity(z, t))


class _SilentEuler(Euler):
    """Never calls the callback."""

    def solve(self, velocity, z, times, callback=None):
        return super().solve(velocity, z, times, None)


@pytest.mark.parametrize("solver,order,prop", [
    (_ForwardStepEuler(), 1, "constant"),
    (_StaleHeun(), 2, "linear_in_t"),
    (_LazyHeun(), 2, "convergence"),
    (Euler(), 2, "linear_in_t"),
    (_InPlaceEuler(), 1, "constant"),
    (_SilentEuler(), 1, "constant"),
])
def test_kit_catches_broken_solvers(solver, order, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_solver(solver, order=order, max_examples=20)


def _constant_sampler(n, *, generator=None, dtype=torch.float32):
    return torch.full((n,), 0.5, dtype=dtype)


def _global_rng_sampler(n, *, generator=None, dtype=torch.float32):
    return torch.rand(n).to(dtype)


def _out_of_range_sampler(n, *, generator=None, dtype=torch.float32):
    return (torch.rand(n, generator=generator, dtype=torch.float64) * 1.1).to(dtype)


def _float32_only_sampler(n, *, generator=None, dtype=torch.float32):
    return torch.rand(n, generator=generator)


@pytest.mark.parametrize("sampler,prop", [
    (_constant_sampler, "seeds_differ"),
    (_global_rng_sampler, "reproducible"),
    (_out_of_range_sampler, "draws"),
    (_float32_only_sampler, "draws"),
])
def test_kit_catches_broken_time_samplers(sampler, prop):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_time_sampler(sampler, max_examples=15)


def test_kit_argument_errors():
    with pytest.raises(ValueError, match="order"):
        check_solver(Euler(), order=0)
    with pytest.raises(ValueError, match="max_examples"):
        check_time_sampler(UniformTime(UniformTimeSpec()), max_examples=0)


def test_missing_hypothesis_gives_a_clear_import_error(monkeypatch):
    import sys

    for mod in [m for m in sys.modules if m == "hypothesis" or m.startswith("hypothesis.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # makes `import hypothesis` fail
    with pytest.raises(ImportError, match="pip install hypothesis"):
        check_solver(Euler())
