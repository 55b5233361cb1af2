"""Time grids: ``grid(steps)`` -> (steps + 1,) float64 times running from 1 (noise) to 0 (data).

The built-in grids compute their times in Python floats (float64) on the host
(:meth:`TimeGrid.floats`): :func:`flowmo.samplers.sample` integrates through those numbers,
so picking a step's times never reads a tensor (no host sync per step, none per grid)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from numbers import Real
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ..registry import TIME_GRIDS
from ..spec import KnotsGridSpec, PowGridSpec, ShiftedGridSpec, TimeGridSpec

__all__ = ["TimeGrid", "LinearGrid", "PowGrid", "ShiftedGrid", "KnotsGrid", "build_grid", "check_times", "grid_floats"]


class TimeGrid(ABC):
    """The interface of every time grid: the times a sampler integrates through.

    Registered with :data:`flowmo.TIME_GRIDS`; built as ``TIME_GRIDS.build(spec)`` (no wiring).
    A subclass's constructor takes its configuration as keyword-only arguments (registered with
    one decorator line) or its spec (an explicit spec class); there is no base constructor to
    call. Check a new grid with :func:`flowmo.testing.check_time_grid`;
    :func:`flowmo.samplers.sample` validates every grid's output with :func:`check_times`.

    Optional capability: :meth:`floats` (default None), the times as Python floats, computed
    on the host without a tensor; :func:`flowmo.samplers.sample` uses them when given, else
    reads ``grid(steps)`` once.
    """

    @abstractmethod
    def __call__(self, steps: int) -> Tensor:
        """The grid of ``steps`` ODE steps.

        Args:
            steps: a positive int, the number of steps (ValueError otherwise).

        Returns:
            (steps + 1,) float64 tensor of times, t[0] = 1 exactly (noise), t[-1] = 0 exactly
            (data), strictly decreasing (t = 0 is data, t = 1 noise: the release's convention).
        """

    def floats(self, steps: int) -> Optional[list[float]]:
        """The grid of ``steps`` steps as a list of ``steps + 1`` Python floats, the values of
        ``self(steps)``, or None (the default): the grid has only its tensor form. A grid
        defined by formulas on numbers computes them here, so sampling reads no tensor for
        its times; its ``__call__`` is then ``torch.tensor(self.floats(steps), dtype=torch.float64)``.
        Raises ValueError unless ``steps`` is a positive int."""
        return None

    @staticmethod
    def fractions(steps: int) -> Tensor:
        """k / n for k = n .. 0 (float64), the linear grid most grids are a map of.

        Raises ValueError unless ``steps`` is a positive int.
        """
        return torch.tensor(_fractions(steps), dtype=torch.float64)


def _fractions(steps: int) -> list[float]:
    """k / n for k = n .. 0 as Python floats (the same float64 values as ``arange / n``)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return [k / steps for k in range(steps, -1, -1)]


def describe(x: object) -> str:
    """``x`` in a message: "dtype (shape) on device" for a tensor, else its type's name."""
    return f"{x.dtype} {tuple(x.shape)} on {x.device}" if isinstance(x, Tensor) else type(x).__name__


def check_times(times: Union[Tensor, Sequence[float]], steps: int, what: str = "the time grid"):
    """Validate what a grid returned for ``steps`` steps (a tensor, or a list / tuple of Python
    numbers from :meth:`TimeGrid.floats`); returns it. A tensor is read once (``tolist``).

    Raises:
        TypeError: neither a real floating-point tensor with values nor a list / tuple of real
            numbers.
        ValueError: not of shape (steps + 1,), not finite, not starting at exactly 1 and
            ending at exactly 0, or not strictly decreasing (naming the first offending step).
    """
    _as_floats(times, steps, what)
    return times


def _as_floats(times: Union[Tensor, Sequence[float]], steps: int, what: str) -> list[float]:
    """:func:`check_times` returning the times as Python floats."""
    if isinstance(times, (list, tuple)):
        if any(isinstance(x, bool) or not isinstance(x, Real) for x in times):
            raise TypeError(f"{what} must give real numbers, got {[type(x).__name__ for x in times][:5]}")
        if len(times) != steps + 1:
            raise ValueError(f"{what} returned shape ({len(times)},) for {steps} steps; expected ({steps + 1},)")
        t = [float(x) for x in times]
    else:
        if not isinstance(times, Tensor) or not times.is_floating_point() or times.device.type == "meta":
            raise TypeError(f"{what} must return a floating-point tensor with values, got {describe(times)}")
        if tuple(times.shape) != (steps + 1,):
            raise ValueError(f"{what} returned shape {tuple(times.shape)} for {steps} steps; expected ({steps + 1},)")
        t = times.tolist()
    if t[0] != 1.0 or t[-1] != 0.0:
        raise ValueError(f"{what} must run from t = 1 (noise) to t = 0 (data), got t[0] = {t[0]!r}, t[-1] = {t[-1]!r}")
    i = next((i for i in range(steps) if not t[i] > t[i + 1]), None)  # NaN fails too
    if i is not None:
        raise ValueError(f"{what} must be strictly decreasing from 1 to 0: t[{i}] = {t[i]!r}, t[{i + 1}] = {t[i + 1]!r}")
    return t


def grid_floats(grid: TimeGrid, steps: int, what: str = "the time grid") -> list[float]:
    """The times of ``grid`` for ``steps`` steps as Python floats, validated as
    :func:`check_times` does (its errors, naming ``what``): :meth:`TimeGrid.floats` where the
    grid gives them (every built-in grid: no tensor is read), else ``grid(steps)`` read once."""
    times = grid.floats(steps)
    return _as_floats(grid(steps) if times is None else times, steps, what)


class _FloatGrid(TimeGrid):
    """A grid given by :meth:`floats`; its tensor is those numbers in float64."""

    def __call__(self, steps: int) -> Tensor:
        return torch.tensor(self.floats(steps), dtype=torch.float64)


@TIME_GRIDS.register("linear")
class LinearGrid(_FloatGrid):
    """t_k = k / n."""

    def floats(self, steps: int) -> list[float]:
        return _fractions(steps)


@TIME_GRIDS.register("pow", spec=PowGridSpec)
class PowGrid(_FloatGrid):
    """t_k = (k / n) ** (1 / p) (the release: p = 0.25, small steps near the data), in float64
    with Python's (the C library's) ``pow``."""

    def __init__(self, spec: PowGridSpec):
        self.spec = spec

    def floats(self, steps: int) -> list[float]:
        e = 1.0 / self.spec.p
        return [u ** e for u in _fractions(steps)]


@TIME_GRIDS.register("shifted", spec=ShiftedGridSpec)
class ShiftedGrid(_FloatGrid):
    """t_k = s u / (1 + (s - 1) u) with u = k / n."""

    def __init__(self, spec: ShiftedGridSpec):
        self.spec = spec

    def floats(self, steps: int) -> list[float]:
        s = self.spec.shift
        return [s * u / (s * u + (1 - u)) for u in _fractions(steps)]  # same map; exactly 1 at u = 1 and 0 at u = 0


@TIME_GRIDS.register("knots", spec=KnotsGridSpec)
class KnotsGrid(_FloatGrid):
    """The grid through the spec's ``times`` (t_0 = 1 > ... > t_K = 0): ``grid(K)`` returns them
    exactly; ``grid(n)`` for another n places knot j at fraction j / K of the linear grid and
    interpolates linearly between knots (so it stays strictly decreasing with exact endpoints).
    A few-step decoder records the times it was trained on as such a grid."""

    def __init__(self, spec: KnotsGridSpec):
        self.spec = spec
        self.knots = torch.tensor(spec.times, dtype=torch.float64)
        self._knots = [float(t) for t in spec.times]

    def floats(self, steps: int) -> list[float]:
        _fractions(steps)  # validates steps
        knots, k = self._knots, len(self._knots) - 1
        out = []
        for i in range(steps + 1):
            idx = float(i) * k / steps  # the knot position of step i: 0 .. k
            lo = min(math.floor(idx), k - 1)
            frac = idx - lo
            # exact knots where a step lands on one (all of them for steps = K)
            out.append(knots[lo] if frac == 0 else knots[lo] + frac * (knots[lo + 1] - knots[lo]))
        return out


def build_grid(spec) -> TimeGrid:
    """The time grid ``spec`` names: a :class:`~flowmo.spec.TimeGridSpec`, a dict of its fields
    (``{"name": "pow", "p": 0.5}``) or a registered name (``"linear"``). Raises TypeError for
    another type and pydantic's ValidationError (a ValueError) naming the problem for an
    unknown name or invalid fields."""
    spec = _as_spec(TimeGridSpec, spec, "time grid")
    return TIME_GRIDS.build(spec)


def _as_spec(kind, spec, what: str):
    """``spec`` (a spec of ``kind``, a dict of its fields or a registered name) validated."""
    if isinstance(spec, kind):
        return spec
    if not isinstance(spec, (dict, str)):
        raise TypeError(f"spec must be a {kind.__name__}, a dict of its fields or the name of a registered {what}, "
                        f"got {type(spec).__name__} {spec!r}")
    return kind.model_validate(spec)
