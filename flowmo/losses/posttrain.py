"""Stage 1B: the mode-seeking post-training objective."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..registry import POSTTRAIN_OBJECTIVES
from ..spec import ModeSeekingSpec
from .flow import VelocityFn
from .perceptual import build_distance

__all__ = ["ModeSeeking", "random_chain_times"]


def random_chain_times(u: Tensor) -> Tensor:
    """Per-sample times of a K-step chain from uniform draws u (B, K + 1).

    s = cumsum(u), normalised to run from 0 to 1; the times are s in reversed order
    (t_0 = 1, ..., t_K = 0). Returns (B, K + 1).
    """
    s = torch.cumsum(u, dim=1)
    s = (s - s[:, :1]) / (s[:, -1:] - s[:, :1])
    return s.flip(1)


@POSTTRAIN_OBJECTIVES.register("mode_seeking", spec=ModeSeekingSpec)
class ModeSeeking:
    """Sample K Euler steps from noise with random per-sample step sizes, through the decoder
    (gradient checkpointing on each call), and penalise ``weight * d(sample, x)``."""

    def __init__(self, spec: ModeSeekingSpec):
        self.spec = spec
        self.distance = build_distance(spec.distance)

    def draw_u(self, batch: int, *, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        return torch.rand(batch, self.spec.k + 1, generator=generator, device=device)

    def chain(self, velocity: VelocityFn, noise: Tensor, cond: Tensor, u: Tensor) -> Tensor:
        """The K-step sample from ``noise`` with per-sample times from ``u`` (B, K + 1)."""
        if u.shape != (noise.shape[0], self.spec.k + 1):
            raise ValueError(f"u must have shape ({noise.shape[0]}, {self.spec.k + 1}), got {tuple(u.shape)}")
        times = random_chain_times(u.double()).to(torch.float32)
        z = noise
        use_ckpt = self.spec.checkpoint and torch.is_grad_enabled()
        for i in range(self.spec.k):
            t, t_next = times[:, i], times[:, i + 1]
            v = checkpoint(velocity, z, t, cond, use_reentrant=False) if use_ckpt else velocity(z, t, cond)
            z = z - (t - t_next).to(z.dtype).view(-1, *([1] * (z.ndim - 1))) * v
        return z

    def __call__(self, velocity: VelocityFn, x: Tensor, cond: Tensor, *, noise: Optional[Tensor] = None,
                 u: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if u is None:
            u = self.draw_u(x.shape[0], generator=generator, device=x.device)
        sample = self.chain(velocity, noise, cond, u)
        dist = self.distance.to(x.device)(sample, x)
        return {"mode_seeking": self.spec.weight * dist.mean()}
