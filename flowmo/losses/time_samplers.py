"""Training-time samplers: draws of t in [0, 1] (t = 1 is noise)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..registry import TIME_SAMPLERS
from ..spec import FatLogitNormalTimeSpec, LogitNormalTimeSpec, UniformTimeSpec

__all__ = ["TimeSampler", "UniformTime", "LogitNormalTime", "FatLogitNormalTime", "shift_time"]


def shift_time(t: Tensor, shift: float) -> Tensor:
    """t -> s t / (1 + (s - 1) t): s > 1 moves mass towards t = 1 (noise); maps [0, 1] onto itself."""
    if shift == 1.0:
        return t
    return shift * t / (shift * t + (1 - t))  # same map, written so that t = 1 gives exactly 1


class TimeSampler:
    """Base: ``sample(n, generator=..., device=..., dtype=...)`` -> (n,) times in [0, 1]."""

    def __init__(self, spec):
        self.spec = spec

    def draw(self, n: int, generator: Optional[torch.Generator], device) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, device=None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        device = torch.device(device) if device is not None else (generator.device if generator is not None else None)
        t = self.draw(n, generator, device)
        t = shift_time(t.double(), float(getattr(self.spec, "shift", 1.0)))
        return t.clamp(0.0, 1.0).to(dtype)

    __call__ = sample


@TIME_SAMPLERS.register("uniform", spec=UniformTimeSpec)
class UniformTime(TimeSampler):
    def draw(self, n, generator, device):
        return torch.rand(n, generator=generator, device=device)


@TIME_SAMPLERS.register("logit_normal", spec=LogitNormalTimeSpec)
class LogitNormalTime(TimeSampler):
    """t = sigmoid(mean + std * n), n ~ N(0, 1)."""

    def draw(self, n, generator, device):
        z = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.spec.mean + self.spec.std * z)


@TIME_SAMPLERS.register("fat_logit_normal", spec=FatLogitNormalTimeSpec)
class FatLogitNormalTime(TimeSampler):
    """The release's mix: logit-normal, each draw replaced by U(0, 1) with probability ``uniform_fraction``."""

    def draw(self, n, generator, device):
        z = torch.randn(n, generator=generator, device=device)
        t = torch.sigmoid(self.spec.mean + self.spec.std * z)
        u = torch.rand(n, generator=generator, device=device)
        replace = torch.rand(n, generator=generator, device=device) < self.spec.uniform_fraction
        return torch.where(replace, u, t)
