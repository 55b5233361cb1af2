"""Time grids: ``grid(steps)`` -> (steps + 1,) float64 times running from 1 (noise) to 0 (data)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..registry import TIME_GRIDS
from ..spec import KnotsGridSpec, PowGridSpec, ShiftedGridSpec, TimeGridSpec

__all__ = ["TimeGrid", "LinearGrid", "PowGrid", "ShiftedGrid", "KnotsGrid", "build_grid", "check_times"]


class TimeGrid(ABC):
    """The interface of every time grid: the times a sampler integrates through.

    Registered with :data:`flowmo.TIME_GRIDS`; built as ``TIME_GRIDS.build(spec)`` (no wiring).
    A subclass's constructor takes its configuration as keyword-only arguments (registered with
    one decorator line) or its spec (an explicit spec class); there is no base constructor to
    call. Check a new grid with :func:`flowmo.testing.check_time_grid`;
    :func:`flowmo.samplers.sample` validates every grid's output with :func:`check_times`.
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

    @staticmethod
    def fractions(steps: int) -> Tensor:
        """k / n for k = n .. 0 (float64), the linear grid most grids are a map of.

        Raises ValueError unless ``steps`` is a positive int.
        """
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        return torch.arange(steps, -1, -1, dtype=torch.float64) / steps


def describe(x: object) -> str:
    """``x`` in a message: "dtype (shape) on device" for a tensor, else its type's name."""
    return f"{x.dtype} {tuple(x.shape)} on {x.device}" if isinstance(x, Tensor) else type(x).__name__


def check_times(times: Tensor, steps: int, what: str = "the time grid") -> Tensor:
    """Validate what a grid returned for ``steps`` steps; returns it.

    Raises:
        TypeError: not a real floating-point tensor.
        ValueError: not of shape (steps + 1,), not finite, not starting at exactly 1 and
            ending at exactly 0, or not strictly decreasing (naming the first offending step).
    """
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
    return times


@TIME_GRIDS.register("linear")
class LinearGrid(TimeGrid):
    """t_k = k / n."""

    def __call__(self, steps: int) -> Tensor:
        return self.fractions(steps)


@TIME_GRIDS.register("pow", spec=PowGridSpec)
class PowGrid(TimeGrid):
    """t_k = (k / n) ** (1 / p) (the release: p = 0.25, small steps near the data)."""

    def __init__(self, spec: PowGridSpec):
        self.spec = spec

    def __call__(self, steps: int) -> Tensor:
        return self.fractions(steps) ** (1.0 / self.spec.p)


@TIME_GRIDS.register("shifted", spec=ShiftedGridSpec)
class ShiftedGrid(TimeGrid):
    """t_k = s u / (1 + (s - 1) u) with u = k / n."""

    def __init__(self, spec: ShiftedGridSpec):
        self.spec = spec

    def __call__(self, steps: int) -> Tensor:
        u = self.fractions(steps)
        s = self.spec.shift
        return s * u / (s * u + (1 - u))  # same map; exactly 1 at u = 1 and 0 at u = 0


@TIME_GRIDS.register("knots", spec=KnotsGridSpec)
class KnotsGrid(TimeGrid):
    """The grid through the spec's ``times`` (t_0 = 1 > ... > t_K = 0): ``grid(K)`` returns them
    exactly; ``grid(n)`` for another n places knot j at fraction j / K of the linear grid and
    interpolates linearly between knots (so it stays strictly decreasing with exact endpoints).
    A few-step decoder records the times it was trained on as such a grid."""

    def __init__(self, spec: KnotsGridSpec):
        self.spec = spec
        self.knots = torch.tensor(spec.times, dtype=torch.float64)

    def __call__(self, steps: int) -> Tensor:
        self.fractions(steps)  # validates steps
        k = len(self.spec.times) - 1
        idx = torch.arange(steps + 1, dtype=torch.float64) * k / steps  # the knot position of each step: 0 .. k
        lo = idx.floor().clamp(max=k - 1).long()
        frac = idx - lo
        out = self.knots[lo] + frac * (self.knots[lo + 1] - self.knots[lo])
        whole = frac == 0
        out[whole] = self.knots[lo[whole]]  # exact knots where a step lands on one (all of them for steps = K)
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
