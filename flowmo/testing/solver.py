"""The check for the ODE-solver kind: :func:`check_solver`, with the independent time grids it
integrates along."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .checker import _Checker, _seeded


def _grid(kind: str, steps: int, param: float, cuts: list[float]) -> Tensor:
    """A float64 time grid from exactly 1 down to exactly 0 (built here, independently of flowmo.samplers)."""
    k = torch.arange(steps, -1, -1, dtype=torch.float64)
    u = k / steps
    if kind == "linear":
        t = u
    elif kind == "pow":
        t = u ** (1.0 / param)
    elif kind == "shifted":
        t = param * u / (param * u + (1 - u))
    else:  # "random": strictly decreasing interior points
        inner = sorted(set(cuts), reverse=True)
        t = torch.tensor([1.0] + inner + [0.0], dtype=torch.float64)
    t[0], t[-1] = 1.0, 0.0
    return t


def check_solver(solver: Any, *, order: int = 1, max_examples: int = 25) -> dict[str, int]:
    """Check an ODE solver: ``solver.solve(velocity, z, times, callback)`` integrating
    dz/dt = velocity(z, t) (t a python float) along ``times`` (1 -> 0), calling
    ``callback(i, z)`` after step i.

    Properties, on float64 tensors of any shape (0-d and empty included):

    - ``constant``: exact (to ~1e-9) for a constant velocity, on linear, pow, shifted and random
      monotone grids; the output keeps the shape and dtype, the input is not modified and the
      callback runs once per step, i = 0 .. steps - 1.
    - every property: each velocity call of step i (from times[i] to times[i + 1]) is at a time
      t in [times[i + 1], times[i]], and the step's first call is at times[i], where the state
      is known (a solver that evaluates v at the step's end, or at a fixed t, is reported as
      evaluating v at the wrong time).
    - ``t_dependent``: for v = a + b t on non-uniform grids (pow, shifted, random), the error at
      t = 0 is at most |b| / 2 * sum(dt_i ** 2), the error of Euler's method, which any step that
      evaluates v at times inside the step meets (its error is b dt (c - midpoint) per step);
      a solver that ignores the grid spacing (uniform steps of -1 / steps) or evaluates v at
      the wrong time exceeds it.
    - ``linear_in_t`` (``order >= 2``): exact to 1e-5 for v = a + b t on the same grids.
    - ``convergence``: on dz/dt = lam z the error at t = 0 decreases as the steps double
      (8, 16, 32, 64 on the linear grid) and the observed order is at least ``order - 0.5``.
    - ``float32_state``: a float32 state with a float32 (constant) velocity, as
      :func:`flowmo.samplers.sample` hands every solver for a bfloat16 / float16 model: the
      output is float32 and within float32 accumulation error (4 (steps + 1) eps32 (1 + |z| +
      |a|)) of the exact z - a, i.e. the solver does not round the state or its steps to a
      lower precision (a bfloat16 state would be ~2**-9 |z| off).

    Returns ``{property: examples run}``.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    from ..samplers.solvers import Solver

    ck = _Checker("check_solver", max_examples)
    st = ck.st
    if not isinstance(solver, Solver) and callable(solver) and not isinstance(solver, torch.nn.Module):
        solver = solver()  # a zero-argument factory
    if not isinstance(solver, Solver):
        raise AssertionError(f"check_solver: expected a flowmo.samplers.Solver, got {type(solver).__name__}")

    def as_float(t: Any) -> float:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise AssertionError(f"velocity called with a time of shape {tuple(t.shape)}; expected a scalar")
            return float(t)
        return float(t)

    grids = st.tuples(
        st.sampled_from(("linear", "pow", "shifted", "random")),
        st.integers(1, 40),
        st.floats(0.1, 10.0),
        st.lists(st.floats(1e-3, 1 - 1e-3), min_size=0, max_size=30),
    ).map(lambda g: _grid(*g))
    uneven = st.tuples(  # grids whose steps differ in size (p, shift far from 1; random cuts)
        st.sampled_from(("pow", "shifted", "random")),
        st.integers(3, 40),
        st.sampled_from((0.1, 0.2, 0.25, 0.4, 2.5, 4.0, 10.0)),
        st.lists(st.floats(1e-3, 1 - 1e-3), min_size=2, max_size=30),
    ).map(lambda g: _grid(*g))
    shapes = st.lists(st.integers(0, 3), max_size=4).map(tuple)
    fields = st.tuples(shapes, grids, st.integers(0, 2**32 - 1))

    def solve(velocity: Callable[[Tensor, float], Tensor], z: Tensor, times: Tensor) -> Tensor:
        calls: list[int] = []
        at: list[tuple[int, float]] = []  # (the step running, t) of every velocity call

        def timed(z_: Tensor, t: Any) -> Tensor:
            at.append((len(calls), as_float(t)))
            return velocity(z_, t)

        z_in = z.clone()
        out = solver.solve(timed, z, times, lambda i, zi: calls.append(int(i)))
        if not isinstance(out, Tensor) or out.shape != z.shape or out.dtype != z.dtype:
            raise AssertionError(f"solve returned {getattr(out, 'shape', type(out))} "
                                 f"{getattr(out, 'dtype', '')} for z of shape {tuple(z.shape)}, {z.dtype}")
        if not torch.equal(z, z_in):
            raise AssertionError("solve modified its input z in place")
        steps = len(times) - 1
        if calls != list(range(steps)):
            raise AssertionError(f"callback called with steps {calls[:10]}..., expected 0 .. {steps - 1}")
        ts = [float(x) for x in times]
        first: set[int] = set()
        for i, t in at:
            if i >= steps:
                raise AssertionError(f"velocity called after the last step (at t = {t!r})")
            lo, hi = ts[i + 1], ts[i]
            wrong = None
            if not (lo - 1e-12 <= t <= hi + 1e-12):
                wrong = f"at t = {t!r}, outside the step [{lo!r}, {hi!r}]"
            elif i not in first and abs(t - hi) > 1e-12:
                wrong = f"first at t = {t!r}; the state is known at the step's start t = {hi!r}"
            if wrong:
                raise AssertionError(f"the solver evaluates v at the wrong time: step {i} (from t = {hi!r} to "
                                     f"{lo!r}) calls velocity {wrong}")
            first.add(i)
        return out

    def close(out: Tensor, expected: Tensor, tol: float, what: str, times: Tensor) -> None:
        err = (out - expected).abs()
        bound = tol * (1 + expected.abs())
        if (err > bound).any():
            raise AssertionError(f"{what}: max error {float(err.max()):.3g} > {tol:g} on a grid of "
                                 f"{len(times) - 1} steps {[round(float(x), 6) for x in times[:6]]}...")

    def p_constant(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)

        def velocity(z_, t):
            as_float(t)
            return a.clone()

        close(solve(velocity, z, times), z - a, 1e-9, "constant velocity", times)

    def p_t_dependent(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a, b = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(3))

        def velocity(z_, t):
            return a + b * as_float(t)

        for grid in (times, _grid("pow", 10, 0.25, [])):
            out = solve(velocity, z, grid)
            expected = z - a - b / 2  # z(0) = z(1) + int_1^0 (a + b t) dt
            dt2 = float(((grid[1:] - grid[:-1]) ** 2).sum())
            bound = b.abs() * dt2 / 2 * (1 + 1e-6) + 1e-9 * (1 + expected.abs())
            err = (out - expected).abs()
            if (err > bound).any():
                k = int((err - bound).flatten().argmax()) if err.numel() else 0
                raise AssertionError(
                    f"velocity a + b t on a grid of {len(grid) - 1} uneven steps "
                    f"{[round(float(x), 6) for x in grid[:6]]}...: error {float(err.flatten()[k]):.3g} exceeds "
                    f"{float(bound.flatten()[k]):.3g} = |b| / 2 * sum(dt^2), the error of a first-order step that "
                    "evaluates v inside the step: the solver ignores the grid spacing or evaluates v at the wrong time")

    def p_linear_in_t(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a, b = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(3))

        def velocity(z_, t):
            return a + b * as_float(t)

        # z(0) = z(1) + int_1^0 (a + b t) dt = z(1) - a - b / 2
        close(solve(velocity, z, times), z - a - b / 2, 1e-5, "velocity a + b t", times)

    def p_convergence(ex) -> None:
        shape, lam, seed = ex
        z = torch.randn(shape, generator=_seeded(seed), dtype=torch.float64) + 2.0

        def velocity(z_, t):
            as_float(t)
            return lam * z_

        exact = z * math.exp(-lam)  # dz/dt = lam z, from t = 1 to t = 0
        errs = []
        for n in (8, 16, 32, 64):
            times = torch.arange(n, -1, -1, dtype=torch.float64) / n
            errs.append(float((solve(velocity, z, times) - exact).abs().max()))
        floor = 1e-12 * (1 + float(exact.abs().max()))
        if errs[-1] <= floor:
            return  # exact to rounding
        if not all(e2 < e1 or e2 <= floor for e1, e2 in zip(errs, errs[1:])):
            raise AssertionError(f"dz/dt = {lam} z: errors {errs} do not decrease with 8, 16, 32, 64 steps")
        pairs = [(e1, e2) for e1, e2 in zip(errs, errs[1:]) if e2 > 100 * floor]
        e1, e2 = pairs[-1] if pairs else (errs[-2], errs[-1])
        observed = math.log2(e1 / e2) if e2 > 0 else float("inf")
        if observed < order - 0.5:
            raise AssertionError(f"dz/dt = {lam} z: observed order {observed:.2f} < {order} - 0.5 (errors {errs})")

    def p_float32_state(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z64, a64 = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(2))
        z, a = z64.float(), a64.float()

        def velocity(z_, t):
            as_float(t)
            if z_.dtype != torch.float32:
                raise AssertionError(f"velocity called with a {z_.dtype} state; the state given was float32")
            return a.clone()

        out = solve(velocity, z, times)
        exact = z.double() - a.double()
        err = (out.double() - exact).abs()
        eps = torch.finfo(torch.float32).eps
        bound = 4 * len(times) * eps * (1 + z.double().abs() + a.double().abs())
        if (err > bound).any():
            raise AssertionError(f"float32 state, constant velocity: max error {float(err.max()):.3g} exceeds "
                                 f"float32 accumulation error (max bound {float(bound.max()):.3g}) on a grid of "
                                 f"{len(times) - 1} steps: the solver rounds the state or its steps below float32")

    ck.run("constant", fields, p_constant)
    ck.run("t_dependent", st.tuples(shapes, uneven, st.integers(0, 2**32 - 1)), p_t_dependent)
    ck.run("float32_state", fields, p_float32_state)
    if order >= 2:
        ck.run("linear_in_t", fields, p_linear_in_t)
    lams = st.sampled_from((-2.0, -1.0, -0.5, 0.5, 1.0, 2.0))
    nonempty = st.lists(st.integers(1, 3), max_size=3).map(tuple)
    ck.run("convergence", st.tuples(nonempty, lams, st.integers(0, 2**32 - 1)), p_convergence,
           max_examples=min(max_examples, 10))
    return ck.report
