"""A bfloat16 / float16 model: the ODE state and the step arithmetic stay in float32.

The decoder ("model") is emulated by velocity functions that take their input in the
model's dtype and return the model's dtype, so every error below the model's own rounding
is the sampler's. Expected values are computed by hand in float64 (closed forms, or the
discrete recursions of Euler and Heun written out here), never through flowmo's solvers.
The bound is one rounding of the output: ``finfo(dtype).eps / 2 * max |exact|``.
"""

from __future__ import annotations

import pytest
import torch

import flowmo
from flowmo.losses.posttrain import ModeSeeking, random_chain_times
from flowmo.registry import SOLVERS
from flowmo.samplers import Solver, build_grid, sample, state_dtype
from flowmo.spec import ModeSeekingSpec, SamplerSpec, SolverSpec

LOW = [torch.bfloat16, torch.float16]
SHAPE = (3, 3, 8, 8)


def one_rounding(dtype: torch.dtype, exact: torch.Tensor) -> float:
    """Half an ulp at the output's largest magnitude: one rounding of the output to ``dtype``."""
    return torch.finfo(dtype).eps / 2 * float(exact.abs().max())


def representable(shape, generator) -> torch.Tensor:
    """Multiples of 1/8 in [-2, 2]: exact in bfloat16 and float16 (the model's output is exact)."""
    return torch.randint(-16, 17, shape, generator=generator).float() / 8


class ConstantModel:
    """v = a_u + (a_c - a_u) w with w = cond[:, 0, 0] (1 for the code, 0 for the null input),
    computed from an input in the model's dtype and returned in the model's dtype."""

    def __init__(self, dtype, a_c, a_u):
        self.dtype, self.a_c, self.a_u = dtype, a_c, a_u
        self.seen: set[torch.dtype] = set()

    def __call__(self, x, t, cond):
        assert x.dtype == self.dtype, f"the model was called with {x.dtype}, not its dtype {self.dtype}"
        self.seen.add(x.dtype)
        w = cond[:, 0, 0].float().view(-1, 1, 1, 1)
        v = self.a_u + (self.a_c - self.a_u) * w + 0 * x.float()
        return v.to(self.dtype)


def _conds(b):
    cond = torch.ones(b, 4, 5)
    return cond


# ----------------------------------------------------------------------------- the sampler
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("solver", SOLVERS.names())
@pytest.mark.parametrize("steps,grid", [(25, {"name": "pow", "p": 0.25}), (8, {"name": "linear"})])
@pytest.mark.parametrize("scale", [1.0, 1.5])
def test_constant_velocity_every_solver_ends_within_one_rounding(dtype, solver, steps, grid, scale):
    g = torch.Generator().manual_seed(0)
    a_c, a_u = representable(SHAPE[1:], g), representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g)
    spec = SamplerSpec(steps=steps, grid=grid, solver=SolverSpec(name=solver),
                       guidance={"scale": scale, "interval": None}, clip=False)
    # by hand: z(0) = z(1) - v for a constant v; guided v = a_u + s (a_c - a_u), in float64
    v = a_c.double() if scale == 1.0 else a_u.double() + scale * (a_c.double() - a_u.double())
    # (1) float32 noise, the model's dtype named
    model = ConstantModel(dtype, a_c, a_u)
    out = sample(model, noise, _conds(SHAPE[0]).to(dtype), spec, decoder_dtype=dtype)
    exact = noise.double() - v
    assert out.images.dtype == torch.float32 and model.seen == {dtype}
    err = float((out.images.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))
    # (2) noise given in the model's dtype (the decoder is then called in that dtype by default)
    model = ConstantModel(dtype, a_c, a_u)
    low = noise.to(dtype)
    out = sample(model, low, _conds(SHAPE[0]).to(dtype), spec)
    exact = low.double() - v
    assert out.images.dtype == torch.float32 and model.seen == {dtype}
    err = float((out.images.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))


def _euler_by_hand(z, times, f):
    for t, tn in zip(times[:-1], times[1:]):
        z = z + (tn - t) * f(z, t)
    return z


def _heun_by_hand(z, times, f):
    for t, tn in zip(times[:-1], times[1:]):
        h = tn - t
        v1 = f(z, t)
        v2 = f(z + h * v1, tn)
        z = z + h * 0.5 * (v1 + v2)
    return z


