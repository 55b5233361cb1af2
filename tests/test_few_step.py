"""Few-step decoding: the knots grid, the distillation objective and the fixed-grid mode-seeking
chain on hand-worked velocity fields, the teacher, and the model's own sampler presets."""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import flowmo
from flowmo.losses import Distillation, ModeSeeking, window_bounds
from flowmo.samplers import build_grid, sample
from flowmo.spec import DistillationSpec, KnotsGridSpec, ModeSeekingSpec, SamplerSpec


# ----------------------------------------------------------------------------- the knots grid
def test_knots_grid_gives_its_knots_exactly_and_interpolates_between_them():
    knots = (1.0, 0.3, 0.05, 0.003, 0.0)
    g = build_grid({"name": "knots", "times": list(knots)})
    assert g(4).tolist() == list(knots)
    assert g(1).tolist() == [1.0, 0.0]
    # 8 steps: every knot, and the midpoints between neighbours
    assert torch.allclose(g(8), torch.tensor([1.0, 0.65, 0.3, 0.175, 0.05, 0.0265, 0.003, 0.0015, 0.0], dtype=torch.float64))
    assert g(8)[::2].tolist() == list(knots)


@pytest.mark.parametrize("times, match", [
    ((1.0,), "2 .."),
    ((0.9, 0.0), "from exactly 1"),
    ((1.0, 0.1), "to exactly 0"),
    ((1.0, 0.5, 0.5, 0.0), "strictly decreasing"),
    ((1.0, 0.2, 0.4, 0.0), "strictly decreasing"),
])
def test_knots_grid_spec_refuses_bad_times(times, match):
    with pytest.raises(ValueError, match=match):
        KnotsGridSpec(times=times)


def test_knots_grid_passes_the_time_grid_kit():
    from flowmo.testing import check_time_grid

    report = check_time_grid(build_grid({"name": "knots", "times": [1, 0.4, 0.1, 0]}), max_examples=10)
    assert report["monotone"] == 10


@given(st.integers(1, 200), st.integers(1, 200))
def test_window_bounds_cut_the_teacher_grid_into_k_nonempty_windows(steps, k):
    if k > steps:
        with pytest.raises(ValueError, match="at least k teacher steps"):
            window_bounds(steps, k)
        return
    b = window_bounds(steps, k)
    assert len(b) == k + 1 and b[0] == 0 and b[-1] == steps
    assert all(b1 > b0 for b0, b1 in zip(b, b[1:]))
    assert all(abs(n - j * steps / k) <= 0.5 for j, n in enumerate(b))


# ----------------------------------------------------------------------------- distillation
def _distill(k, teacher, **kw):
    return Distillation(DistillationSpec(k=k, teacher=teacher, **kw))


def _inputs(b=3, s=4, c=5, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(b, 3, s, s, generator=g, dtype=dtype) * 2 - 1)
    cond = torch.cat((torch.randn(b, 2, c, generator=g, dtype=dtype).sign(), torch.ones(b, 2, 1, dtype=dtype)), -1)
    noise = torch.randn(b, 3, s, s, generator=g, dtype=dtype)
    return x, cond, noise


