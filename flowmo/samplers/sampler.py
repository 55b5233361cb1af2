"""Decoding: an ODE solver on a time grid with classifier-free guidance."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ..spec import GuidanceSpec, SamplerSpec
from .grids import build_grid
from .solvers import build_solver

__all__ = ["sample", "SampleOutput", "GuidedVelocity"]

# (x_t, t (B,), cond (B, T, C + 1)) -> v
DecoderFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass
class SampleOutput:
    images: Tensor
    decoder_calls: int  # decoder evaluations per image (a guided step counts 2)
    times: Tensor  # the grid used, float64
    intermediates: list[Tensor] = field(default_factory=list)  # z after each step, on request


class GuidedVelocity:
    """v(z, t) with CFG: v_u + scale (v_c - v_u) when t is in the interval, else v_c.

    The guided evaluation runs conditional and unconditional inputs as one batch.
    Counts decoder evaluations in ``calls``.
    """

    def __init__(self, decoder: DecoderFn, cond: Tensor, null_cond: Tensor, guidance: GuidanceSpec):
        self.decoder = decoder
        self.cond = cond
        self.null_cond = null_cond
        self.guidance = guidance
        self.calls = 0

    def guided_at(self, t: float) -> bool:
        g = self.guidance
        if g.scale == 1.0:
            return False
        return g.interval is None or (g.interval[0] <= t <= g.interval[1])

    def __call__(self, z: Tensor, t: float) -> Tensor:
        b = z.shape[0]
        if self.guided_at(t):
            tt = torch.full((2 * b,), t, device=z.device, dtype=torch.float32)
            v = self.decoder(torch.cat((z, z)), tt, torch.cat((self.cond, self.null_cond)))
            v_c, v_u = v[:b], v[b:]
            self.calls += 2
            return v_u + self.guidance.scale * (v_c - v_u)
        self.calls += 1
        return self.decoder(z, torch.full((b,), t, device=z.device, dtype=torch.float32), self.cond)


def sample(
    decoder: DecoderFn,
    noise: Tensor,
    cond: Tensor,
    spec: SamplerSpec,
    *,
    null_cond: Optional[Tensor] = None,
    return_intermediates: bool = False,
    enable_grad: bool = False,
) -> SampleOutput:
    """Integrate from ``noise`` (t = 1) to an image (t = 0) conditioned on ``cond``.

    ``null_cond`` is the unconditional input (default: zeros like ``cond``). Runs without
    autograd unless ``enable_grad``.
    """
    if null_cond is None:
        null_cond = torch.zeros_like(cond)
    times = build_grid(spec.grid)(spec.steps)
    solver = build_solver(spec.solver)
    velocity = GuidedVelocity(decoder, cond, null_cond, spec.guidance)
    inter: list[Tensor] = []
    cb = (lambda i, z: inter.append(z)) if return_intermediates else None
    with (nullcontext() if enable_grad else torch.no_grad()):
        z = solver.solve(velocity, noise, times, cb)
        if spec.clip:
            z = z.clamp(-1.0, 1.0)
    return SampleOutput(z, velocity.calls, times, inter)
