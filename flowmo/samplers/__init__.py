"""Samplers: time grids, ODE solvers and classifier-free guidance."""

from .grids import KnotsGrid, LinearGrid, PowGrid, ShiftedGrid, TimeGrid, build_grid, check_times
from .sampler import GuidedVelocity, SampleOutput, sample, state_dtype
from .solvers import Euler, Heun, Solver, build_solver
from .presets import SAMPLER_PRESETS, resolve_preset  # after the solvers and grids: it builds specs naming them

__all__ = [
    "TimeGrid", "LinearGrid", "KnotsGrid", "PowGrid", "ShiftedGrid", "build_grid", "check_times", "Solver", "Euler", "Heun",
    "build_solver", "sample", "SampleOutput", "GuidedVelocity", "SAMPLER_PRESETS", "resolve_preset", "state_dtype",
]
