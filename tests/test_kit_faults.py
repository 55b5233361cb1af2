"""What the conformance kit missed in a break-it review: solvers that ignore the grid spacing or
evaluate v at the wrong time, intermittent non-determinism, quantizers that modify their input,
depend on the batch, or give NaN/inf losses on extreme or empty inputs; and LFQ's own losses."""

import math

import pytest
import torch

import flowmo
from flowmo.quantizers import LFQ, Quantizer, QuantizerOutput
from flowmo.quantizers.common import LOSS_CLAMP
from flowmo.samplers import Euler, Heun, Solver, TimeGrid
from flowmo.spec import LFQSpec
from flowmo.testing import check_quantizer, check_solver, check_time_grid
from flowmo.testing.quantizer import LARGE


# ----------------------------------------------------------------------------- solvers
class _UniformDt(Solver):
    """Steps of -1 / steps whatever the grid: right on the linear grid only."""

    def step(self, v, z, t, tn):
        raise NotImplementedError

    def solve(self, v, z, times, callback=None):
        n = len(times) - 1
        for i in range(n):
            z = z + (-1.0 / n) * v(z, float(times[i]))
            if callback:
                callback(i, z)
        return z


class _EndTime(Solver):
    """Euler with v evaluated at the step's end."""

    def step(self, v, z, t, tn):
        return z + (tn - t) * v(z, tn)


class _FixedTime(Solver):
    def step(self, v, z, t, tn):
        return z + (tn - t) * v(z, 1.0)


class _Float32Time(Solver):
    """Hands the velocity a float32 time (rounded)."""

    def step(self, v, z, t, tn):
        return z + (tn - t) * v(z, torch.tensor(t, dtype=torch.float32))


class _Midpoint(Solver):
    """Explicit midpoint: 2nd order, first call at the step's start."""

    def step(self, v, z, t, tn):
        dt = tn - t
        return z + dt * v(z + dt / 2 * v(z, t), t + dt / 2)


@pytest.mark.parametrize("solver,match", [
    (_UniformDt(), "property 't_dependent' failed: velocity a \\+ b t on a grid of .* uneven steps.*exceeds .* "
                   "the solver ignores the grid spacing or evaluates v at the wrong time"),
    (_EndTime(), "the solver evaluates v at the wrong time: step 0 .* calls velocity first at t = 0.0; the state "
                 "is known at the step's start t = 1.0"),
    (_FixedTime(), "the solver evaluates v at the wrong time: step 1 .* calls velocity at t = 1.0, outside the step"),
    (_Float32Time(), "evaluates v at the wrong time"),
])
def test_check_solver_catches_solvers_that_use_the_wrong_step_or_time(solver, match):
    with pytest.raises(AssertionError, match=match):
        check_solver(solver, max_examples=10)


@pytest.mark.parametrize("solver,order", [(Euler(), 1), (Heun(), 1), (Heun(), 2), (_Midpoint(), 2)])
def test_correct_solvers_pass_the_t_dependent_property(solver, order):
    report = check_solver(solver, order=order, max_examples=10)
    assert report["t_dependent"] == 10


def test_the_t_dependent_bound_is_eulers_error():
    """The bound the kit uses, |b| / 2 * sum(dt^2), is met with equality by Euler (computed here by hand)."""
    times = torch.tensor([1.0, 0.9, 0.5, 0.1, 0.0], dtype=torch.float64)
    a, b, z = 0.3, 2.0, torch.tensor(1.0, dtype=torch.float64)
    out = Euler().solve(lambda z_, t: torch.full_like(z_, a + b * t), z, times)
    exact = float(z) - a - b / 2
    dt2 = sum((float(times[i + 1] - times[i])) ** 2 for i in range(4))  # 0.01 + 0.16 + 0.16 + 0.01
    assert math.isclose(abs(float(out) - exact), abs(b) / 2 * dt2, rel_tol=1e-12)


@pytest.mark.parametrize("kwargs", [{"order": True}, {"order": 0}, {"max_examples": True}])
def test_check_solver_arguments_refuse_booleans(kwargs):
    with pytest.raises(ValueError):
        check_solver(Euler(), **kwargs)


# ----------------------------------------------------------------------------- non-determinism
class _FlakyGrid(TimeGrid):
    """Every 5th call repeats a time: a failure hypothesis cannot reproduce."""

    def __init__(self):
        self.calls = 0

    def __call__(self, steps):
        self.calls += 1
        t = self.fractions(steps)
        if self.calls % 5 == 0 and steps > 2:
            t = t.clone()
            t[1] = t[2]
        return t