def test_distillation_target_is_the_guided_teachers_average_velocity_hand_worked():
    """A teacher whose conditional velocity is the constant a and unconditional one b: on a
    linear grid of 10 steps with guidance 2 on [0.25, 0.55], the Euler steps at t = 0.5, 0.4,
    0.3 are guided (b + 2 (a - b)), the others not (a). A student returning 0 has the loss
    mean(v_teacher^2), v_teacher = sum(dt_i v_i) / window length."""
    a, bb, scale = 0.7, -0.4, 2.0
    teacher_sampler = SamplerSpec(steps=10, grid="linear", guidance={"scale": scale, "interval": (0.25, 0.55)},
                                  clip=False)

    def teacher(x_t, t, cond):
        conditional = (cond.flatten(1).abs().sum(1) > 0).view(-1, 1, 1, 1)
        return torch.where(conditional, torch.full_like(x_t, a), torch.full_like(x_t, bb))

    obj = _distill(2, teacher_sampler)  # windows: t 1 -> 0.5 (steps at 1.0 .. 0.6), t 0.5 -> 0 (0.5 .. 0.1)
    assert obj.times.tolist() == [1.0, 0.5, 0.0]
    x, cond, noise = _inputs()
    guided = bb + scale * (a - bb)
    expected = {0: a, 1: (3 * guided + 2 * a) / 5}  # window 1: t = 0.5, 0.4, 0.3 guided; 0.2, 0.1 not
    zero = lambda x_t, t, c: torch.zeros_like(x_t)  # noqa: E731
    for window, v in expected.items():
        u = torch.full((3,), (window + 0.5) / 2, dtype=torch.float64)
        terms = obj(zero, x, cond, noise=noise, u=u, teacher=teacher)
        assert math.isclose(float(terms["distillation"]), v * v, rel_tol=1e-12)


@pytest.mark.parametrize("k, window", [(1, 0), (3, 0), (3, 1), (3, 2)])
def test_distilled_step_is_exact_for_a_linear_flow(k, window):
    """Teacher v(z, t) = z (no guidance): its Euler steps over a window multiply z by
    prod(1 - dt_i), so the student velocity alpha* z with alpha* = (1 - prod(1 - dt_i)) / dt
    makes the one-step jump exactly: loss 0; alpha* + e gives e^2 mean(z^2)."""
    n = 12
    obj = _distill(k, SamplerSpec(steps=n, grid="linear", guidance={"scale": 1.0}, clip=False))
    lo, hi = obj.bounds[window], obj.bounds[window + 1]
    t = obj.teacher_times
    prod = math.prod(1 - float(t[i] - t[i + 1]) for i in range(lo, hi))
    width = float(t[lo] - t[hi])
    alpha = (1 - prod) / width
    x, cond, noise = _inputs()
    u = torch.full((3,), (window + 0.5) / k, dtype=torch.float64)
    teacher = lambda z, tt, c: z  # noqa: E731
    exact = obj(lambda z, tt, c: alpha * z, x, cond, noise=noise, u=u, teacher=teacher)["distillation"]
    assert float(exact) < 1e-24
    s0 = float(t[lo])
    z = (1 - s0) * x + s0 * noise
    off = obj(lambda z_, tt, c: (alpha + 0.1) * z_, x, cond, noise=noise, u=u, teacher=teacher)["distillation"]
    assert math.isclose(float(off), 0.01 * float(z.pow(2).mean()), rel_tol=1e-9)


def test_one_step_distillation_regresses_on_the_whole_teacher_sampler():
    """k = 1: the target is the teacher sampler's image from the noise (flowmo.samplers.sample,
    guidance and clipping included), reached in one step of length 1."""
    torch.manual_seed(0)
    w = torch.randn(3, 3, dtype=torch.float64)
    teacher = lambda z, t, c: torch.einsum("ij,bjhw->bihw", w, z) * t.view(-1, 1, 1, 1) + c.mean((1, 2)).view(-1, 1, 1, 1)  # noqa: E731
    spec = SamplerSpec(steps=7, grid={"name": "pow", "p": 0.5}, guidance={"scale": 1.5, "interval": (0.2, 0.8)})
    obj = _distill(1, spec)
    x, cond, noise = _inputs()
    image = sample(teacher, noise, cond, spec, null_cond=torch.zeros_like(cond)).images
    zero = lambda z, t, c: torch.zeros_like(z)  # noqa: E731
    got = obj(zero, x, cond, noise=noise, teacher=teacher)["distillation"]
    assert math.isclose(float(got), float((noise - image).pow(2).mean()), rel_tol=1e-10)


