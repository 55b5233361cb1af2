"""Training-time samplers: draws of t in [0, 1] (t = 1 is noise)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

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


class TimeSampler(ABC):
    """The interface of every training-time sampler: draws of the flow time t in [0, 1]
    (t = 0 data, t = 1 noise).

    Registered with :data:`flowmo.TIME_SAMPLERS`; built as ``TIME_SAMPLERS.build(spec)`` (no
    wiring). Subclasses implement :meth:`draw`; :meth:`sample` (also ``__call__``) validates
    ``n``, applies :attr:`shift` and casts. Check a new sampler with
    :func:`flowmo.testing.check_time_sampler`.

    Constructors: the base takes one optional positional argument, the spec, and stores it as
    ``self.spec`` (``TimeSampler(spec=None, /)`` in ``help()``). A sampler registered with one
    decorator line takes its configuration as keyword-only arguments and calls
    ``super().__init__()`` with no argument (``self.spec`` stays None)::

        @flowmo.TIME_SAMPLERS.register("beta")
        class BetaTime(TimeSampler):
            def __init__(self, *, a: float = 2.0, b: float = 2.0, shift: float = 1.0):
                super().__init__()
                self.a, self.b, self.shift = a, b, shift

            def draw(self, n, generator, device):
                ...  # (n,) times in [0, 1] from generator

    A sampler registered with an explicit spec class is built as ``cls(spec)`` and calls
    ``super().__init__(spec)``.

    Optional capability: ``shift`` (float > 0, default 1.0 = none): :meth:`sample` maps each
    draw through t -> s t / (1 + (s - 1) t) (:func:`shift_time`).
    """

    shift: float = 1.0

    def __init__(self, spec: Any = None, /):
        """``spec``: the spec of a sampler registered with an explicit spec class; a
        decorator-registered sampler calls ``super().__init__()`` without it (None)."""
        self.spec = spec  # the spec of a sampler registered with an explicit spec class (else None)

    @abstractmethod
    def draw(self, n: int, generator: Optional[torch.Generator], device: Optional[torch.device]) -> Tensor:
        """``n`` draws before the shift.

        Args:
            n: a non-negative int (validated by :meth:`sample`).
            generator: the only source of randomness (None: torch's global generator).
            device: where to draw (None: the generator's device or the CPU).

        Returns:
            (n,) floating tensor of times in [0, 1].
        """

    def sample(self, n: int, *, generator: Optional[torch.Generator] = None, device=None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """(n,) times in [0, 1] of ``dtype``: :meth:`draw`, shifted by :attr:`shift` (in float64), clamped."""
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        device = torch.device(device) if device is not None else (generator.device if generator is not None else None)
        t = self.draw(n, generator, device)
        t = shift_time(t.double(), float(self.shift))
        return t.clamp(0.0, 1.0).to(dtype)

    __call__ = sample


class _ShiftedSpecSampler(TimeSampler):
    """A built-in sampler taking its spec, whose ``shift`` field is the shift."""

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.shift = spec.shift


@TIME_SAMPLERS.register("uniform", spec=UniformTimeSpec)
class UniformTime(_ShiftedSpecSampler):
    def draw(self, n, generator, device):
        return torch.rand(n, generator=generator, device=device)


@TIME_SAMPLERS.register("logit_normal", spec=LogitNormalTimeSpec)
class LogitNormalTime(_ShiftedSpecSampler):
    """t = sigmoid(mean + std * n), n ~ N(0, 1)."""

    def draw(self, n, generator, device):
        z = torch.randn(n, generator=generator, device=device)
        return torch.sigmoid(self.spec.mean + self.spec.std * z)


@TIME_SAMPLERS.register("fat_logit_normal", spec=FatLogitNormalTimeSpec)
class FatLogitNormalTime(_ShiftedSpecSampler):
    """The release's mix: logit-normal, each draw replaced by U(0, 1) with probability ``uniform_fraction``."""

    def draw(self, n, generator, device):
        z = torch.randn(n, generator=generator, device=device)
        t = torch.sigmoid(self.spec.mean + self.spec.std * z)
        u = torch.rand(n, generator=generator, device=device)
        replace = torch.rand(n, generator=generator, device=device) < self.spec.uniform_fraction
        return torch.where(replace, u, t)
