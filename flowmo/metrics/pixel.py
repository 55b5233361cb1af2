"""PSNR and SSIM of reconstructions on 8-bit images (data range 255) under the two metric
protocols, plus the release's batch-pooled PSNR (see the module docstring of
:mod:`flowmo.metrics` for the conventions)."""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch

from flowmo.data.filters import gaussian_filter_reflect, gaussian_kernel_1d
from flowmo.metrics.eight_bit import _quantised_pair
from flowmo.metrics.inputs import ArrayLike, _as_float64_array, _check_int, _check_pair, _check_protocol, _compute_device

__all__ = ["psnr", "batched_psnr", "ssim", "RELEASE_PSNR_BATCH", "per_image_values"]

# SSIM constants (Wang et al. 2004, as used by scikit-image).
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
# scikit-image's default window when gaussian_weights=False (the release's SSIM).
_SSIM_UNIFORM_WIN = 7
_DATA_RANGE = 255.0
#: Images per PSNR batch in the release (``data.eval_batch_size: 5`` in its configs/base.yaml).
RELEASE_PSNR_BATCH = 5


# --------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    # 255^2 / 0 -> inf, log10(inf) -> inf: no special casing needed.
    return 10.0 * torch.log10((_DATA_RANGE**2) / mse)


def psnr(originals: torch.Tensor, reconstructions: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Per-image PSNR in dB on 8-bit images with data range 255.

    ``10 * log10(255**2 / MSE)`` where the MSE is taken over all channels and
    pixels of each image, on the images converted to 8 bits as ``protocol``
    says (:func:`quantise_pair`: rounding for ``"standard"``, the release's
    truncation for ``"release"``).  Identical 8-bit images (MSE 0) give
    ``+inf``; callers averaging over a data set should decide how to treat
    those.  (The release's reported PSNR pools the MSE of batches of 5 images:
    :func:`batched_psnr` of these images' MSEs.)

    Args:
        originals, reconstructions: finite floating-point tensors (B, C, H, W) of the
            same shape and device, in [-1, 1]: originals within 1e-3 of it,
            reconstructions clamped to it (but refused on the [0, 255] scale); see
            the module docstring's value range rule.
        protocol: ``"standard"`` (default) or ``"release"``.

    Returns a float64 tensor of shape ``(B,)``.  Raises ``ValueError`` (naming the
    argument) for anything else, e.g. images in [0, 255].
    """
    protocol = _check_protocol(protocol)
    originals, reconstructions = _check_pair(originals, reconstructions)
    a, b = _quantised_pair(originals, reconstructions, protocol)
    return _psnr_from_mse((a - b).square().flatten(1).mean(dim=1))


def batched_psnr(mse: Union[ArrayLike, Sequence[float]], batch_size: int = RELEASE_PSNR_BATCH,
                 values_per_image: Union[int, ArrayLike, Sequence[int], None] = None) -> float:
    """The release's PSNR: PSNR of each batch's pooled MSE, averaged over batches.

    The released evaluation (``flowmo/evaluate.py``) adds, for every image of a
    batch, ``peak_signal_noise_ratio(rgb_gt, rgb_restored)`` of the WHOLE batch
    arrays (float32 ``u8 / 255``, so data range 1), divides by the batch size and
    averages over batches: per batch ``10 log10(1 / mean over the batch's pixels
    of the squared difference)``, which is ``10 log10(255^2 / mean(mse))`` of the
    batch's per-image 8-bit MSEs (all images have the same size).  Its eval batch
    size is 5 (``configs/base.yaml``).

    Args:
        mse: per-image MSEs on the 0..255 scale (1-D, finite, >= 0), in the order
            that forms the batches: images ``0..batch_size-1`` are the first batch
            and so on; a last, smaller batch counts as one batch (the release
            requires the image count to be a multiple of the batch size).
        batch_size: images per batch (positive int; the release: 5).
        values_per_image: channels x pixels per image (an int, or one per image).
            When given, a batch whose pooled MSE is 0 (every image exact) counts as
            the smallest non-zero pooled MSE, one level in one value of its largest
            image; when None it gives ``+inf`` as in the release.

    Returns the mean over batches (float; finite unless a batch is exact and
    ``values_per_image`` is None), for any finite MSEs (huge ones whose sum overflows,
    subnormal ones whose ``255^2 / mse`` overflows).  Raises ``ValueError`` for an empty
    or non-1-D ``mse``, negative, non-finite, complex or boolean values, or a bad
    ``batch_size`` / ``values_per_image``.
    """
    m = _as_float64_array(mse, "mse")
    if m.ndim != 1 or m.size == 0:
        raise ValueError(f"mse must be a non-empty 1-D sequence of per-image MSEs, got shape {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ValueError("mse must hold finite, non-negative values")
    batch_size = _check_int(batch_size, "batch_size")
    counts = None if values_per_image is None else np.asarray(values_per_image)
    if counts is not None and (counts.dtype.kind not in "iu" or counts.shape not in ((), m.shape) or np.any(counts <= 0)):
        raise ValueError(f"values_per_image must be a positive int or one per image ({m.size}), got {values_per_image!r}")
    counts = None if counts is None else np.broadcast_to(counts, m.shape)
    vals = []
    for s in range(0, m.size, batch_size):
        chunk = m[s:s + batch_size]
        pooled = _pooled_mean(chunk)
        if pooled == 0:
            if counts is None:
                vals.append(math.inf)
            else:
                most = int(counts[s:s + batch_size].max())
                vals.append(10.0 * math.log10(_DATA_RANGE**2 * most * chunk.size))
        else:
            vals.append(_psnr_of(pooled))
    return math.fsum(vals) / len(vals)


def _pooled_mean(chunk: np.ndarray) -> float:
    """The mean of finite non-negative values (``math.fsum`` / n), without overflow: the mean
    of finite values is finite even when their sum is not."""
    try:
        return math.fsum(chunk.tolist()) / chunk.size
    except OverflowError:  # the exact sum exceeds float64: sum in units of 2^64 (exact scaling)
        return float(np.ldexp(math.fsum(np.ldexp(chunk, -64).tolist()) / chunk.size, 64))


def _psnr_of(mse: float) -> float:
    """``10 log10(255^2 / mse)`` for a finite mse > 0, also where ``255^2 / mse`` overflows
    (subnormal mse) or underflows: as a difference of logarithms there."""
    q = _DATA_RANGE**2 / mse
    if math.isfinite(q) and q > 0.0:
        return 10.0 * math.log10(q)
    return 10.0 * (2.0 * math.log10(_DATA_RANGE) - math.log10(mse))


# --------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------


def _ssim_window(protocol: str, device) -> Tuple[torch.Tensor, float]:
    """(1-D kernel, covariance normalisation) of the protocol's SSIM window."""
    if protocol == "release":
        win = _SSIM_UNIFORM_WIN
        np_ = win * win  # values per 2-D window
        return torch.full((win,), 1.0 / win, dtype=torch.float64, device=device), np_ / (np_ - 1.0)
    return gaussian_kernel_1d(_SSIM_SIGMA, _SSIM_TRUNCATE, device=device), 1.0


def _ssim_quantised(x: torch.Tensor, y: torch.Tensor, protocol: str) -> torch.Tensor:
    """SSIM per image of float64 8-bit-valued images (B, C, H, W) under ``protocol``."""
    kernel, cov_norm = _ssim_window(protocol, x.device)
    win = kernel.numel()
    b, c, h, w = x.shape
    # (B, 5, C, H, W) -> (B*5*C, 1, H, W): one filter pass for all statistics.
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)
    filtered = gaussian_filter_reflect(stats.reshape(-1, 1, h, w), kernel)
    ux, uy, uxx, uyy, uxy = filtered.reshape(b, 5, c, h, w).unbind(dim=1)

    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = (_SSIM_K1 * _DATA_RANGE) ** 2
    c2 = (_SSIM_K2 * _DATA_RANGE) ** 2
    a1 = 2.0 * ux * uy + c1
    a2 = 2.0 * vxy + c2
    b1 = ux * ux + uy * uy + c1
    b2 = vx + vy + c2
    ssim_map = (a1 * a2) / (b1 * b2)

    pad = (win - 1) // 2
    cropped = ssim_map[..., pad : h - pad, pad : w - pad]
    per_channel = cropped.mean(dim=(-2, -1))  # (B, C)
    return per_channel.mean(dim=1)


def _ssim_min_size(protocol: str) -> int:
    return _SSIM_UNIFORM_WIN if protocol == "release" else 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1


def ssim(originals: torch.Tensor, reconstructions: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Per-image SSIM on 8-bit images (data range 255), window per ``protocol``.

    ``"standard"`` matches ``skimage.metrics.structural_similarity(a, b,
    channel_axis=..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255)`` on the rounded 8-bit images:

    * local statistics Gaussian-weighted, sigma 1.5, truncated at 3.5 sigma
      (an 11x11 window), scipy.ndimage 'reflect' (edge-repeating) borders;
    * population covariances, K1 = 0.01, K2 = 0.03;
    * the map cropped by 5 pixels on each border, averaged per channel, then
      over channels.

    ``"release"`` matches the release's call ``structural_similarity(rec, gt,
    data_range=1.0, channel_axis=-1)`` on ``u8 / 255`` of its truncated 8-bit
    images (:func:`quantise_pair`), i.e. scikit-image's defaults: a 7x7 uniform
    window (scipy ``uniform_filter``, 'reflect' borders), sample covariances
    (``49 / 48`` times the population ones), K1 = 0.01, K2 = 0.03, the map
    cropped by 3 pixels, per-channel means averaged.  (SSIM is unchanged by
    scaling the images and the data range together, so data range 255 on 0..255
    equals data range 1 on ``u8 / 255``.)  The release's arrays are float32, so
    scikit-image computes in float32 there; this function computes in float64
    (differences of order 1e-6).

    Args:
        originals, reconstructions: finite floating-point tensors (B, C, H, W) of the
            same shape and device, at least 11x11 (``"standard"``) or 7x7
            (``"release"``) pixels, in [-1, 1]: originals within 1e-3 of it,
            reconstructions clamped to it (but refused on the [0, 255] scale); see
            the module docstring's value range rule.
        protocol: ``"standard"`` (default) or ``"release"``.

    Returns a float64 tensor of shape ``(B,)`` in [-1, 1].  Raises ``ValueError``
    (naming the argument) for anything else.
    """
    protocol = _check_protocol(protocol)
    originals, reconstructions = _check_pair(originals, reconstructions)
    win = _ssim_min_size(protocol)
    _, _, h, w = originals.shape
    if h < win or w < win:
        raise ValueError(f"originals/reconstructions must be at least {win}x{win} pixels for SSIM, got {h}x{w}")
    x, y = _quantised_pair(originals, reconstructions, protocol)
    return _ssim_quantised(x, y, protocol)


def per_image_values(o8: torch.Tensor, r8: torch.Tensor, protocol: str) -> dict:
    """What the :class:`~flowmo.metrics.Evaluator` records per image from one batch of 8-bit pairs.

    Args:
        o8, r8: ``torch.uint8`` tensors (B, C, H, W) of the same shape and device, the originals
            and reconstructions as :func:`~flowmo.metrics.eight_bit.quantise_pair` gives them under
            ``protocol``, at least the protocol's SSIM window (11 or 7 pixels) high and wide.
        protocol: ``"standard"`` or ``"release"``.

    Returns numpy arrays of shape (B,): ``psnr`` and ``ssim`` (float64, as :func:`psnr` and
    :func:`ssim` give them), ``mse`` (float64, on the 0..255 scale), ``psnr_cap`` (float64, dB:
    the PSNR of the smallest non-zero MSE, one level off in one value of the image, which an
    exact reconstruction counts as in a mean) and ``npix`` (int64: values per image, C*H*W).
    The caller (:meth:`~flowmo.metrics.Evaluator.update`) has checked all of this.
    """
    cdev = _compute_device(o8.device)
    a, b8 = o8.to(device=cdev, dtype=torch.float64), r8.to(device=cdev, dtype=torch.float64)
    mse = (a - b8).square().flatten(1).mean(1)
    b, npix = o8.shape[0], o8[0].numel()
    return {"psnr": _psnr_from_mse(mse).cpu().numpy(),
            "ssim": _ssim_quantised(a, b8, protocol).cpu().numpy(),
            "mse": mse.cpu().numpy(),
            "psnr_cap": np.full(b, 10.0 * math.log10(_DATA_RANGE**2 * npix)),
            "npix": np.full(b, npix, dtype=np.int64)}