def test_distillation_refuses_bad_arguments():
    obj = _distill(2, SamplerSpec(steps=4))
    x, cond, noise = _inputs(dtype=torch.float32)
    v = lambda z, t, c: z  # noqa: E731
    with pytest.raises(TypeError, match="teacher="):
        obj(v, x, cond)
    with pytest.raises(ValueError, match=r"u must lie in \[0, 1\)"):
        obj(v, x, cond, teacher=v, u=torch.ones(3))
    with pytest.raises(ValueError, match="u must have shape"):
        obj(v, x, cond, teacher=v, u=torch.zeros(2))
    with pytest.raises(ValueError, match="noise must have"):
        obj(v, x, cond, teacher=v, noise=noise[:1])
    with pytest.raises(ValueError, match="fewer than the student's k"):
        DistillationSpec(k=5, teacher={"steps": 4})


def test_distillation_preset_is_k_unguided_steps_on_the_teacher_times():
    obj = _distill(4, SamplerSpec())  # the release's 25 steps on pow 0.25
    name, sampler = obj.sampler_preset()
    assert name == "distillation-4"
    assert sampler.steps == 4 and sampler.guidance.scale == 1.0 and sampler.solver.name == "euler"
    t = build_grid(sampler.grid)(4)
    assert t.tolist() == obj.teacher_times[[0, 6, 13, 19, 25]].tolist()


# ----------------------------------------------------------------------------- fixed-grid mode seeking
def test_fixed_grid_chain_lands_exactly_with_the_straight_flow_and_uses_the_grid_times():
    """v = (z - x) / t is the exact velocity of the straight path from x to the noise: Euler on
    any grid lands on x, so the MSE distance is 0; every call's t is the grid's time."""
    obj = ModeSeeking(ModeSeekingSpec(k=3, grid={"name": "pow", "p": 0.5}, weight=1.0, checkpoint=False))
    x, cond, noise = _inputs()
    seen = []

    def v(z, t, c):
        seen.append(t.clone())
        return (z - x) / t.double().view(-1, 1, 1, 1)

    terms = obj(v, x, cond, noise=noise)
    assert float(terms["mode_seeking"]) < 1e-12  # t reaches the velocity in float32
    grid = build_grid({"name": "pow", "p": 0.5})(3)
    assert [s.tolist() for s in seen] == [[float(torch.tensor(float(t), dtype=torch.float32))] * 3 for t in grid[:-1]]
    assert obj.sampler_preset()[0] == "mode_seeking-3"
    with pytest.raises(ValueError, match="u must be None"):
        obj(v, x, cond, noise=noise, u=torch.rand(3, 4, dtype=torch.float64))


# ----------------------------------------------------------------------------- the teacher in a model
def _tiny(posttrain):
    spec = flowmo.get_preset("tiny").replace(posttrain=posttrain)
    torch.manual_seed(0)
    return flowmo.FlowMo(spec)


@pytest.mark.parametrize("posttrain", [
    {"name": "distillation", "k": 2, "teacher": {"steps": 4}},
    {"name": "mode_seeking", "k": 2, "grid": {"name": "pow"}, "weight": 1.0},
])
def test_gradients_reach_only_the_decoder(posttrain):
    m = _tiny(posttrain)
    m.set_teacher()
    m.train()
    s = m.spec.image_size
    x = torch.rand(2, 3, s, s, generator=torch.Generator().manual_seed(1)) * 2 - 1
    m.posttrain_loss(x, generator=torch.Generator().manual_seed(2)).total.backward()
    for name, p in m.named_parameters():
        if not name.startswith("decoder."):
            assert p.grad is None or not bool(p.grad.any()), name
    assert any(p.grad is not None and bool(p.grad.any()) for p in m.decoder.parameters())
    assert all(p.grad is None for p in m._teacher.parameters())


