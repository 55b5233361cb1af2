"""Time grids: ``grid(steps)`` -> (steps + 1,) float64 times running from 1 (noise) to 0 (data)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..registry import TIME_GRIDS
from ..spec import PowGridSpec, ShiftedGridSpec, TimeGridSpec

__all__ = ["TimeGrid", "LinearGrid", "PowGrid", "ShiftedGrid", "build_grid"]


class TimeGrid:
    def __init__(self, spec=None):
        self.spec = spec

    def fractions(self, steps: int) -> Tensor:
        """k / n for k = n .. 0 (float64)."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        return torch.arange(steps, -1, -1, dtype=torch.float64) / steps

    def __call__(self, steps: int) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError


@TIME_GRIDS.register("linear")
class LinearGrid(TimeGrid):
    """t_k = k / n."""

    def __call__(self, steps: int) -> Tensor:
        return self.fractions(steps)


@TIME_GRIDS.register("pow", spec=PowGridSpec)
class PowGrid(TimeGrid):
    """t_k = (k / n) ** (1 / p) (the release: p = 0.25, small steps near the data)."""

    def __call__(self, steps: int) -> Tensor:
        return self.fractions(steps) ** (1.0 / self.spec.p)


@TIME_GRIDS.register("shifted", spec=ShiftedGridSpec)
class ShiftedGrid(TimeGrid):
    """t_k = s u / (1 + (s - 1) u) with u = k / n."""

    def __call__(self, steps: int) -> Tensor:
        u = self.fractions(steps)
        s = self.spec.shift
        return s * u / (s * u + (1 - u))  # same map; exactly 1 at u = 1 and 0 at u = 0


def build_grid(spec) -> TimeGrid:
    """The time grid ``spec`` names: a :class:`~flowmo.spec.TimeGridSpec`, a dict of its fields
    (``{"name": "pow", "p": 0.5}``) or a registered name (``"linear"``). Raises TypeError for
    another type and pydantic's ValidationError (a ValueError) naming the problem for an
    unknown name or invalid fields."""
    spec = _as_spec(TimeGridSpec, spec, "time grid")
    return TIME_GRIDS.create(spec.name, spec)


def _as_spec(kind, spec, what: str):
    """``spec`` (a spec of ``kind``, a dict of its fields or a registered name) validated."""
    if isinstance(spec, kind):
        return spec
    if not isinstance(spec, (dict, str)):
        raise TypeError(f"spec must be a {kind.__name__}, a dict of its fields or the name of a registered {what}, "
                        f"got {type(spec).__name__} {spec!r}")
    return kind.model_validate(spec)