BY_HAND = {"euler": _euler_by_hand, "heun": _heun_by_hand}


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("solver", SOLVERS.names())
@pytest.mark.parametrize("lam", [-1.0, -0.5, 0.5])
def test_velocity_linear_in_z_every_solver_ends_within_one_rounding(dtype, solver, lam):
    """v = lam z + c: the model rounds its input and its output to its dtype; the reference is the
    solver's own discrete recursion in float64 with the unrounded velocity (Euler and Heun
    written out here; another registered solver is its own float64 run)."""
    g = torch.Generator().manual_seed(1)
    c = representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g)

    def model(x, t, cond):
        assert x.dtype == dtype
        return (lam * x.float() + c).to(dtype)

    spec = SamplerSpec(steps=25, solver=SolverSpec(name=solver), guidance={"scale": 1.0}, clip=False)
    times = build_grid(spec.grid)(spec.steps).tolist()
    f = lambda z, t: lam * z + c.double()  # noqa: E731
    if solver in BY_HAND:
        exact = BY_HAND[solver](noise.double(), times, f)
    else:
        exact = SOLVERS.build(spec.solver).solve(f, noise.double(), torch.tensor(times, dtype=torch.float64))
    out = sample(model, noise, _conds(SHAPE[0]), spec, decoder_dtype=dtype)
    assert out.images.dtype == torch.float32
    err = float((out.images.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))


def test_euler_on_the_release_grid_bfloat16_before_and_after():
    """The issue's case: 25 Euler steps of a constant velocity with a bfloat16 model ended three
    8-bit levels off; the float32 state ends at float32 accumulation error."""
    g = torch.Generator().manual_seed(2)
    a = representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g).bfloat16()
    model = ConstantModel(torch.bfloat16, a, a)
    out = sample(model, noise, _conds(SHAPE[0]).bfloat16(), SamplerSpec(clip=False))
    exact = noise.double() - a.double()
    err = float((out.images.double() - exact).abs().max())
    assert err <= 30 * torch.finfo(torch.float32).eps * float(exact.abs().max()), err


class _Midpoint(Solver):
    """A user's solver written with plain tensor arithmetic (explicit midpoint, 2nd order)."""

    seen: list = []

    def step(self, velocity, z, t, t_next):
        h = t_next - t
        v1 = velocity(z, t)
        v2 = velocity(z + 0.5 * h * v1, t + 0.5 * h)
        _Midpoint.seen.append((z.dtype, v1.dtype, v2.dtype))
        return z + h * v2


@pytest.fixture
def midpoint():
    SOLVERS.register("test_midpoint")(_Midpoint)
    _Midpoint.seen = []
    try:
        yield "test_midpoint"
    finally:
        SOLVERS.unregister("test_midpoint")


@pytest.mark.parametrize("dtype", LOW)
def test_a_user_registered_solver_gets_a_float32_state_and_velocity(midpoint, dtype):
    g = torch.Generator().manual_seed(3)
    a_c, a_u = representable(SHAPE[1:], g), representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g)
    spec = SamplerSpec(solver=SolverSpec(name=midpoint), guidance={"scale": 1.5, "interval": None}, clip=False)
    out = sample(ConstantModel(dtype, a_c, a_u), noise.to(dtype), _conds(SHAPE[0]).to(dtype), spec)
    assert set(_Midpoint.seen) == {(torch.float32, torch.float32, torch.float32)}
    exact = noise.to(dtype).double() - (a_u.double() + 1.5 * (a_c.double() - a_u.double()))
    err = float((out.images.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), err


def test_state_dtype():
    assert state_dtype(torch.bfloat16) == torch.float32
    assert state_dtype(torch.float16) == torch.float32
    assert state_dtype(torch.float32) == torch.float32
    assert state_dtype(torch.float64) == torch.float64
    with pytest.raises(TypeError, match="floating-point"):
        state_dtype(torch.int64)
    with pytest.raises(TypeError, match="decoder_dtype"):
        sample(lambda x, t, c: x, torch.zeros(1, 2), torch.zeros(1, 2, 3), SamplerSpec(), decoder_dtype=torch.int32)


def test_float64_noise_keeps_a_float64_state():
    noise = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    seen = []

    def model(x, t, cond):
        seen.append(x.dtype)
        return torch.full_like(x, 0.1)

    out = sample(model, noise, torch.ones(2, 4, 5), SamplerSpec(clip=False, guidance={"scale": 1.0}))
    assert out.images.dtype == torch.float64 and set(seen) == {torch.float64}
    assert float((out.images - (noise - 0.1)).abs().max()) < 1e-14


# ----------------------------------------------------------------------------- the Stage 1B chain
@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("k", [1, 8, 25])
def test_stage1b_chain_constant_velocity_within_one_rounding(dtype, k):
    g = torch.Generator().manual_seed(4)
    a = representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g)
    u = torch.rand(SHAPE[0], k + 1, generator=g)
    model = ConstantModel(dtype, a, a)
    ms = ModeSeeking(ModeSeekingSpec(k=k, checkpoint=False))
    z = ms.chain(model, noise, _conds(SHAPE[0]).to(dtype), u, decoder_dtype=dtype)
    exact = noise.double() - a.double()  # the chain's times run from exactly 1 to exactly 0
    assert z.dtype == torch.float32 and model.seen == {dtype}
    err = float((z.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))
    # noise given in the model's dtype: the decoder is called in it, the state is float32
    model = ConstantModel(dtype, a, a)
    z = ms.chain(model, noise.to(dtype), _conds(SHAPE[0]).to(dtype), u)
    exact = noise.to(dtype).double() - a.double()
    assert z.dtype == torch.float32 and model.seen == {dtype}
    assert float((z.double() - exact).abs().max()) <= one_rounding(dtype, exact)


