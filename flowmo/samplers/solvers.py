"""ODE solvers integrating dz/dt = v(z, t) from t = 1 down to t = 0 on any time grid.

Precision contract: a solver keeps the state in the dtype of the ``z`` it is given and does
its arithmetic in that dtype. :func:`flowmo.samplers.sample` hands every solver (built-in or
registered by a user) a float32 state (float64 for float64 noise) and a velocity function
that returns that dtype, whatever the decoder's own dtype (bfloat16, float16), so a solver
written with plain tensor arithmetic gets full-precision steps for free.
:func:`flowmo.testing.check_solver` checks this (property ``float32_state``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, Optional, Sequence, Union

from torch import Tensor

from ..registry import SOLVERS
from ..spec import SolverSpec
from .grids import _as_spec

__all__ = ["Solver", "Euler", "Heun", "build_solver", "Velocity"]

# (z, t as a python float) -> velocity of z's shape (and, from the sampler, z's dtype)
Velocity = Callable[[Tensor, float], Tensor]


class Solver(ABC):
    """The interface of every ODE solver: integrates dz/dt = v(z, t) along a time grid.

    Registered with :data:`flowmo.SOLVERS`; built as ``SOLVERS.build(spec)`` (no wiring).
    Subclasses implement :meth:`step`; :meth:`solve` runs a whole grid and may be overridden
    (a multistep method). A subclass's constructor takes its configuration as keyword-only
    arguments (registered with one decorator line) or its spec (an explicit spec class); there
    is no base constructor to call. Check a new solver with :func:`flowmo.testing.check_solver`
    (``check_solver(MySolver(), order=2)`` for a second-order one;
    ``check_component(spec, options={"order": 2})``).

    ``solve(velocity, z, times, callback)``: z any shape, floating dtype; times the
    (steps + 1,) grid from 1 to 0, float64 values: a tuple of Python floats from
    :func:`flowmo.samplers.sample` (the grid computed on the host, so that no step reads a
    tensor: a solver that overrides ``solve`` takes the times with ``len``, indexing and
    ``float``, or converts them once) or a float64 tensor (read once, before the loop).
    Returns z at t = 0, same shape and dtype (the input is not modified). Calls
    ``callback(i, z)`` after every step (for intermediates). The built-in solvers cast each
    velocity to z's dtype, so a lower-precision velocity (a bfloat16 decoder called directly)
    does not lower the precision of the step.
    """

    @abstractmethod
    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:
        """One step from ``t`` to ``t_next`` (< t).

        Args:
            velocity: ``velocity(z, t)`` -> dz/dt, a tensor of z's shape (t a python float).
            z: the state at time ``t``, any shape, floating dtype (float32 from the sampler).
            t, t_next: python floats in [0, 1], t_next < t.

        Returns:
            The state at ``t_next``: a new tensor of z's shape and dtype (z is not modified).
        """

    def solve(self, velocity: Velocity, z: Tensor, times: Union[Tensor, Sequence[float]],
              callback: Optional[Callable[[int, Tensor], None]] = None) -> Tensor:
        """Run :meth:`step` along ``times`` (see the class); the steps' times are Python floats,
        taken from the grid once before the loop (one read of a tensor grid, none of a list)."""
        ts = times.tolist() if isinstance(times, Tensor) else [float(x) for x in times]
        for i in range(len(ts) - 1):
            z = self.step(velocity, z, ts[i], ts[i + 1])
            if callback is not None:
                callback(i, z)
        return z


@SOLVERS.register("euler")
class Euler(Solver):
    """z <- z + (t_next - t) v(z, t). One velocity call per step."""

    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:
        return z + (t_next - t) * velocity(z, t).to(z.dtype)


@SOLVERS.register("heun")
class Heun(Solver):
    """Heun (trapezoidal predictor-corrector), 2nd order: two velocity calls per step,
    exact when v is linear in t."""

    def step(self, velocity: Velocity, z: Tensor, t: float, t_next: float) -> Tensor:
        dt = t_next - t
        v1 = velocity(z, t).to(z.dtype)
        z_pred = z + dt * v1
        v2 = velocity(z_pred, t_next).to(z.dtype)
        return z + dt * 0.5 * (v1 + v2)


def build_solver(spec) -> Solver:
    """The ODE solver ``spec`` names: a :class:`~flowmo.spec.SolverSpec`, a dict of its fields
    (``{"name": "heun"}``) or a registered name (``"euler"``). Raises TypeError for another
    type and pydantic's ValidationError (a ValueError) naming the problem for an unknown name
    or invalid fields."""
    spec = _as_spec(SolverSpec, spec, "ODE solver")
    return SOLVERS.build(spec)
