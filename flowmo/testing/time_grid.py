"""The check for the time-grid kind: :func:`check_time_grid`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checker import _Checker, _mismatch


def check_time_grid(grid: Any, *, max_examples: int = 25, max_steps: int = 4096) -> dict[str, int]:
    """Check a time grid (a :class:`flowmo.samplers.TimeGrid` or a zero-argument factory):
    ``grid(steps)`` -> the (steps + 1,) times a sampler integrates through, from 1 to 0.

    Properties, for steps drawn from 1 .. ``max_steps``:

    - ``shape``: a float64 tensor of shape (steps + 1,), all finite.
    - ``endpoints``: t[0] == 1 exactly (noise) and t[-1] == 0 exactly (data); a grid that runs
      0 -> 1 is reported as reversed.
    - ``monotone``: strictly decreasing (a repeated time is a wasted decoder call; an
      increase integrates the wrong way), naming the first offending step.
    - ``deterministic``: two calls give the same grid, whatever the global RNG state.
    - ``bad_steps``: steps = 0 and -1 raise ValueError or TypeError.
    - ``floats``: where the grid gives its times as Python floats (``grid.floats(steps)`` not
      None: what the sampler integrates through), they are a list of ``float`` equal to
      ``grid(steps).tolist()``.

    Returns ``{property: examples run}``.
    """
    from ..samplers.grids import TimeGrid

    ck = _Checker("check_time_grid", max_examples)
    st = ck.st
    if not isinstance(grid, TimeGrid) and callable(grid):
        grid = grid()
    if not isinstance(grid, TimeGrid):
        raise AssertionError(f"check_time_grid: expected a flowmo.samplers.TimeGrid, got {type(grid).__name__}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")

    def times(steps: int) -> Tensor:
        t = grid(steps)
        if not isinstance(t, Tensor):
            raise AssertionError(f"grid({steps}) returned {type(t).__name__}, not a tensor")
        return t

    def p_shape(steps: int) -> None:
        t = times(steps)
        if tuple(t.shape) != (steps + 1,):
            raise AssertionError(f"grid({steps}) has shape {tuple(t.shape)}; expected ({steps + 1},)")
        if t.dtype != torch.float64:
            raise AssertionError(f"grid({steps}) has dtype {t.dtype}; expected torch.float64 (the sampler's times)")
        if not bool(torch.isfinite(t).all()):
            raise AssertionError(f"grid({steps}) has non-finite times")

    def p_endpoints(steps: int) -> None:
        t = times(steps).double()
        first, last = float(t[0]), float(t[-1])
        if first == 0.0 and last == 1.0:
            raise AssertionError(f"grid({steps}) runs from 0 to 1: it is reversed (t = 1 is noise, where sampling "
                                 "starts; t = 0 is data, where it ends)")
        if first != 1.0 or last != 0.0:
            raise AssertionError(f"grid({steps}) must start at exactly 1 and end at exactly 0, got t[0] = {first!r}, "
                                 f"t[-1] = {last!r}")

    def p_monotone(steps: int) -> None:
        t = times(steps).double()
        ok = t[1:] < t[:-1]
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            raise AssertionError(f"grid({steps}) is not strictly decreasing: t[{i}] = {float(t[i])!r}, "
                                 f"t[{i + 1}] = {float(t[i + 1])!r}")

    def p_deterministic(steps: int) -> None:
        torch.manual_seed(steps)
        a = times(steps)
        torch.manual_seed(steps + 1)
        b = times(steps)
        if not torch.equal(a, b):
            raise AssertionError(f"non-deterministic: two calls grid({steps}) gave different times: {_mismatch(a, b)}")

    def p_bad_steps() -> None:
        for bad in (0, -1):
            try:
                grid(bad)
            except (ValueError, TypeError):
                continue
            raise AssertionError(f"grid({bad}) did not raise ValueError (steps must be a positive int)")

    def p_floats(steps: int) -> None:
        ts = grid.floats(steps)
        if ts is None:
            return
        if not isinstance(ts, list) or any(type(t) is not float for t in ts):
            raise AssertionError(f"grid.floats({steps}) must return a list of Python floats (or None), got "
                                 f"{type(ts).__name__} {ts!r:.80}")
        expected = times(steps).tolist()
        if ts != expected:
            i = next((i for i, (a, b) in enumerate(zip(ts, expected)) if a != b), min(len(ts), len(expected)))
            raise AssertionError(f"grid.floats({steps}) differs from grid({steps}) at t[{i}] (or in length "
                                 f"{len(ts)} vs {len(expected)}): the sampler would integrate another grid")

    steps = st.one_of(st.integers(1, min(64, max_steps)), st.integers(1, max_steps))
    ck.run("shape", steps, p_shape)
    ck.run("endpoints", steps, p_endpoints)
    ck.run("monotone", steps, p_monotone)
    ck.run("deterministic", steps, p_deterministic, max_examples=min(max_examples, 10))
    ck.once("bad_steps", p_bad_steps)
    ck.run("floats", steps, p_floats)
    return ck.report