def test_the_teacher_is_frozen_unsaved_and_moves_with_the_model(tmp_path):
    m = _tiny({"name": "distillation", "k": 1, "teacher": {"steps": 2}})
    s = m.spec.image_size
    x = torch.rand(2, 3, s, s) * 2 - 1
    with pytest.raises(ValueError, match="set_teacher"):
        m.posttrain_loss(x)
    m.set_teacher()
    assert not any("teacher" in k for k in m.state_dict())
    assert all(not p.requires_grad for p in m._teacher.parameters())
    m.double()
    assert all(p.dtype == torch.float64 for p in m._teacher.parameters())
    state = m.teacher_state()
    with pytest.raises(ValueError, match="teacher"):
        m.set_teacher({k: v for k, v in list(state.items())[1:]})
    m.save_pretrained(tmp_path / "f")
    assert flowmo.FlowMo.from_pretrained(tmp_path / "f")._teacher is None


# ----------------------------------------------------------------------------- the model's presets
def test_model_presets_win_over_global_ones_and_unknown_names_list_both(tmp_path):
    four = SamplerSpec(steps=4, guidance={"scale": 1.0})
    spec = flowmo.get_preset("tiny").replace(sampler_presets={"mine-4": four})
    m = flowmo.FlowMo(spec)
    code = m.quantize(m.encode(torch.zeros(1, 3, spec.image_size, spec.image_size))).values
    assert m.decode(code, sampler="mine-4").decoder_calls == 4
    assert m.decode(code, sampler="fast").decoder_calls == 10
    with pytest.raises(ValueError, match="this model's own: mine-4"):
        m.decode(code, sampler="nope")
    with pytest.raises(ValueError, match="preset name"):
        flowmo.get_preset("tiny").replace(sampler_presets={"has space": four})
    assert spec.fingerprint() == flowmo.get_preset("tiny").fingerprint()


def test_a_folder_written_before_sampler_presets_existed_loads(tmp_path):
    m = flowmo.FlowMo(flowmo.get_preset("tiny"))
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    del cfg["sampler_presets"]
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert flowmo.FlowMo.from_pretrained(tmp_path).spec.sampler_presets == {}


# ----------------------------------------------------------------------------- the kit
@pytest.mark.parametrize("spec", [
    DistillationSpec(k=2, teacher={"steps": 5, "guidance": {"scale": 2.0, "interval": (0.0, 0.6)}}),
    DistillationSpec(k=1, teacher={"steps": 3, "solver": "heun"}),
    ModeSeekingSpec(k=3, grid={"name": "knots", "times": [1.0, 0.5, 0.1, 0.0]}, weight=1.0),
])
def test_few_step_objectives_pass_the_posttrain_kit(spec):
    from flowmo.testing import check_posttrain

    report = check_posttrain(lambda: flowmo.POSTTRAIN_OBJECTIVES.build(spec), max_examples=3)
    assert report["gradients"] == 3


class _TrainsTheTeacher(Distillation):
    def teacher_step(self, teacher, z, cond, window, decoder_dtype):  # runs the teacher with autograd
        return z - (self.times[window] - self.times[window + 1]).item() * teacher(
            z.to(decoder_dtype), torch.full((z.shape[0],), float(self.times[window])), cond).to(z.dtype)


class _IgnoresTheTeacher(Distillation):
    def teacher_step(self, teacher, z, cond, window, decoder_dtype):
        teacher(z.to(decoder_dtype), torch.full((z.shape[0],), float(self.times[window])), cond)
        return torch.zeros_like(z)


class _NeverCallsTheTeacher(Distillation):
    def teacher_step(self, teacher, z, cond, window, decoder_dtype):
        return torch.zeros_like(z)


@pytest.mark.parametrize("cls, match", [
    (_TrainsTheTeacher, "gradients into the teacher"),
    (_IgnoresTheTeacher, "the teacher is not used"),
    (_NeverCallsTheTeacher, "never called the teacher"),
])
def test_the_posttrain_kit_catches_teacher_faults(cls, match):
    from flowmo.testing import check_posttrain

    spec = DistillationSpec(k=2, teacher={"steps": 4})
    with pytest.raises(AssertionError, match=match):
        check_posttrain(lambda: cls(spec), max_examples=2)


class _ChangesTheTeacher(Distillation):
    def teacher_step(self, teacher, z, cond, window, decoder_dtype):
        with torch.no_grad():
            for p in teacher.parameters():
                p.mul_(0.5)
        return super().teacher_step(teacher, z, cond, window, decoder_dtype)


