"""Decoding: time grids, solvers and classifier-free guidance, with a toy decoder."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.registry import TIME_GRIDS
from flowmo.samplers import Euler, Heun, build_grid, sample
from flowmo.spec import GuidanceSpec, PowGridSpec, SamplerSpec, ShiftedGridSpec, SolverSpec, TimeGridSpec, sigma_to_t

FAST = settings(max_examples=25, deadline=None, derandomize=True, database=None)

B, T, C = 2, 4, 6  # batch, code tokens, code channels (+1 mask channel in cond)


class ToyDecoder:
    """v = a * x + (mean of cond per sample): guidance changes the result; records every call."""

    def __init__(self, a: float = -0.7):
        self.a = a
        self.calls: list[tuple[int, list[float], torch.Tensor]] = []  # (batch, t values, cond)

    def __call__(self, x, t, cond):
        assert t.shape == (x.shape[0],) and t.dtype == torch.float32
        assert cond.shape[0] == x.shape[0]
        self.calls.append((x.shape[0], t.tolist(), cond.detach().clone()))
        return self.a * x + cond.mean(dim=(1, 2)).view(-1, *([1] * (x.ndim - 1)))

    def images_evaluated(self, batch: int) -> int:
        return sum(n for n, _, _ in self.calls) // batch


def _inputs(seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(B, 3, 4, 4, generator=g, requires_grad=requires_grad)
    cond = torch.cat((torch.randn(B, T, C, generator=g), torch.ones(B, T, 1)), -1)
    return noise, cond


def _grid_spec(name, params):
    entry = TIME_GRIDS.get(name)
    if entry.spec is None:
        return TimeGridSpec.model_validate(name)
    return entry.spec(**params.get(name, {}))


# ----------------------------------------------------------------------------- grids
grid_params = st.fixed_dictionaries({
    "pow": st.fixed_dictionaries({"p": st.floats(0.1, 10.0)}),
    "shifted": st.fixed_dictionaries({"shift": st.floats(0.05, 20.0)}),
})


@FAST
@given(st.integers(1, 200), grid_params)
def test_every_registered_grid_runs_from_exactly_one_to_exactly_zero(steps, params):
    assert {"linear", "pow", "shifted"} <= set(TIME_GRIDS.names())
    for name in TIME_GRIDS.names():
        t = build_grid(_grid_spec(name, params))(steps)
        assert t.dtype == torch.float64 and t.shape == (steps + 1,), name
        assert float(t[0]) == 1.0 and float(t[-1]) == 0.0, (name, float(t[0]), float(t[-1]))
        assert (t.diff() < 0).all(), (name, t)


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_grid_rejects_bad_steps(steps):
    with pytest.raises(ValueError, match="steps"):
        build_grid(PowGridSpec())(steps)


@pytest.mark.parametrize("n", [1, 4, 25, 100])
def test_pow_grid_release(n):
    t = build_grid(PowGridSpec(p=0.25))(n)
    expected = torch.tensor([(k / n) ** 4 for k in range(n, -1, -1)], dtype=torch.float64)
    torch.testing.assert_close(t, expected, rtol=1e-14, atol=0)


def test_linear_and_shifted_grids():
    torch.testing.assert_close(build_grid(TimeGridSpec.model_validate("linear"))(5),
                               torch.tensor([1.0, 0.8, 0.6, 0.4, 0.2, 0.0], dtype=torch.float64))
    s, u = 3.0, torch.arange(8, -1, -1, dtype=torch.float64) / 8
    torch.testing.assert_close(build_grid(ShiftedGridSpec(shift=s))(8), s * u / (1 + (s - 1) * u))


# ----------------------------------------------------------------------------- guidance
def _reference_euler(decoder, noise, cond, times, scale, interval):
    """Plain Euler with CFG written out: z <- z + (t_{k-1} - t_k) v(z, t_k)."""
    z = noise
    ts = times.tolist()
    for t, t_next in zip(ts, ts[1:]):
        tt = torch.full((B,), t)
        v_c = decoder(z, tt, cond)
        if scale != 1.0 and (interval is None or interval[0] <= t <= interval[1]):
            v_u = decoder(z, tt, torch.zeros_like(cond))
            v = v_u + scale * (v_c - v_u)
        else:
            v = v_c
        z = z + (t_next - t) * v
    return z


@FAST
@given(st.integers(1, 30), st.sampled_from(["pow", "shifted", "linear"]), st.integers(0, 1000))
def test_guidance_scale_one_is_no_guidance(steps, grid, seed):
    noise, cond = _inputs(seed)
    grid_spec = _grid_spec(grid, {"pow": {"p": 0.25}, "shifted": {"shift": 3.0}})
    outs = []
    for guidance in (GuidanceSpec(scale=1.0), GuidanceSpec(scale=1.0, interval=None)):
        dec = ToyDecoder()
        spec = SamplerSpec(steps=steps, grid=grid_spec, guidance=guidance, clip=False)
        out = sample(dec, noise, cond, spec)
        assert out.decoder_calls == steps and len(dec.calls) == steps
        assert all(n == B for n, _, _ in dec.calls)  # never an unconditional pass
        outs.append(out.images)
    expected = _reference_euler(ToyDecoder(), noise, cond, build_grid(grid_spec)(steps), 1.0, None)
    torch.testing.assert_close(outs[0], expected)
    torch.testing.assert_close(outs[1], expected)


def test_release_default_sampler_makes_31_decoder_calls():
    spec = SamplerSpec()
    assert spec.steps == 25 and spec.grid == PowGridSpec(p=0.25) and spec.solver.name == "euler"
    assert spec.guidance.scale == 1.5
    assert spec.guidance.interval == pytest.approx((0.17 / 1.17, 1.02 / 2.02))
    noise, cond = _inputs()
    dec = ToyDecoder()
    out = sample(dec, noise, cond, spec)
    assert out.decoder_calls == 31
    assert dec.images_evaluated(B) == 31
    assert len(dec.calls) == 25  # the guided steps run conditional and unconditional as one batch
    guided = [t[0] for n, t, _ in dec.calls if n == 2 * B]
    assert guided == pytest.approx([(k / 25) ** 4 for k in range(21, 15, -1)])


@FAST
@given(st.integers(1, 40), st.floats(0.0, 1.0), st.floats(0.0, 1.0), st.sampled_from([0.0, 1.5, 3.0, -1.0]),
       st.sampled_from([PowGridSpec(p=0.25), PowGridSpec(p=1.0), ShiftedGridSpec(shift=3.0)]))
def test_guided_steps_happen_exactly_at_grid_times_in_the_interval(steps, a, b, scale, grid):
    lo, hi = min(a, b), max(a, b)
    spec = SamplerSpec(steps=steps, grid=grid, guidance=GuidanceSpec(scale=scale, interval=(lo, hi)), clip=False)
    noise, cond = _inputs(steps)
    dec = ToyDecoder()
    out = sample(dec, noise, cond, spec)
    times = build_grid(grid)(steps).tolist()
    expected_guided = [t for t in times[:-1] if lo <= t <= hi]
    guided = [ts for n, ts, _ in dec.calls if n == 2 * B]
    assert [ts[0] for ts in guided] == pytest.approx(expected_guided, abs=1e-7)
    for n, ts, c in dec.calls:
        assert len(set(ts)) == 1
        if n == 2 * B:  # conditional first, then the all-zero unconditional input
            assert torch.equal(c[:B], cond) and torch.equal(c[B:], torch.zeros_like(cond))
        else:
            assert torch.equal(c, cond)
    assert [ts[0] for _, ts, _ in dec.calls] == pytest.approx(times[:-1], abs=1e-7)
    assert out.decoder_calls == steps + len(expected_guided) == dec.images_evaluated(B)
    expected = _reference_euler(ToyDecoder(), noise, cond, torch.tensor(times, dtype=torch.float64), scale, (lo, hi))
    torch.testing.assert_close(out.images, expected)


def test_guidance_interval_sigma_and_none():
    g = GuidanceSpec.model_validate({"scale": 2.0, "interval_sigma": (0.17, 1.02)})
    assert g.interval == pytest.approx((sigma_to_t(0.17), sigma_to_t(1.02)))
    noise, cond = _inputs()
    dec = ToyDecoder()
    out = sample(dec, noise, cond, SamplerSpec(steps=7, guidance=GuidanceSpec(scale=2.0, interval=None)))
    assert out.decoder_calls == 14 and all(n == 2 * B for n, _, _ in dec.calls)


def test_custom_null_cond():
    noise, cond = _inputs()
    null = torch.full_like(cond, 0.25)
    dec = ToyDecoder()
    sample(dec, noise, cond, SamplerSpec(steps=3, guidance=GuidanceSpec(scale=2.0, interval=None)), null_cond=null)
    assert all(torch.equal(c[B:], null) for _, _, c in dec.calls)


def test_heun_calls_twice_per_step():
    noise, cond = _inputs()
    dec = ToyDecoder()
    out = sample(dec, noise, cond, SamplerSpec(steps=5, solver=SolverSpec(name="heun"),
                                               guidance=GuidanceSpec(scale=1.0)))
    assert out.decoder_calls == 10


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_intermediates_one_per_step(solver):
    noise, cond = _inputs()
    spec = SamplerSpec(steps=6, solver=SolverSpec(name=solver), clip=False)
    out = sample(ToyDecoder(), noise, cond, spec, return_intermediates=True)
    assert len(out.intermediates) == 6
    assert all(z.shape == noise.shape for z in out.intermediates)
    assert torch.equal(out.intermediates[-1], out.images)
    assert len({id(z) for z in out.intermediates}) == 6
    assert sample(ToyDecoder(), noise, cond, spec).intermediates == []


def test_times_are_returned():
    noise, cond = _inputs()
    out = sample(ToyDecoder(), noise, cond, SamplerSpec(steps=4))
    torch.testing.assert_close(out.times, build_grid(PowGridSpec())(4))


def test_gradients_only_with_enable_grad():
    noise, cond = _inputs(requires_grad=True)
    cond.requires_grad_(True)
    spec = SamplerSpec(steps=5)
    out = sample(ToyDecoder(), noise, cond, spec)
    assert not out.images.requires_grad
    out = sample(ToyDecoder(), noise, cond, spec, enable_grad=True)
    assert out.images.requires_grad
    out.images.sum().backward()
    assert noise.grad is not None and torch.isfinite(noise.grad).all() and (noise.grad != 0).any()
    assert cond.grad is not None and (cond.grad != 0).any()


def test_clip_clamps_to_unit_range():
    noise, cond = _inputs()
    noise = noise * 10
    spec = SamplerSpec(steps=4, clip=False)
    raw = sample(ToyDecoder(a=0.5), noise, cond, spec).images
    assert raw.abs().max() > 1  # the test is meaningful
    clipped = sample(ToyDecoder(a=0.5), noise, cond, spec.model_copy(update={"clip": True})).images
    assert clipped.min() >= -1 and clipped.max() <= 1
    torch.testing.assert_close(clipped, raw.clamp(-1, 1))


def test_solvers_directly_on_a_known_ode():
    # dz/dt = -z from t = 1 to 0: z(0) = z(1) * e; Heun is far closer than Euler
    z1 = torch.ones(3, dtype=torch.float64)
    times = torch.arange(20, -1, -1, dtype=torch.float64) / 20
    exact = z1 * torch.e
    err_euler = (Euler().solve(lambda z, t: -z, z1, times) - exact).abs().max()
    err_heun = (Heun().solve(lambda z, t: -z, z1, times) - exact).abs().max()
    assert err_heun < err_euler / 10 and err_heun < 2e-3


# ----------------------------------------------------------------------------- the grid on the host
@FAST
@given(st.integers(1, 300), st.floats(0.1, 10.0), st.floats(0.05, 20.0))
def test_builtin_grids_give_their_times_as_python_floats_equal_to_their_tensor(steps, p, shift):
    """floats(steps) is the grid the sampler integrates through; grid(steps) is the same numbers,
    and the formulas agree with torch's float64 arithmetic to within 2 ulp (pow's rounding)."""
    u = torch.arange(steps, -1, -1, dtype=torch.float64) / steps
    for spec, formula in ((TimeGridSpec.model_validate("linear"), u), (PowGridSpec(p=p), u ** (1.0 / p)),
                          (ShiftedGridSpec(shift=shift), shift * u / (shift * u + (1 - u)))):
        grid = build_grid(spec)
        ts = grid.floats(steps)
        assert type(ts) is list and all(type(t) is float for t in ts)
        assert grid(steps).tolist() == ts and grid(steps).dtype == torch.float64
        torch.testing.assert_close(grid(steps), formula, rtol=4.5e-16, atol=0)


def test_the_solver_gets_the_grid_as_python_floats_and_a_tensor_grid_still_works():
    seen = []

    class Recording(Euler):
        def solve(self, velocity, z, times, callback=None):
            seen.append(times)
            return super().solve(velocity, z, times, callback)

    noise, cond = _inputs()
    from flowmo.registry import SOLVERS

    SOLVERS.register("test_recording_euler")(Recording)
    try:
        out = sample(ToyDecoder(), noise, cond, SamplerSpec(steps=4, solver={"name": "test_recording_euler"}))
    finally:
        SOLVERS.unregister("test_recording_euler")
    assert type(seen[0]) is tuple and list(seen[0]) == out.times.tolist() == build_grid(PowGridSpec())(4).tolist()
    z = torch.randn(3, dtype=torch.float64)
    assert torch.equal(Euler().solve(lambda z_, t: -z_, z, out.times), Euler().solve(lambda z_, t: -z_, z, seen[0]))


def test_check_times_takes_a_list_of_numbers_with_the_tensor_messages():
    from flowmo.samplers import check_times, grid_floats

    assert check_times([1, 0.5, 0.0], 2) == [1, 0.5, 0.0]
    with pytest.raises(ValueError, match=r"returned shape \(2,\) for 2 steps; expected \(3,\)"):
        check_times([1.0, 0.0], 2)
    with pytest.raises(ValueError, match=r"strictly decreasing from 1 to 0: t\[1\] = 0.5, t\[2\] = 0.7"):
        check_times((1.0, 0.5, 0.7, 0.0), 3)
    with pytest.raises(TypeError, match="must give real numbers"):
        check_times([1.0, torch.tensor(0.5), 0.0], 2)
    assert grid_floats(build_grid({"name": "knots", "times": [1.0, 0.3, 0.0]}), 4) == [1.0, 0.65, 0.3, 0.15, 0.0]
