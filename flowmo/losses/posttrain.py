"""Stage 1B: the mode-seeking post-training objective."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..registry import POSTTRAIN_OBJECTIVES
from ..samplers.sampler import state_dtype
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

    def chain(self, velocity: VelocityFn, noise: Tensor, cond: Tensor, u: Tensor, *,
              decoder_dtype: Optional[torch.dtype] = None) -> Tensor:
        """The K-step Euler sample from ``noise`` (B, ...) with per-sample times from ``u`` (B, K + 1).

        ``velocity(x_t, t, cond)`` is called with x_t cast to ``decoder_dtype`` (default: noise's
        dtype), t float32 (B,) and ``cond`` as given. The state and the step arithmetic
        z <- z - (t_i - t_{i+1}) v run in ``state_dtype(noise.dtype)`` (float32 for float32,
        bfloat16 and float16; float64 for float64): each velocity is cast to it before use and
        the step sizes are differences of the float64 times. Returns (B, ...) in that dtype.
        Raises ValueError for a ``u`` of the wrong shape.
        """
        if u.shape != (noise.shape[0], self.spec.k + 1):
            raise ValueError(f"u must have shape ({noise.shape[0]}, {self.spec.k + 1}), got {tuple(u.shape)}")
        work = state_dtype(noise.dtype)
        dd = decoder_dtype or noise.dtype
        times64 = random_chain_times(u.double())
        times = times64.to(torch.float32)
        z = noise.to(work)
        view = (-1,) + (1,) * (z.ndim - 1)
        use_ckpt = self.spec.checkpoint and torch.is_grad_enabled()
        for i in range(self.spec.k):
            t = times[:, i]
            dt = (times64[:, i] - times64[:, i + 1]).to(work).view(view)
            x = z.to(dd)
            v = checkpoint(velocity, x, t, cond, use_reentrant=False) if use_ckpt else velocity(x, t, cond)
            z = z - dt * v.to(work)
        return z

    def __call__(self, velocity: VelocityFn, x: Tensor, cond: Tensor, *, noise: Optional[Tensor] = None,
                 u: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """``{"mode_seeking": weight * mean_b d(chain sample, x)}``.

        ``x`` (B, 3, H, W) is given in the decoder's dtype (as :meth:`FlowMo.posttrain_loss`
        does): the decoder is called in that dtype, the chain runs in ``state_dtype(x.dtype)``
        (float32 for a bfloat16 model) and the distance compares the float32 sample with x
        cast up (exactly). ``noise`` defaults to N(0, I) drawn in the state dtype, so a
        bfloat16 and a float32 model draw the same noise from the same generator.
        """
        work = state_dtype(x.dtype)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=work)
        if u is None:
            u = self.draw_u(x.shape[0], generator=generator, device=x.device)
        sample = self.chain(velocity, noise, cond, u, decoder_dtype=x.dtype)
        dist = self.distance.to(x.device)(sample, x.to(sample.dtype))
        return {"mode_seeking": self.spec.weight * dist.mean()}