class _ClaimsAGlobalName(Distillation):
    def sampler_preset(self):
        return "release", super().sampler_preset()[1]


def test_the_posttrain_kit_catches_a_changed_teacher_and_a_global_preset_name():
    from flowmo.testing import check_posttrain

    spec = DistillationSpec(k=2, teacher={"steps": 4})
    with pytest.raises(AssertionError, match="changed the teacher's weights"):
        check_posttrain(lambda: _ChangesTheTeacher(spec), max_examples=2)
    with pytest.raises(AssertionError, match="global sampler preset"):
        check_posttrain(lambda: _ClaimsAGlobalName(spec), max_examples=2)


@pytest.mark.parametrize("name", ["1", "4.0", "null", "true", "NaN", "release", "fast", "has space", ""])
def test_preset_names_that_would_be_misread_are_refused(name):
    with pytest.raises(ValueError, match="sampler_presets"):
        flowmo.get_preset("tiny").replace(sampler_presets={name: {"steps": 2}})


def test_the_spec_sampler_may_name_an_own_preset():
    spec = flowmo.get_preset("tiny").replace(sampler_presets={"mine-2": {"steps": 2, "guidance": {"scale": 1.0}}})
    assert spec.replace(sampler="mine-2").sampler == spec.sampler_presets["mine-2"]


def test_set_teacher_takes_a_whole_state_dict_and_refuses_bad_weights():
    m = _tiny({"name": "distillation", "k": 1, "teacher": {"steps": 2}})
    other = _tiny({"name": "distillation", "k": 1, "teacher": {"steps": 2}})
    with torch.no_grad():
        for p in other.decoder.parameters():
            p.add_(1.0)
    m.set_teacher(other.state_dict())  # the decoder.* entries are taken
    assert all(torch.equal(v, other.decoder.state_dict()[k]) for k, v in m.teacher_state().items())
    state = m.teacher_state()
    next(iter(state.values())).add_(1.0)  # a copy: the teacher is unchanged
    assert not torch.equal(next(iter(state.values())), next(iter(m.teacher_state().values())))
    bad = dict(state)
    k0 = next(iter(bad))
    bad[k0] = torch.full_like(bad[k0], float("nan"))
    with pytest.raises(ValueError, match="non-finite"):
        m.set_teacher(bad)
    with pytest.raises(TypeError, match="dense tensors"):
        m.set_teacher({k: 1.0 for k in state})
    with pytest.raises(TypeError, match="mapping"):
        m.set_teacher([1, 2])


def test_an_objective_that_needs_a_teacher_must_take_one(monkeypatch):
    class NoTeacherArg(Distillation):
        def __call__(self, velocity, x, cond, *, noise=None, u=None, generator=None):
            return {"distillation": x.sum() * 0}

    class NotABool(Distillation):
        needs_teacher = "yes"

    spec = DistillationSpec(k=1, teacher={"steps": 2})
    for cls, match in ((NoTeacherArg, "takes no teacher="), (NotABool, "must be a bool")):
        monkeypatch.setattr(flowmo.POSTTRAIN_OBJECTIVES, "build", lambda s, cls=cls: cls(spec))
        m = _tiny(spec.model_dump())
        with pytest.raises(TypeError, match=match):
            m.posttrain_objective


def test_set_teacher_refuses_non_string_keys():
    m = _tiny({"name": "distillation", "k": 1, "teacher": {"steps": 2}})
    with pytest.raises(TypeError, match="keys must be parameter names"):
        m.set_teacher({1: torch.zeros(1)})


def test_from_pretrained_on_a_checkpoint_folder_says_to_export(tmp_path):
    (tmp_path / "ckpt-00000002").mkdir()
    (tmp_path / "ckpt-00000002" / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="is a tokenizer training checkpoint.*flowmo export"):
        flowmo.FlowMo.from_pretrained(tmp_path / "ckpt-00000002")
