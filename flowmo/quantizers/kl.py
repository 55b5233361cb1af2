"""The continuous FlowMo's bottleneck: a diagonal Gaussian posterior with a KL loss to N(0, I)
(the release's ``quantization_type: kl``; Sargent et al. 2025, the continuous FlowMo)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import torch
from pydantic import Field
from torch import Tensor

from ..registry import QUANTIZERS
from ..spec import LossTerm
from .base import Quantizer, QuantizerOutput

__all__ = ["DiagonalGaussian", "LOGVAR_RANGE", "MEAN_CLAMP"]

LOGVAR_RANGE = (-30.0, 20.0)
"""The log-variance is clamped to this range (the release's), in the sample and the loss alike."""

MEAN_CLAMP = 1e4
"""Inside the KL loss the mean is clamped to [-MEAN_CLAMP, MEAN_CLAMP] (the values are not): a
trained encoder's means are O(1), so the release's loss is unchanged where it matters, and a
diverging encoder (|mean| up to the float32 maximum, whose square overflows float32) gets a
large, finite loss instead of inf."""


@QUANTIZERS.register("kl")
class DiagonalGaussian(Quantizer):
    """A diagonal Gaussian posterior per latent value (the release's ``kl`` bottleneck).

    The encoder outputs E = 2C channels per token (:meth:`encoder_channels`). The release
    flattens each image's (T, 2C) output feature-major (``b t f -> b (f t)``) and splits it
    into two halves, mean and log-variance; feature-major, the first half is features 0 .. C-1
    of every token, so (B, T, 2C) ``z`` gives

        mean = z[..., :C],  logvar = clamp(z[..., C:], -30, 20)  (:data:`LOGVAR_RANGE`)

    (tests/test_continuous.py checks this against the explicit flatten and split). Values
    (B, T, C), in z's dtype:

    - training mode: a sample, mean + exp(logvar / 2) * eps, with eps ~ N(0, I) the ``noise``
      argument (:meth:`draw_noise`; the model draws it before the loss, with the loss's
      generator) or, without it, torch's global generator;
    - eval mode and :meth:`quantize` (inference: ``reconstruct``, ``flowmo eval``): the mean.
      The release samples always; we decode the mean at inference so that a reconstruction is
      a deterministic function of the image and the decoder's noise (the same image gives the
      same code on every call), as the discrete bottlenecks' codes are.

    Loss ``kl``: ``kl_weight`` * 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) over all
    latent values of an image (T x C), averaged over the batch: the KL divergence of the
    posterior from N(0, I) (computed in float32, the mean clamped to :data:`MEAN_CLAMP` inside
    it; 0 for a batch without images). The same in train and eval mode. The release weights it
    1 (the default).

    Continuous: ``discrete`` is False, no codebook or indices (``indices`` None); the model
    has no tokens.

    Args:
        kl_weight: weight of the KL term (>= 0; the release's 1.0).
        channels: C, the code's channels per token (wiring).
    """

    discrete = False
    stochastic = True

    def __init__(self, *, kl_weight: Annotated[float, Field(ge=0)] = 1.0, channels: int):
        super().__init__()
        self.channels = channels
        self.kl_weight = float(kl_weight)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kl_weight={self.kl_weight:g}"

    # -- declarations
    @classmethod
    def loss_terms(cls, spec: Any) -> list[LossTerm]:
        return [LossTerm("kl", spec.kl_weight, "0.5 * sum(mean^2 + var - 1 - logvar) over an image's latent values, "
                                               "averaged over the batch (KL of the posterior from N(0, I))")]

    @classmethod
    def encoder_channels(cls, spec: Any, channels: int) -> int:
        """2C: a mean and a log-variance per channel."""
        return 2 * channels

    @property
    def input_channels(self) -> int:
        return 2 * self.channels

    # -- the posterior
    def posterior(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(..., 2C) encoder output -> (mean, logvar), each (..., C), in z's dtype promoted to at
        least float32, logvar clamped to :data:`LOGVAR_RANGE`. No checks (callers check z)."""
        work = z.to(torch.promote_types(z.dtype, torch.float32))
        return work[..., :self.channels], work[..., self.channels:].clamp(*LOGVAR_RANGE)

    def draw_noise(self, batch: int, tokens: int, *, generator: Optional[torch.Generator] = None,
                   device: Optional[torch.device] = None) -> Tensor:
        """eps ~ N(0, I): float32 (batch, tokens, C) from ``generator`` on ``device``. TypeError /
        ValueError naming ``batch``, ``tokens`` (ints >= 0) or ``generator`` (a torch.Generator or None)."""
        for name, n in (("batch", batch), ("tokens", tokens)):
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise (ValueError if isinstance(n, int) and not isinstance(n, bool) else TypeError)(
                    f"{name} must be an int >= 0, got {type(n).__name__} {n!r}")
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        return torch.randn(batch, tokens, self.channels, generator=generator, device=device, dtype=torch.float32)

    def moments(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, exp(logvar)), float32 (B, T, C): the training-mode values' mean and variance."""
        self._check_code(z, channels=self.input_channels)
        mean, logvar = self.posterior(z)
        return mean.float(), logvar.float().exp()

    # -- forward
    def forward(self, z: Tensor, noise: Optional[Tensor] = None) -> QuantizerOutput:
        self._check_code(z, channels=self.input_channels)
        if z.ndim != 3:
            raise ValueError(f"z must have shape (B, T, {self.input_channels}), got {tuple(z.shape)}")
        mean, logvar = self.posterior(z)
        if self.training:
            if noise is None:
                noise = self.draw_noise(mean.shape[0], mean.shape[1], device=z.device)
            elif not isinstance(noise, Tensor) or not noise.is_floating_point():
                raise TypeError(f"noise must be a floating-point torch.Tensor (draw_noise's), got "
                                f"{getattr(noise, 'dtype', type(noise).__name__)}")
            elif noise.shape != mean.shape:
                raise ValueError(f"noise must have shape {tuple(mean.shape)} (draw_noise's), got {tuple(noise.shape)}")
            sample = mean + torch.exp(0.5 * logvar) * noise.to(mean.dtype)
        else:
            sample = mean
        kl = self._kl(mean, logvar)
        return QuantizerOutput(sample.to(z.dtype), None, {"kl": self.kl_weight * kl}, {"kl": kl.detach()})

    def quantize(self, z: Tensor) -> QuantizerOutput:
        """Inference: the mean, in either mode, without the loss."""
        self._check_code(z, channels=self.input_channels)
        return QuantizerOutput(self.posterior(z)[0].to(z.dtype), None)

    @staticmethod
    def _kl(mean: Tensor, logvar: Tensor) -> Tensor:
        """0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) / batch, float32 (0 for an empty batch)."""
        m, lv = mean.float().clamp(-MEAN_CLAMP, MEAN_CLAMP), logvar.float()
        return 0.5 * (m.square() + lv.exp() - 1.0 - lv).sum() / max(mean.shape[0], 1)

    # -- no codebook
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        raise self._no_codebook("codes_to_indices")

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        raise self._no_codebook("indices_to_codes")