def test_intermittent_failures_are_reported_as_non_determinism():
    with pytest.raises(AssertionError) as e:
        check_time_grid(_FlakyGrid(), max_examples=10)
    msg = str(e.value)
    assert msg.startswith("check_time_grid: property 'deterministic' failed: non-deterministic: while checking "
                          "'monotone', an example failed and then passed when run again"), msg
    assert "is not strictly decreasing" in msg and "Flaky" not in msg and "Hypothesis" not in msg


@pytest.mark.parametrize("value", [True, 0, -1, 2.0])
def test_check_time_grid_max_steps_must_be_a_positive_int(value):
    with pytest.raises(ValueError, match="max_steps must be a positive int"):
        check_time_grid(flowmo.samplers.build_grid("linear"), max_steps=value)


# ----------------------------------------------------------------------------- quantizers
class _Sign(Quantizer):
    def __init__(self, channels=4):
        super().__init__()
        self.channels, self.codebook_size = channels, 2**channels

    def forward(self, z):
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q))

    def codes_to_indices(self, codes):
        return ((codes > 0).long() << torch.arange(self.channels, device=codes.device)).sum(-1)

    def indices_to_codes(self, indices):
        return ((indices[..., None] >> torch.arange(self.channels, device=indices.device)) & 1).float() * 2 - 1


class _ModifiesInput(_Sign):
    def forward(self, z):
        out = super().forward(z)
        with torch.no_grad():
            z.mul_(2)
        return out


class _CentresOverTheBatch(_Sign):
    def forward(self, z):
        q = torch.where(z - z.mean(dim=(0, 1), keepdim=True) > 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q))


class _SquaredCommitment(_Sign):
    """A commitment loss that overflows float32 for huge inputs."""

    def forward(self, z):
        out = super().forward(z)
        out.losses["commitment"] = (z.float() - out.values.detach().float()).pow(2).mean()
        return out


class _SafeCommitment(_Sign):
    def forward(self, z):
        out = super().forward(z)
        d = (z.float() - out.values.detach().float()).clamp(-1e4, 1e4)
        out.losses["commitment"] = d.pow(2).sum() / max(d.numel(), 1)
        return out


class _RefusesEmpty(_SafeCommitment):
    def forward(self, z):
        if z.numel() == 0:
            raise ValueError("z has no tokens")
        return super().forward(z)


@pytest.mark.parametrize("cls,prop,match", [
    (_ModifiesInput, "input_unchanged", "eval-mode forward modified its input in place"),
    (_CentresOverTheBatch, "batch_independent", "sample 0's indices depend on the rest of the batch"),
    (_SquaredCommitment, "extreme", r"losses on inputs of magnitude .* \(train mode\): the term 'commitment' must be "
                                    "a finite float"),
])
def test_check_quantizer_catches(cls, prop, match):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: {match}"):
        check_quantizer(cls, 4, max_examples=10)


def test_check_quantizer_catches_nan_losses_on_inputs_without_tokens():
    class MeanOverNothing(_SafeCommitment):
        def forward(self, z):
            out = super().forward(z)
            out.losses["commitment"] = (z.float() - out.values.detach().float()).clamp(-1e4, 1e4).pow(2).mean()
            return out

    with pytest.raises(AssertionError, match=r"property 'empty' failed: an input of shape \(0, 2, 4\) \(no tokens\): "
                                             r"losses \(eval mode\): the term 'commitment' must be a finite float, "
                                             r"got tensor\(nan"):
        check_quantizer(MeanOverNothing, 4, max_examples=3)


@pytest.mark.parametrize("cls", [_SafeCommitment, _RefusesEmpty])
def test_quantizers_with_finite_losses_or_a_clear_refusal_pass(cls):
    report = check_quantizer(cls, 4, max_examples=5)
    assert {"input_unchanged", "batch_independent", "empty", "extreme"} <= set(report)


