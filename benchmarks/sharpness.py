"""A sharpness figure that blur cannot win: the share of an image's spectral power at high
spatial frequencies, relative to the originals'.

Pixel metrics (PSNR, SSIM) reward a decoder that averages over its uncertainty: a blurred
reconstruction scores higher than a sharp one with slightly misplaced detail. The share of the
power spectrum above a cutoff frequency drops when an image is blurred and rises with noise, so
comparing it with the originals' (ratio 1 = as much fine detail as the originals) tells a few-step
decoder that blurs from one that keeps the many-step sampler's detail
(``benchmarks/few_step_table.py``, docs/performance.md "Few-step decoders").
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["high_frequency_share", "sharpness_ratio"]

_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601, as the library's grey conversions


def _check(images: Tensor, name: str) -> Tensor:
    if not isinstance(images, Tensor) or not images.is_floating_point():
        raise TypeError(f"{name} must be a floating-point torch.Tensor (N, 3, H, W) or (N, H, W) in [-1, 1], got "
                        f"{images.dtype if isinstance(images, Tensor) else type(images).__name__}")
    if images.ndim == 4 and images.shape[1] == 3:
        x = images.double()
        return _LUMA[0] * x[:, 0] + _LUMA[1] * x[:, 1] + _LUMA[2] * x[:, 2]
    if images.ndim == 3:
        return images.double()
    raise ValueError(f"{name} must have shape (N, 3, H, W) or (N, H, W), got {tuple(images.shape)}")


def high_frequency_share(images: Tensor, cutoff: float = 0.25) -> Tensor:
    """Per image, the share of spectral power at spatial frequencies above ``cutoff``.

    Args:
        images: (N, 3, H, W) RGB (converted to grey with the BT.601 weights) or (N, H, W) grey,
            floating, any range (the library's images are in [-1, 1]); finite.
        cutoff: in cycles per pixel, in (0, 0.5 * sqrt(2)); the Nyquist frequency is 0.5. The
            default 0.25 is half of it: detail finer than 4 pixels per cycle.

    Returns:
        (N,) float64 in [0, 1]: ``sum |F(g)|^2`` over frequencies with radius
        sqrt(fx^2 + fy^2) > cutoff, over the sum at all non-zero frequencies, where g is the
        grey image minus its mean and F the 2-D DFT (``torch.fft.fft2``, frequencies from
        ``torch.fft.fftfreq``). A flat image gives 0.

    Raises:
        TypeError / ValueError naming the argument: non-floating or wrongly shaped images,
        NaN / Inf values, a cutoff outside the range.
    """
    g = _check(images, "images")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("images contain NaN or Inf values")
    if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not 0 < cutoff < 0.5 * 2 ** 0.5:
        raise ValueError(f"cutoff must be a number in (0, {0.5 * 2 ** 0.5:.4f}) cycles per pixel, got {cutoff!r}")
    g = g - g.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fft2(g).abs().pow(2)
    fy = torch.fft.fftfreq(g.shape[1], dtype=torch.float64, device=g.device)[:, None]
    fx = torch.fft.fftfreq(g.shape[2], dtype=torch.float64, device=g.device)[None, :]
    high = (fy.pow(2) + fx.pow(2)).sqrt() > cutoff
    total = power.flatten(1).sum(1)
    share = (power * high).flatten(1).sum(1) / total.clamp_min(torch.finfo(torch.float64).tiny)
    return torch.where(total > 0, share, torch.zeros_like(share))


def sharpness_ratio(images: Tensor, originals: Tensor, cutoff: float = 0.25) -> float:
    """The mean :func:`high_frequency_share` of ``images`` over that of ``originals`` (both as
    :func:`high_frequency_share` takes them, same shape): 1 = as much fine detail as the
    originals, below 1 = blurrier, above 1 = more high-frequency power (noise, ringing).
    ValueError when the shapes differ or the originals have no high-frequency power."""
    if not isinstance(images, Tensor) or not isinstance(originals, Tensor) or images.shape != originals.shape:
        raise ValueError(f"images and originals must be tensors of one shape, got "
                         f"{getattr(images, 'shape', type(images).__name__)} and "
                         f"{getattr(originals, 'shape', type(originals).__name__)}")
    ref = float(high_frequency_share(originals, cutoff).mean())
    if ref <= 0:
        raise ValueError("the originals have no power above the cutoff: the ratio is undefined")
    return float(high_frequency_share(images, cutoff).mean()) / ref
