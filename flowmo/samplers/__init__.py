"""Samplers: time grids, ODE solvers and classifier-free guidance."""

from .presets import SAMPLER_PRESETS
from .grids import LinearGrid, PowGrid, ShiftedGrid, TimeGrid, build_grid
from .sampler import GuidedVelocity, SampleOutput, sample
from .solvers import Euler, Heun, Solver, build_solver

__all__ = [
    "TimeGrid", "LinearGrid", "PowGrid", "ShiftedGrid", "build_grid", "Solver", "Euler", "Heun",
    "build_solver", "sample", "SampleOutput", "GuidedVelocity", "SAMPLER_PRESETS",
]
