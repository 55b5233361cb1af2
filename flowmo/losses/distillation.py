"""Few-step decoding by distillation: a k-step, unguided student trained to land where the guided
many-step sampler (the teacher) lands.

The teacher's time grid t_0 = 1 > ... > t_N = 0 (N its steps) is cut into k windows at the grid
points n_j = round(j N / k), j = 0 .. k (so every window holds at least one teacher step and the
student's times s_j = t_{n_j} are teacher times). Each training sample draws one window j and a
start state at s_j: the noise itself for j = 0, else the forward process (1 - s_j) x + s_j eps
(as progressive distillation, Salimans & Ho 2022, and PeRFlow, Yan et al. 2024, start their
windows). The teacher, frozen, runs its own solver, grid steps and classifier-free guidance from
s_j to s_{j+1} (no gradients); the student makes one Euler step over the window, and its
velocity is regressed on the teacher's average one:

    L = weight * mean_b || v_student(z_b, s_j) - (z_b - z_teacher) / (s_j - s_{j+1}) ||^2

(mean over pixels). For k = 1 the one window is the whole teacher sampler from pure noise: the
knowledge distillation of Luhman & Luhman (2021). Guidance is distilled (the teacher's velocity
is the guided one), so the student decodes with k calls: :meth:`Distillation.sampler_preset`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..registry import POSTTRAIN_OBJECTIVES
from ..samplers.grids import build_grid, check_times, describe
from ..samplers.sampler import GuidedVelocity, check_float_batch, state_dtype
from ..samplers.solvers import build_solver
from ..spec import DistillationSpec, KnotsGridSpec, SamplerSpec
from .flow import VelocityFn
from .posttrain import PosttrainObjective, few_step_sampler

__all__ = ["Distillation", "window_bounds"]


def window_bounds(steps: int, k: int) -> list[int]:
    """The teacher grid indices n_j = floor(j * steps / k + 1/2), j = 0 .. k, that cut a
    ``steps``-step grid into ``k`` windows: n_0 = 0, n_k = steps, strictly increasing (each
    window holds at least one teacher step). ValueError unless 1 <= k <= steps (ints)."""
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in (steps, k)) or k > steps:
        raise ValueError(f"steps and k must be positive ints, k = {k!r} windows needing at least k teacher steps "
                         f"(steps = {steps!r})")
    return [(2 * j * steps + k) // (2 * k) for j in range(k + 1)]


@POSTTRAIN_OBJECTIVES.register("distillation", spec=DistillationSpec)
class Distillation(PosttrainObjective):
    """Distil the ``teacher`` sampler (guided, many steps) into ``k`` unguided Euler steps of the
    decoder being trained (the module docstring gives the loss).

    Attributes: ``teacher_times`` (N + 1,) float64, the teacher's grid; ``bounds`` the k + 1
    indices cutting it (:func:`window_bounds`); ``times`` (k + 1,) float64, the student's grid
    (the teacher's times at ``bounds``), which :meth:`sampler_preset` records.
    """

    needs_teacher = True

    def __init__(self, spec: DistillationSpec):
        self.spec = spec
        t = spec.teacher
        self.teacher_times = check_times(build_grid(t.grid)(t.steps), t.steps, f"the teacher's grid {t.grid.name!r}")
        self.bounds = window_bounds(t.steps, spec.k)
        self.times = self.teacher_times[self.bounds]
        if not bool(((self.times[:-1] - self.times[1:]).float() > 0).all() and self.times.float().diff().lt(0).all()):
            raise ValueError(f"the teacher's grid gives student times {self.times.tolist()} that are not distinct in "
                             "float32 (the decoder's t): use another teacher grid or fewer steps")
        self.solver = build_solver(t.solver)

    def sampler_preset(self) -> tuple[str, SamplerSpec]:
        """``("distillation-<k>", k unguided Euler steps on the student's times)`` (a
        :class:`~flowmo.spec.KnotsGridSpec` holding them; clipping as the teacher's)."""
        grid = KnotsGridSpec(times=tuple(float(x) for x in self.times))
        return f"distillation-{self.spec.k}", few_step_sampler(self.spec.k, grid, clip=self.spec.teacher.clip)

    def draw_u(self, batch: int, *, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        """(batch,) uniform draws in [0, 1): sample b trains window floor(u_b * k)."""
        return torch.rand(batch, generator=generator, device=device)

    def windows(self, u: Tensor) -> Tensor:
        """The window index (int64, 0 .. k - 1) of each draw in ``u`` (B,)."""
        return (u.double() * self.spec.k).floor().long().clamp(0, self.spec.k - 1)

    def teacher_step(self, teacher: VelocityFn, z: Tensor, cond: Tensor, window: int,
                     decoder_dtype: torch.dtype) -> Tensor:
        """Where the teacher sampler takes ``z`` (B, ...) at the start of ``window`` by its end:
        its solver on its own grid points in the window, with its guidance (the unconditional
        branch on all-zero conditioning, as :meth:`flowmo.FlowMo.decode`), no gradients; the
        last window's output is clamped to [-1, 1] when the teacher clips. Returns z's dtype."""
        lo, hi = self.bounds[window], self.bounds[window + 1]
        times = self.teacher_times[lo:hi + 1]
        velocity = GuidedVelocity(teacher, cond.to(decoder_dtype), torch.zeros_like(cond, dtype=decoder_dtype),
                                  self.spec.teacher.guidance, decoder_dtype)
        with torch.no_grad():
            out = self.solver.solve(velocity, z, times)
            if hi == len(self.teacher_times) - 1 and self.spec.teacher.clip:
                out = out.clamp(-1.0, 1.0)
        return out.to(z.dtype)

    def __call__(self, velocity: VelocityFn, x: Tensor, cond: Tensor, *, noise: Optional[Tensor] = None,
                 u: Optional[Tensor] = None, generator: Optional[torch.Generator] = None,
                 teacher: Optional[VelocityFn] = None) -> dict[str, Tensor]:
        """``{"distillation": weight * mean_b mean_pixels (v_student - v_teacher)^2}``.

        ``x`` (B, 3, H, W) clean images in the decoder's dtype; ``cond`` (B, T, C + 1) the
        conditioning; ``teacher(x_t, t, cond)`` the frozen teacher decoder (required: TypeError
        without it); ``noise`` (x's shape, finite, on x's device) default N(0, I) drawn in the
        state dtype (float32 for a bfloat16 model) from ``generator``; ``u`` (B,) floating draws
        in [0, 1) choosing each sample's window (default uniform from ``generator``, drawn after
        the noise). The state arithmetic runs in ``state_dtype(x.dtype)``; both decoders are
        called in x's dtype.
        """
        b = x.shape[0]
        if not callable(teacher):
            raise TypeError("the distillation objective needs teacher=, the frozen teacher (FlowMo.set_teacher)")
        if noise is not None:
            check_float_batch(noise, "noise")
            if noise.shape != x.shape or noise.device != x.device:
                raise ValueError(f"noise must have x's shape {tuple(x.shape)} and device, got {tuple(noise.shape)}")
        if u is not None and (not isinstance(u, Tensor) or not u.is_floating_point() or u.shape != (b,)
                              or u.device != x.device):
            raise ValueError(f"u must have shape ({b},) (floating draws on x's device), got {describe(u)}")
        if u is not None and not bool(((u >= 0) & (u < 1)).all()):
            raise ValueError("u must lie in [0, 1) (each draw picks a window)")
        work = state_dtype(x.dtype)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=work)
        if u is None:
            u = self.draw_u(b, generator=generator, device=x.device)
        win = self.windows(u)
        times = self.times.to(x.device)
        s0, s1 = times[win], times[win + 1]  # float64 (B,)
        view = (-1,) + (1,) * (x.ndim - 1)
        s0v = s0.to(work).view(view)
        z = (1 - s0v) * x.to(work) + s0v * noise.to(work)  # window 0 (s0 = 1): the noise itself
        target = torch.empty_like(z)
        for j in range(self.spec.k):
            sel = (win == j).nonzero().squeeze(1)
            if sel.numel():
                target[sel] = self.teacher_step(teacher, z[sel], cond[sel], j, x.dtype)
        v_teacher = (z - target) / (s0 - s1).to(work).view(view)
        v = velocity(z.to(x.dtype), s0.to(torch.float32), cond)
        loss = (v.to(work) - v_teacher).pow(2).flatten(1).mean(1).mean()
        return {"distillation": self.spec.weight * loss}