@pytest.mark.parametrize("dtype", LOW)
def test_stage1b_chain_linear_in_z_within_one_rounding(dtype):
    k, lam = 25, -0.5
    g = torch.Generator().manual_seed(5)
    c = representable(SHAPE[1:], g)
    noise = torch.randn(SHAPE, generator=g)
    u = torch.rand(SHAPE[0], k + 1, generator=g)

    def model(x, t, cond):
        assert x.dtype == dtype and t.dtype == torch.float32
        return (lam * x.float() + c).to(dtype)

    z = ModeSeeking(ModeSeekingSpec(k=k, checkpoint=False)).chain(model, noise, _conds(SHAPE[0]), u,
                                                                    decoder_dtype=dtype)
    times = random_chain_times(u.double())  # (B, K + 1), from 1 to 0 per sample
    exact = noise.double().clone()
    for b in range(SHAPE[0]):  # Euler by hand, per sample
        exact[b] = _euler_by_hand(exact[b], times[b].tolist(), lambda z_, t: lam * z_ + c.double())
    assert z.dtype == torch.float32
    err = float((z.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_stage1b_chain_gradient_reaches_a_bfloat16_parameter(checkpointing):
    """d sum(z_K) / d a = -sum_i (t_i - t_{i+1}) = -1 per entry for v = a: exact in bfloat16."""
    k = 6
    a = torch.nn.Parameter(torch.zeros(3, 4, 4, dtype=torch.bfloat16))
    noise = torch.randn(2, 3, 4, 4)
    u = torch.rand(2, k + 1)

    def model(x, t, cond):
        assert x.dtype == torch.bfloat16
        return a.expand_as(x) + 0 * x

    z = ModeSeeking(ModeSeekingSpec(k=k, checkpoint=checkpointing)).chain(model, noise, torch.ones(2, 4, 5), u,
                                                                          decoder_dtype=torch.bfloat16)
    assert z.dtype == torch.float32 and z.requires_grad
    z.sum().backward()
    assert a.grad.dtype == torch.bfloat16
    torch.testing.assert_close(a.grad.float(), torch.full((3, 4, 4), -2.0), rtol=0, atol=0)  # batch 2


def test_stage1b_objective_with_bfloat16_images_draws_float32_noise_and_a_float32_loss():
    k = 4
    x = (torch.rand(2, 3, 8, 8) * 2 - 1).bfloat16()
    g = torch.Generator().manual_seed(6)
    a = representable((3, 8, 8), g)
    model = ConstantModel(torch.bfloat16, a, a)
    ms = ModeSeeking(ModeSeekingSpec(k=k, weight=0.5, checkpoint=False))
    out = ms(model, x, _conds(2).bfloat16(), generator=torch.Generator().manual_seed(7))["mode_seeking"]
    # by hand: the same draws (noise in float32, then u), z_K = noise - a, mse to x
    g2 = torch.Generator().manual_seed(7)
    noise = torch.randn(x.shape, generator=g2, dtype=torch.float32).double()
    exact = 0.5 * ((noise - a.double() - x.double()) ** 2).flatten(1).mean(1).mean()
    assert out.dtype == torch.float32 and model.seen == {torch.bfloat16}
    assert abs(float(out) - float(exact)) <= one_rounding(torch.bfloat16, exact)


# ----------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def tiny_pair():
    torch.manual_seed(0)
    m32 = flowmo.build(flowmo.flowmo_tiny()).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(8)) * 2 - 1
    with torch.no_grad():
        code = m32.quantize(m32.encode(x)).values
    return m32, code


def _low_copy(m32, dtype):
    m = flowmo.build(flowmo.flowmo_tiny()).eval()
    m.load_state_dict(m32.state_dict())
    return m.to(dtype)


def _reference_decode(model, code, noise, spec):
    """Euler + CFG on the spec's grid by hand with a float64 state; the model called in its dtype."""
    times = build_grid(spec.grid)(spec.steps).tolist()
    cond = model.conditioning(code.to(model.dtype))
    lo, hi = spec.guidance.interval
    z = noise.double()
    with torch.no_grad():
        for t, tn in zip(times[:-1], times[1:]):
            tt = torch.full((z.shape[0],), t, dtype=torch.float32)
            v = model.decoder_velocity(z.to(model.dtype), tt, cond).double()
            if lo <= t <= hi:
                v_u = model.decoder_velocity(z.to(model.dtype), tt, torch.zeros_like(cond)).double()
                v = v_u + spec.guidance.scale * (v - v_u)
            z = z + (tn - t) * v
    return z


@pytest.mark.parametrize("dtype", LOW)
def test_tiny_model_in_low_precision_decodes_float32_within_one_rounding(tiny_pair, dtype):
    m32, code = tiny_pair
    model = _low_copy(m32, dtype)
    seen = []
    hook = model.decoder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].dtype))
    code = code[:1]
    noise = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    # the release's grid and guidance with 4 steps (5 calls, t = 0.32 guided: low-precision
    # matmuls are slow on CPUs)
    spec = SamplerSpec(steps=4, clip=False)
    try:
        out = model.decode(code, noise=noise, sampler=spec, return_intermediates=True)
    finally:
        hook.remove()
    assert out.images.dtype == torch.float32 and out.decoder_calls == 5
    assert all(z.dtype == torch.float32 for z in out.intermediates) and len(out.intermediates) == 4
    assert set(seen) == {dtype}  # the decoder runs in the model's dtype
    exact = _reference_decode(model, code, noise, spec)
    err = float((out.images.double() - exact).abs().max())
    assert err <= one_rounding(dtype, exact), (err, one_rounding(dtype, exact))
    # default noise: drawn in float32, the same draws as the float32 model's
    g = lambda: torch.Generator().manual_seed(10)  # noqa: E731
    one = {"steps": 1, "guidance": {"scale": 1.0}}
    a = model.decode(code, generator=g(), sampler=one)
    b = m32.decode(code, generator=g(), sampler=one)
    assert a.images.dtype == torch.float32
    assert float((a.images - b.images).abs().max()) < 0.1 * float(b.images.abs().max())
    # reconstruct returns float32 too
    assert model.reconstruct(torch.zeros(1, 3, 32, 32), generator=g(), sampler=one).dtype == torch.float32