# ----------------------------------------------------------------------------- LFQ's losses
@pytest.mark.parametrize("magnitude", [1e4, 1e20, 1e30, 1.7e38, float(torch.finfo(torch.float32).max)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lfq_training_losses_are_finite_for_any_finite_input(magnitude, dtype):
    q = LFQ(LFQSpec(), channels=18).train()
    z = torch.randn(2, 3, 18, generator=torch.Generator().manual_seed(0))
    z[0, 0], z[1, 1] = magnitude, -magnitude
    z = z.to(dtype).requires_grad_(True)
    out = q(z)
    assert all(bool(torch.isfinite(v)) for v in out.losses.values()), out.losses
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    # the commitment of a clamped input, computed by hand: (clamp(z) - sign(z))^2 averaged
    zc = z.detach().float().clamp(-LOSS_CLAMP, LOSS_CLAMP)
    expected = ((zc - torch.where(zc > 0, 1.0, -1.0)) ** 2).mean()
    torch.testing.assert_close(out.stats["commitment"], expected)


def test_lfq_losses_are_unchanged_for_ordinary_inputs():
    """Below the clamp the release's formulas hold exactly (computed here independently)."""
    spec = LFQSpec(group_bits=3)
    q = LFQ(spec, channels=6).train()
    z = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(1)) * 2
    out = q(z)
    commit = ((z - torch.where(z > 0, 1.0, -1.0)) ** 2).mean()
    torch.testing.assert_close(out.losses["commitment"], spec.commit_weight * commit)
    # entropy groups: strided, bit j of group h is channel j * groups + h
    groups = z.reshape(-1, 6).unflatten(-1, (3, 2)).transpose(-1, -2).reshape(-1, 3)
    codebook = torch.tensor([[1.0 if (k >> j) & 1 else -1.0 for j in range(3)] for k in range(8)])
    p = torch.softmax(2 / spec.temperature * groups @ codebook.t(), -1)
    per_sample = torch.special.entr(p.double()).sum(-1).mean().float()  # -p log p, 0 where p = 0
    pbar = p.mean(0)
    codebook_entropy = -(pbar * torch.log(pbar + 1e-5)).sum()
    torch.testing.assert_close(out.losses["entropy"], spec.entropy_weight * (per_sample - codebook_entropy))


@pytest.mark.parametrize("shape", [(0, 3, 18), (2, 0, 18), (0, 0, 18)])
def test_lfq_inputs_without_tokens_give_empty_codes_and_zero_losses(shape):
    q = LFQ(LFQSpec(), channels=18)
    z = torch.zeros(shape, requires_grad=True)
    for mode in (False, True):
        q.train(mode)
        out = q(z)
        assert out.values.shape == shape and out.indices.shape == shape[:2]
        assert {k: float(v.detach()) for k, v in out.losses.items()} == {"entropy": 0.0, "commitment": 0.0}
    out.loss.backward()
    assert z.grad.shape == shape


def test_lfq_with_a_tiny_temperature_keeps_finite_entropies():
    q = LFQ(LFQSpec(temperature=1e-30), channels=18).train()
    z = (torch.randn(2, 3, 18, generator=torch.Generator().manual_seed(2)) * 1e30).requires_grad_(True)
    out = q(z)
    out.loss.backward()
    assert all(bool(torch.isfinite(v)) for v in out.losses.values()) and torch.isfinite(z.grad).all()


# ----------------------------------------------------------------------------- issue 22: the kit's gaps
class _ScalesByTheBatch(Quantizer):
    """Batch-dependent: scales by the batch's mean |z|, then rounds to the integers -2 .. 2. The
    values' mean |.| is not 1, so quantizing them again moves them: it used to fail 'idempotent'
    first, with the hint to switch that check off."""

    def __init__(self, channels=4):
        super().__init__()
        self.channels, self.codebook_size = channels, 5**channels
        self.register_buffer("_basis", 5 ** torch.arange(channels), persistent=False)

    def forward(self, z):
        scale = z.abs().mean().clamp_min(1e-12) if z.numel() else 1.0
        q = torch.round((z / scale).clamp(-2, 2)).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q))

    def codes_to_indices(self, codes):
        return ((torch.round(codes.float()).long() + 2) * self._basis).sum(-1)

    def indices_to_codes(self, indices):
        return ((indices.long()[..., None] // self._basis) % 5).float() - 2


def test_a_batch_dependent_quantizer_is_reported_as_batch_dependent_not_as_non_idempotent():
    with pytest.raises(AssertionError) as e:
        check_quantizer(_ScalesByTheBatch, 4, max_examples=10)
    msg = str(e.value)
    assert "property 'batch_independent' failed" in msg and "depend on the rest of the batch" in msg, msg
    assert "forward_idempotent" not in msg, msg


class _VQ(Quantizer):
    """Nearest-codeword vector quantization with a learnable codebook, trained by the VQ-VAE
    codebook loss mean((sg(z) - e)^2) (commitment left out); straight-through values."""

    detach_codebook = False

    def __init__(self, channels=4, size=16):
        super().__init__()
        self.channels, self.codebook_size = channels, size
        self.codebook = torch.nn.Parameter(torch.randn(size, channels, generator=torch.Generator().manual_seed(0)))

    def _nearest(self, codes):
        # argmax of <z, e> - |e|^2 / 2 in float64: finite for any finite float32 z
        e = self.codebook.detach().double()
        return (codes.detach().double() @ e.t() - 0.5 * (e * e).sum(-1)).argmax(-1)

    def forward(self, z):
        idx = self._nearest(z)
        book = self.codebook.detach() if self.detach_codebook else self.codebook
        e = book[idx]
        q = e.detach().to(z.dtype)
        err = (z.detach().float().clamp(-1e4, 1e4) - e.float()).square()
        return QuantizerOutput(q + (z - z.detach()), idx, {"codebook": err.sum() / max(err.numel(), 1)})

    def codes_to_indices(self, codes):
        return self._nearest(codes)

    def indices_to_codes(self, indices):
        return self.codebook.detach().float()[indices.long()]


class _DetachedCodebookVQ(_VQ):
    detach_codebook = True


class _UnusedScaleVQ(_VQ):
    """A learnable parameter that reaches the loss only multiplied by 0."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, z):
        out = super().forward(z)
        out.losses["codebook"] = out.losses["codebook"] + 0.0 * self.scale
        return out


def test_a_learnable_quantizer_whose_parameters_train_passes_every_property():
    report = check_quantizer(_VQ, 4, max_examples=5)
    assert report["parameter_gradients"] >= 5


@pytest.mark.parametrize("cls,match", [
    (_DetachedCodebookVQ, "the parameter 'codebook' gets no gradient from the quantizer's loss or values"),
    (_UnusedScaleVQ, "the parameter 'scale' gets an all-zero gradient"),
])
def test_a_learnable_quantizer_whose_parameters_never_train_is_caught(cls, match):
    with pytest.raises(AssertionError, match=f"property 'parameter_gradients' failed: {match}"):
        check_quantizer(cls, 4, max_examples=5)


class _LargeBatchFastPath(_Sign):
    """Right for small inputs; from 8 samples on a 'fast path' returns int32 indices."""

    def forward(self, z):
        out = super().forward(z)
        if z.shape[0] >= 8:
            out.indices = out.indices.int()
        return out


class _LargeBatchStatistics(_Sign):
    """Normalises by the batch's statistics once the batch holds 64 tokens or more."""

    def forward(self, z):
        if z.shape[0] * z.shape[1] >= 64:
            z = z - z.mean(dim=(0, 1), keepdim=True)
        return super().forward(z)


@pytest.mark.parametrize("cls,prop", [(_LargeBatchFastPath, "output"), (_LargeBatchStatistics, "batch_independent")])
def test_paths_taken_only_for_larger_batches_are_checked(cls, prop):
    # however few examples are drawn: every property runs on one input of LARGE = 8 x 16 first
    assert LARGE == (8, 16)
    with pytest.raises(AssertionError, match=f"property '{prop}' failed"):
        check_quantizer(cls, 4, max_examples=1)


class _TrainModeOnlyCommitment(_SafeCommitment):
    """The loss term exists in training mode only: a fine-tuning loop that forgot .train() on a
    loaded (eval-mode) model would train without it."""

    def forward(self, z):
        out = super().forward(z)
        if not self.training:
            out.losses.clear()
        return out


def test_a_quantizer_whose_losses_depend_on_the_mode_is_caught():
    with pytest.raises(AssertionError, match=r"property 'losses' failed: the losses depend on the module's mode: "
                                             r"train mode gives \{'commitment': .*\}, eval mode \{\}"):
        check_quantizer(_TrainModeOnlyCommitment, 4, max_examples=3)


def test_kit_messages_name_a_term_in_words():
    with pytest.raises(AssertionError) as e:
        check_quantizer(_SquaredCommitment, 4, max_examples=3)
    msg = str(e.value)
    assert "losses on inputs of magnitude 1e+30 (train mode): the term 'commitment' must be a finite float" in msg, msg
    assert "['commitment']" not in msg and "1e+30[" not in msg


class _InferenceRoundsOtherwise(_SafeCommitment):
    """An inference path (Quantizer.quantize) that rounds zeros the other way than forward."""

    def quantize(self, z):
        q = torch.where(z >= 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(q, self.codes_to_indices(q))


class _InferenceInt32(_SafeCommitment):
    def quantize(self, z):
        out = self(z)
        return QuantizerOutput(out.values, out.indices.int())


class _InferenceOtherWithoutGrad(_SafeCommitment):
    def quantize(self, z):
        out = self(z)
        return QuantizerOutput(out.values, out.indices if torch.is_grad_enabled() else out.indices.flip(0))


class _InferenceModifiesInput(_SafeCommitment):
    def quantize(self, z):
        out = self(z)
        z.zero_()
        return out


@pytest.mark.parametrize("cls, words", [
    (_InferenceRoundsOtherwise, r"quantize \(eval mode\) gives other indices than forward"),
    (_InferenceInt32, r"quantize \(eval mode\) gives indices of dtype torch.int32"),
    (_InferenceOtherWithoutGrad, r"quantize \(eval mode\) gives other indices than forward"),
    (_InferenceModifiesInput, r"quantize modified its input in place"),
])
def test_a_quantize_that_disagrees_with_forward_is_caught(cls, words):
    with pytest.raises(AssertionError, match=r"property 'inference' failed: " + words):
        check_quantizer(cls, 4, max_examples=5)


# ----------------------------------------------------------------------------- stateful quantizers
class _Counting(_SafeCommitment):
    """Stateful done right: a persistent buffer that training-mode forward updates, declared in
    updated_state; quantize does not update it."""

    def __init__(self, channels=4):
        super().__init__(channels)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))
        self.updated_state = ("calls",)

    def forward(self, z):
        out = super().forward(z)
        if self.training:
            with torch.no_grad():
                self.calls += 1
        return out

    def quantize(self, z):
        return _SafeCommitment.forward(self, z)


class _UndeclaredState(_Counting):
    def __init__(self, channels=4):
        super().__init__(channels)
        self.updated_state = ()


class _UpdatesInEvalMode(_Counting):
    def forward(self, z):
        out = _SafeCommitment.forward(self, z)
        with torch.no_grad():
            self.calls += 1
        return out


class _NonPersistentState(_Counting):
    def __init__(self, channels=4):
        super().__init__(channels)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64), persistent=False)


