"""ODE solvers integrating dz/dt = v(z, t) from t = 1 down to t = 0 on any time grid."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ..registry import SOLVERS
from ..spec import SolverSpec

__all__ = ["Solver", "Euler", "Heun", "build_solver", "Velocity"]

# (z, t as a python float) -> velocity
Velocity = Callable[[Tensor, float], Tensor]


class Solver:
    """Base: ``step(v, z, t, t_next)`` advances z from t to t_next; ``solve`` runs a whole grid.

    ``solve`` calls ``callback(i, z)`` after every step (for intermediates).
    """

    def __init__(self, spec: Optional[SolverSpec] = None):
        self.spec = spec

    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def solve(self, velocity: Velocity, z: Tensor, times: Tensor,
              callback: Optional[Callable[[int, Tensor], None]] = None) -> Tensor:
        ts = [float(x) for x in times]
        for i in range(len(ts) - 1):
            z = self.step(velocity, z, ts[i], ts[i + 1])
            if callback is not None:
                callback(i, z)
        return z


@SOLVERS.register("euler")
class Euler(Solver):
    """z <- z + (t_next - t) v(z, t). One velocity call per step."""

    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:
        return z + (t_next - t) * velocity(z, t)


@SOLVERS.register("heun")
class Heun(Solver):
    """Heun (trapezoidal predictor-corrector), 2nd order: two velocity calls per step,
    exact when v is linear in t."""

    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:
        dt = t_next - t
        v1 = velocity(z, t)
        z_pred = z + dt * v1
        v2 = velocity(z_pred, t_next)
        return z + dt * 0.5 * (v1 + v2)


def build_solver(spec) -> Solver:
    return SOLVERS.create(spec.name, spec)
