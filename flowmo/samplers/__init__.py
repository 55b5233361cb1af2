"""Samplers: time grids, ODE solvers and classifier-free guidance."""

from .grids import KnotsGrid, LinearGrid, PowGrid, ShiftedGrid, TimeGrid, build_grid, check_times, grid_floats
from .sampler import GuidedVelocity, SampleOutput, sample, state_dtype
from .solvers import Euler, Heun, Solver, build_solver
from flowmo.spec.sampling import SAMPLER_PRESETS, SamplerSpec, resolve_preset

# the built-in presets, now that the grids and solvers they name are registered
SAMPLER_PRESETS.update({
    # the release: 25 Euler steps on pow 0.25, CFG 1.5 on the EDM sigma interval (0.17, 1.02): 31 calls
    "release": SamplerSpec(),
    # the same grid and guidance with 8 steps: 10 calls. On the demo model it loses no PSNR against
    # "release" (docs/performance.md, "Fewer decoder calls"): fewer steps also average more, so
    # check sharpness on your own model before relying on it
    "fast": SamplerSpec(steps=8),
})

__all__ = [
    "TimeGrid", "LinearGrid", "KnotsGrid", "PowGrid", "ShiftedGrid", "build_grid", "check_times",
    "grid_floats", "Solver", "Euler", "Heun",
    "build_solver", "sample", "SampleOutput", "GuidedVelocity", "SAMPLER_PRESETS", "resolve_preset", "state_dtype",
]