class _StateOutsideTheStateDict(_Counting):
    """Its update depends on a python counter the state dict does not hold."""

    def __init__(self, channels=4):
        super().__init__(channels)
        self.hidden = 0

    def forward(self, z):
        out = _SafeCommitment.forward(self, z)
        if self.training:
            self.hidden += 1
            with torch.no_grad():
                self.calls += self.hidden
        return out


class _QuantizeUpdatesState(_Counting):
    quantize = Quantizer.quantize  # the default, forward: updates the state in training mode


def test_a_stateful_quantizer_that_declares_its_state_passes():
    report = check_quantizer(_Counting, 4, max_examples=4)
    assert report["state"] >= 1 and report["state_roundtrip"] >= 1 and report["deterministic"] >= 1


@pytest.mark.parametrize("cls, words", [
    (_UndeclaredState, r"property '\w+' failed: forward \(training mode\) changed \['calls'\]: a training-mode "
                       r"forward may change only the state the quantizer declares in updated_state \(\[\]\)"),
    (_UpdatesInEvalMode, r"property 'output' failed: forward \(eval mode\) changed \['calls'\]: an eval-mode call "
                         r"must change no parameter or buffer"),
    (_NonPersistentState, r"property 'attributes' failed: updated_state names 'calls', which is not a persistent "
                          r"buffer"),
    (_StateOutsideTheStateDict, r"property 'state_roundtrip' failed: after a training-mode forward, the fresh "
                                r"instance that loaded the saved state has another 'calls'"),
    (_QuantizeUpdatesState, r"property 'inference' failed: quantize \(training mode\) changed \['calls'\]: "
                            r"quantize never updates state"),
])
def test_a_stateful_quantizer_that_breaks_the_state_contract_is_caught(cls, words):
    with pytest.raises(AssertionError, match=words):
        check_quantizer(cls, 4, max_examples=4)


def test_the_kit_leaves_a_stateful_quantizer_as_it_was_given():
    q = _Counting()
    q.calls += 5
    check_quantizer(q, 4, max_examples=3)
    assert int(q.calls) == 5 and q.training


def test_a_flow_loss_whose_drawn_dropout_differs_from_its_own_draw_is_caught():
    """check_flow_loss's drawn_dropout: draw_dropout must make the draw dropout=True makes (a
    compiled training step uses it in place of the generator); the built-in passes."""
    from flowmo.losses import RectifiedFlowLoss
    from flowmo.spec import RectifiedFlowLossSpec
    from flowmo.testing import check_flow_loss

    class KeepsAll(RectifiedFlowLoss):
        def draw_dropout(self, batch, generator=None, device=None):
            return torch.ones(batch, dtype=torch.bool)

    with pytest.raises(AssertionError, match="drawn_dropout"):
        check_flow_loss(KeepsAll(RectifiedFlowLossSpec(cfg_dropout=0.5)))
    assert check_flow_loss(RectifiedFlowLoss(RectifiedFlowLossSpec(cfg_dropout=0.5)))["drawn_dropout"] > 0