@pytest.mark.parametrize("dtype", LOW)
def test_guided_velocity_of_a_low_precision_model_is_rounded_once(tiny_pair, dtype):
    m32, code = tiny_pair
    model = _low_copy(m32, dtype)
    code = code[:1]
    x_t = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(11))
    v = model.velocity(x_t, 0.5, code, guidance_scale=1.5)
    assert v.dtype == dtype
    with torch.no_grad():
        v_c = model.velocity(x_t, 0.5, code).double()
        v_u = model.velocity(x_t, 0.5, None).double()
    exact = v_u + 1.5 * (v_c - v_u)
    # round-to-nearest: |fl(x) - x| <= eps/2 |x| elementwise
    assert bool(((v.double() - exact).abs() <= torch.finfo(dtype).eps / 2 * exact.abs()).all())


# ----------------------------------------------------------------------------- the conformance kit
class _HalfStateEuler(Solver):
    """Keeps a float32 state in bfloat16 between steps ("to save memory"); float64 untouched,
    so the kit's float64 properties alone would pass it."""

    def step(self, velocity, z, t, t_next):
        out = z + (t_next - t) * velocity(z, t)
        return out.to(torch.bfloat16).to(z.dtype) if z.dtype == torch.float32 else out


def test_kit_float32_state_property():
    from flowmo.samplers import Euler, Heun
    from flowmo.testing import check_solver

    for solver in (Euler(), Heun()):
        assert check_solver(solver, max_examples=10)["float32_state"] >= 1
    with pytest.raises(AssertionError, match="property 'float32_state' failed"):
        check_solver(_HalfStateEuler(), max_examples=10)
