"""Reconstruction and distribution metrics for FlowMo tokenizers.

Images are float tensors in [-1, 1] of shape ``(B, C, H, W)``.  PSNR and SSIM
are computed on 8-bit images (see :func:`to_uint8`) with a data range of 255,
under one of two protocols (:data:`PROTOCOLS`, keyword ``protocol``):

``"standard"`` (the default)
    8 bits by ROUNDING, ``round((x + 1) * 127.5)`` in float64; SSIM with an
    11x11 Gaussian window (sigma 1.5) and population covariances, numerically
    matching ``skimage.metrics.structural_similarity(a, b, channel_axis=...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255)`` (the settings of Wang et al. 2004).

``"release"``
    what the released FlowMo evaluation code (``flowmo/evaluate.py`` of
    kylesargent/FlowMo, whose figures are the paper's Table 1) does:

    * 8 bits by TRUNCATION in float32: reconstructions are clamped to [-1, 1],
      then ``uint8(((x + 1) / 2) * 255.0)`` with each operation rounded to
      float32 and the cast truncating (e.g. ``(x + 1) / 2 = 0.999`` -> 254,
      where rounding gives 255);
    * originals are taken to be 8-bit images (as every data set is):
      ``u = round((x + 1) * 127.5)`` is re-expressed as the release's data
      loader makes it, ``float32(u / 127.5 - 1.0)`` (computed in float64), and
      then truncated like the reconstructions.  In float32 that chain gives
      ``u - 1`` for 95 of the 256 levels (see :func:`release_originals`);
    * SSIM is scikit-image's ``structural_similarity`` with its DEFAULT window:
      the release calls ``structural_similarity(rec, gt, data_range=1.0,
      channel_axis=-1)`` on float32 HWC arrays ``u8 / 255``, i.e. a 7x7
      uniform window (scipy ``uniform_filter``, 'reflect' borders), SAMPLE
      covariances (x 49/48), K1 = 0.01, K2 = 0.03, the map cropped by 3
      pixels, per-channel means averaged;
    * its PSNR is that of the pooled MSE of each batch of 5 images, averaged
      over batches (:func:`batched_psnr`).

Value range (:func:`psnr`, :func:`ssim`, :func:`quantise_pair` and the
:class:`~flowmo.eval.Evaluator`):

* ``originals`` are data: they must lie in [-1, 1] up to a tolerance of
  :data:`ORIGINALS_TOL` (1e-3) (values within it are clamped); anything beyond
  raises ``ValueError`` naming ``originals`` (e.g. images still in [0, 255]).
* ``reconstructions`` are a model's output: they are clamped to [-1, 1] before
  the 8-bit conversion, as decoding with a clipping sampler and saving to PNG
  do, so an unclipped sampler's overshoot (or an untrained model's output) is
  measured as the image it would save.  Values whose range shows data on the
  [0, 255] scale (none below -1e-3 and some above 2) raise ``ValueError``
  naming ``reconstructions``.  (:func:`~flowmo.eval.evaluate_model` clamps a
  FlowMo's own output to [-1, 1] first, so ``flowmo eval`` never trips this,
  whatever the sampler.)
* Images in [0, 1] cannot be told from bright [-1, 1] images by their values,
  so that mistake is NOT detected: convert with ``2 * x - 1``.

Functions:

* :func:`to_uint8`, :func:`release_originals` - the 8-bit conversions.
* :func:`psnr` - per-image peak signal-to-noise ratio over all channels/pixels.
* :func:`batched_psnr` - the release's batch-pooled PSNR from per-image MSEs.
* :func:`ssim` - per-image structural similarity (window per protocol).
* :func:`frechet_distance`, :func:`feature_statistics`, :class:`FeatureStats` -
  the Frechet distance between Gaussians fitted to feature sets (the FID
  formula), exact and non-negative (see its docstring), plus streaming /
  mergeable feature statistics.  No network weights are involved here;
  feature extraction is the caller's business.

Metric computations run in float64.  Devices without float64 support (Apple
MPS) fall back to the CPU; elsewhere the result stays on the input's device.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple, Union

import numpy as np
import torch

from ..data.filters import gaussian_filter_reflect, gaussian_kernel_1d

__all__ = [
    "PROTOCOLS",
    "to_uint8",
    "release_originals",
    "psnr",
    "batched_psnr",
    "quantise_pair",
    "RELEASE_PSNR_BATCH",
    "ORIGINALS_TOL",
    "ssim",
    "frechet_distance",
    "feature_statistics",
    "FeatureStats",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: The metric protocols: ``"standard"`` (default) and ``"release"`` (see the module docstring).
PROTOCOLS = ("standard", "release")

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
#: How far ``originals`` may lie outside [-1, 1] (round-off of a conversion); beyond: ValueError.
ORIGINALS_TOL = 1e-3


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


def _check_protocol(protocol) -> str:
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _check_images(images, name: str) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{name} must be 4-D (B, C, H, W), got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
    if images.shape[1] == 0 or images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"{name} has an empty channel/spatial dimension: shape {tuple(images.shape)}")
    if images.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it has no values)")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return images


def _check_pair(originals, reconstructions) -> Tuple[torch.Tensor, torch.Tensor]:
    originals = _check_images(originals, "originals")
    reconstructions = _check_images(reconstructions, "reconstructions")
    if originals.shape != reconstructions.shape:
        raise ValueError(
            "reconstructions must have the same shape as originals: "
            f"got originals {tuple(originals.shape)}, reconstructions {tuple(reconstructions.shape)}"
        )
    if originals.device != reconstructions.device:
        raise ValueError(
            f"reconstructions must be on the device of originals: got originals on {originals.device}, "
            f"reconstructions on {reconstructions.device}"
        )
    _check_originals_range(originals)
    _check_reconstructions_scale(reconstructions)
    return originals, reconstructions


_U8_HINT = "they look like images in [0, 255]: convert them with x / 127.5 - 1"


def _looks_like_u8(vmin: float, vmax: float) -> bool:
    """The range of [0, 255] data: nothing negative, something above 2 (beyond any [-1, 1] image)."""
    return vmin >= -ORIGINALS_TOL and vmax > 2.0


def _check_originals_range(originals: torch.Tensor) -> None:
    """ValueError naming ``originals`` unless they lie in [-1, 1] within ORIGINALS_TOL."""
    if originals.numel() == 0:
        return
    vmin, vmax = float(originals.min()), float(originals.max())
    if vmin >= -1.0 - ORIGINALS_TOL and vmax <= 1.0 + ORIGINALS_TOL:
        return
    hint = f"; {_U8_HINT}" if _looks_like_u8(vmin, vmax) else ""
    raise ValueError(f"originals must be images in [-1, 1] (within {ORIGINALS_TOL:g}): got values in "
                     f"[{vmin:.6g}, {vmax:.6g}]{hint}")


def _check_reconstructions_scale(reconstructions: torch.Tensor) -> None:
    """ValueError naming ``reconstructions`` if their range shows [0, 255] data (else they are clamped)."""
    if reconstructions.numel() == 0:
        return
    vmin, vmax = float(reconstructions.min()), float(reconstructions.max())
    if _looks_like_u8(vmin, vmax):
        raise ValueError(f"reconstructions must be images in [-1, 1] (values outside are clamped to it): got "
                         f"values in [{vmin:.6g}, {vmax:.6g}]; {_U8_HINT}")


def _compute_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else we know of does.
    return torch.device("cpu") if device.type == "mps" else device


def _check_float_images(images, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")


def to_uint8(images: torch.Tensor, protocol: str = "standard") -> torch.Tensor:
    """Convert [-1, 1] float images to 8 bits, as the given protocol does.

    Args:
        images: floating-point tensor of any shape (values outside [-1, 1] are clamped).
        protocol: ``"standard"`` or ``"release"``.

    * ``"standard"``: ``round((x + 1) / 2 * 255)`` clamped to 0..255, in float64
      (round half to even, ``torch.round``).  Float32 inputs made as
      ``u / 127.5 - 1`` from uint8 ``u`` (in float32 or float64) map back to
      exactly ``u``.
    * ``"release"``: the released FlowMo evaluation's conversion
      (``flowmo/evaluate.py``: ``x.clamp(-1, 1)``, ``(x + 1) / 2``, ``* 255.0``,
      ``.to(torch.uint8)``): in float32 (other dtypes are cast to float32 first,
      the release's tensors being float32), each operation rounded to float32,
      then TRUNCATED (the float -> uint8 cast).  E.g. ``(x + 1) / 2 = 0.999``
      gives 254 (standard: 255); float32 ``u / 127.5 - 1`` gives ``u - 1`` for
      some levels ``u``.  This function applies the chain to the given values
      as they are; for originals the release's loader values come first, see
      :func:`release_originals`.

    Returns a ``torch.uint8`` tensor of the input's shape, on the input's device.
    Raises ``ValueError`` for a non-tensor, a non-floating dtype, non-finite values
    or an unknown protocol.
    """
    protocol = _check_protocol(protocol)
    _check_float_images(images)
    if protocol == "release":
        x = images.to(torch.float32).clamp(-1.0, 1.0)
        v = ((x + 1.0) / 2.0) * 255.0  # three float32 roundings, as the release's tensors
        # the cast truncates toward zero; v is in [0, 255] so that is floor
        return torch.floor(v).clamp_(0.0, 255.0).to(torch.uint8)
    device = _compute_device(images.device)
    x = images.to(device=device, dtype=torch.float64)
    q = torch.round((x + 1.0) * 0.5 * 255.0).clamp_(0.0, 255.0)
    return q.to(torch.uint8).to(images.device)


def release_originals(originals: torch.Tensor) -> torch.Tensor:
    """The float32 values the release's data loader gives for the 8-bit images ``originals`` show.

    ``originals`` (float, any shape, [-1, 1]) are taken to be 8-bit images:
    ``u = round((x + 1) * 127.5)`` clamped to 0..255 (exact for any float made
    from uint8 pixels, whichever way it was computed), then re-expressed as the
    release's loader does (``flowmo/data.py``: ``(image / 127.5 - 1.0).astype(
    np.float32)``, float64 arithmetic, one rounding to float32).  Our own loaders
    compute ``u / 127.5 - 1`` in float32, which differs in the last bit for
    levels 64..191; the release's truncating 8-bit conversion
    (:func:`to_uint8` with ``protocol="release"``) turns 95 of the 256 loader
    values into ``u - 1`` (63 of ours), so the originals must be exactly the
    release's to reproduce its numbers (0.01-0.03 dB of PSNR on a blurred photo).
    Reconstructions are not re-expressed (they are a model's float output), so
    under ``"release"`` a reconstruction equal to the originals is exact only if
    it holds the release loader's values (``release_originals(x)``), as in the
    release itself.

    Returns a float32 tensor of the input's shape on the input's device.
    Raises ``ValueError`` for a non-tensor, a non-floating dtype or non-finite values.
    """
    _check_float_images(originals, "originals")
    u = to_uint8(originals, "standard")
    device = _compute_device(originals.device)
    x = u.to(device=device, dtype=torch.float64) / 127.5 - 1.0
    return x.to(torch.float32).to(originals.device)


def _quantised_pair(originals: torch.Tensor, reconstructions: torch.Tensor,
                    protocol: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Both images in 8 bits under ``protocol``, as float64 values 0..255 on the compute device."""
    if protocol == "release":
        a, b = to_uint8(release_originals(originals), "release"), to_uint8(reconstructions, "release")
    else:
        a, b = to_uint8(originals), to_uint8(reconstructions)
    device = _compute_device(originals.device)
    return a.to(device=device, dtype=torch.float64), b.to(device=device, dtype=torch.float64)


def quantise_pair(originals: torch.Tensor, reconstructions: torch.Tensor,
                  protocol: str = "standard") -> Tuple[torch.Tensor, torch.Tensor]:
    """``(originals, reconstructions)`` as the uint8 images the protocol measures.

    ``"standard"``: :func:`to_uint8` of each.  ``"release"``: ``to_uint8(
    release_originals(originals), "release")`` and ``to_uint8(reconstructions,
    "release")``.  Inputs as for :func:`psnr` (the same value range rule and
    ``ValueError``s); returns two ``torch.uint8`` tensors of the inputs' shape on
    their device.
    """
    protocol = _check_protocol(protocol)
    originals, reconstructions = _check_pair(originals, reconstructions)
    if protocol == "release":
        return to_uint8(release_originals(originals), "release"), to_uint8(reconstructions, "release")
    return to_uint8(originals), to_uint8(reconstructions)


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
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    counts = None
    if values_per_image is not None:
        if isinstance(values_per_image, bool):
            raise ValueError(f"values_per_image must be positive int(s) or None, got {values_per_image!r}")
        counts = np.asarray(values_per_image)
        if counts.ndim == 0:
            counts = np.full(m.size, counts)
        if (counts.shape != m.shape or not np.issubdtype(counts.dtype, np.integer) or np.any(counts <= 0)):
            raise ValueError("values_per_image must be a positive int or one positive int per image "
                             f"({m.size}), got {values_per_image!r}")
    vals = []
    for s in range(0, m.size, int(batch_size)):
        chunk = m[s:s + int(batch_size)]
        pooled = _pooled_mean(chunk)
        if pooled == 0:
            if counts is None:
                vals.append(math.inf)
            else:
                most = int(counts[s:s + int(batch_size)].max())
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
        kind = "uniform" if protocol == "release" else "Gaussian"
        raise ValueError(
            f"originals/reconstructions must be at least {win}x{win} pixels for SSIM "
            f"({protocol} protocol: {kind} window size {win}), got {h}x{w}"
        )
    x, y = _quantised_pair(originals, reconstructions, protocol)
    return _ssim_quantised(x, y, protocol)


# --------------------------------------------------------------------------
# Frechet distance and feature statistics
# --------------------------------------------------------------------------


def _as_float64_array(x, name: str) -> np.ndarray:
    """``x`` (array-like of real numbers) as a float64 numpy array; ``ValueError`` naming
    ``name`` for anything else: complex, boolean or string values, objects, meta tensors."""
    if isinstance(x, torch.Tensor):
        if x.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor (it has no values)")
        if x.is_complex() or x.dtype == torch.bool:
            raise ValueError(f"{name} must hold real numbers, got a tensor of dtype {x.dtype}")
        x = x.detach().to("cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    if arr.dtype.kind in "biuf":
        if arr.dtype.kind == "b":
            raise ValueError(f"{name} must hold real numbers, got booleans")
        return arr.astype(np.float64, copy=False)
    if arr.dtype.kind == "c":
        raise ValueError(f"{name} must hold real numbers, got complex values (dtype {arr.dtype}); "
                         "take the real part or the magnitude yourself if that is what you mean")
    if arr.dtype.kind == "O":
        # mixed Python numbers, tensors or ragged nesting: real numbers only
        flat = arr.ravel().tolist() if arr.ndim else [arr.item()]
        for v in flat:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
                raise ValueError(f"{name} must be numeric array-like of real numbers, got an element of type "
                                 f"{type(v).__name__}")
        try:
            return np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    raise ValueError(f"{name} must be numeric array-like of real numbers, got dtype {arr.dtype}")


def _scaled_mean_cov(feats: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``(mean, np.cov)`` of finite (N, D) features without intermediate overflow: each column
    is scaled by a power of two ``2^-e_j`` near its largest magnitude (exact), and the results
    are scaled back (``mean_j * 2^e_j``, ``cov_ij * 2^(e_i + e_j)``; inf where they overflow)."""
    _, e = np.frexp(np.max(np.abs(feats), axis=0))
    scaled = np.ldexp(feats, -e)
    mu = np.ldexp(scaled.mean(axis=0), e)
    with np.errstate(over="ignore"):
        sigma = np.ldexp(np.atleast_2d(np.cov(scaled, rowvar=False)), e[:, None] + e[None, :])
    return mu, sigma


def _column_mean(feats: np.ndarray) -> np.ndarray:
    """``feats.mean(axis=0)`` of finite features, recomputed on power-of-two-scaled columns
    (exact) where the plain sum overflows; the mean of finite values is finite."""
    with np.errstate(over="ignore", invalid="ignore"):
        mu = feats.mean(axis=0)
    if np.all(np.isfinite(mu)):
        return mu
    _, e = np.frexp(np.max(np.abs(feats), axis=0))
    return np.ldexp(np.ldexp(feats, -e).mean(axis=0), e)


def _symmetrise(sigma: np.ndarray) -> np.ndarray:
    """``(S + S^T) / 2`` without overflow (S + S^T near float64's max) or underflow (halving a
    subnormal): computed in units of a power of two near the largest entry."""
    if np.array_equal(sigma, sigma.T):
        return sigma
    big = float(np.max(np.abs(sigma)))
    if big == 0.0 or not math.isfinite(big):
        return 0.5 * sigma + 0.5 * sigma.T
    e = int(np.frexp(big)[1])
    scaled = np.ldexp(sigma, -e)
    return np.ldexp(0.5 * (scaled + scaled.T), e)


def feature_statistics(features: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features`` (N, D) in float64.

    The covariance is ``np.cov(features, rowvar=False)`` (unbiased, N - 1), computed
    without intermediate overflow.  Requires N >= 2 and finite real values (complex,
    boolean or string values are refused, not cast).  Raises ``ValueError`` naming
    ``features`` for anything else, including features so large that their mean or
    covariance overflows float64 (rescale them).
    """
    feats = _as_float64_array(features, "features")
    if feats.ndim != 2:
        raise ValueError(f"features must be 2-D (N, D), got shape {feats.shape}")
    if feats.shape[0] < 2:
        raise ValueError(f"features needs at least 2 rows to estimate a covariance, got {feats.shape[0]}")
    if feats.shape[1] == 0:
        raise ValueError("features has zero feature dimensions")
    if not np.all(np.isfinite(feats)):
        raise ValueError("features contains non-finite values (NaN or inf)")
    with np.errstate(over="ignore", invalid="ignore"):
        mu = feats.mean(axis=0)
        sigma = np.atleast_2d(np.cov(feats, rowvar=False))
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        mu, sigma = _scaled_mean_cov(feats)  # an intermediate overflowed: redo without it
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
            raise ValueError(
                f"features are too large (max |features| = {float(np.max(np.abs(feats))):.3g}): their "
                "covariance overflows float64; rescale the features")
    return mu, sigma


class FeatureStats:
    """Streaming, mergeable accumulator of feature mean and covariance (float64).

    Keeps the sample count, the sum of feature vectors and the sum of their
    outer products.  For numerical stability both sums are taken about a fixed
    ``shift`` (the mean of the first batch seen), which makes no mathematical
    difference but avoids catastrophic cancellation when features have a
    large mean.  :meth:`statistics` returns ``(mu, sigma)`` equal (to ~1e-10)
    to :func:`feature_statistics` on all rows at once.  :meth:`merge` folds in
    another accumulator (e.g. from another rank), which is the same as having
    seen its rows.

    Example::

        stats = FeatureStats()
        for batch in loader:
            stats.update(extract(batch))
        mu, sigma = stats.statistics()
    """

    def __init__(self, dim: int | None = None):
        if dim is not None and (isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer))
                                or dim <= 0):
            raise ValueError(f"dim must be a positive int or None, got {dim!r}")
        self.dim = None if dim is None else int(dim)
        self.count = 0
        self.shift: np.ndarray | None = None
        self.sum: np.ndarray | None = None
        self.sum_outer: np.ndarray | None = None

    def _init(self, dim: int, shift: np.ndarray) -> None:
        self.dim = dim
        self.shift = shift.copy()
        self.sum = np.zeros(dim, dtype=np.float64)
        self.sum_outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features: ArrayLike) -> "FeatureStats":
        """Add a batch of features of shape (N, D) (N may be 0). Returns ``self``.

        Raises ``ValueError`` naming ``features`` for non-real (complex, boolean, string) or
        non-finite values, a wrong shape, or features so large that the accumulated sums of
        outer products overflow float64 (the accumulator is left unchanged)."""
        feats = _as_float64_array(features, "features")
        if feats.ndim != 2:
            raise ValueError(f"features must be 2-D (N, D), got shape {feats.shape}")
        if self.dim is not None and feats.shape[1] != self.dim:
            raise ValueError(f"features has dimension {feats.shape[1]}, expected {self.dim}")
        if feats.shape[1] == 0:
            raise ValueError("features has zero feature dimensions")
        if not np.all(np.isfinite(feats)):
            raise ValueError("features contains non-finite values (NaN or inf)")
        if feats.shape[0] == 0:
            if self.dim is None:
                self.dim = feats.shape[1]
            return self
        with np.errstate(over="ignore", invalid="ignore"):
            shift = _column_mean(feats) if self.shift is None else self.shift
            centred = feats - shift
            s1 = self.sum + centred.sum(axis=0) if self.sum is not None else centred.sum(axis=0)
            outer = centred.T @ centred
            s2 = self.sum_outer + outer if self.sum_outer is not None else outer
        if not (np.all(np.isfinite(shift)) and np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
            raise ValueError(
                f"features are too large (max |features| = {float(np.max(np.abs(feats))):.3g}): their "
                "sums of outer products overflow float64; rescale the features")
        if self.shift is None:
            self._init(feats.shape[1], shift)
        self.count += feats.shape[0]
        self.sum, self.sum_outer = s1, s2
        return self

    def _sums_about(self, shift: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """This accumulator's sums re-expressed about another ``shift``."""
        d = self.shift - shift
        s1 = self.sum + self.count * d
        s2 = self.sum_outer + np.outer(self.sum, d) + np.outer(d, self.sum) + self.count * np.outer(d, d)
        return s1, s2

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Fold ``other``'s rows into this accumulator (in place). Returns ``self``."""
        if not isinstance(other, FeatureStats):
            raise ValueError(f"other must be a FeatureStats, got {type(other).__name__}")
        if other.dim is not None and self.dim is not None and other.dim != self.dim:
            raise ValueError(f"other has dimension {other.dim}, expected {self.dim}")
        if other.count == 0:
            if self.dim is None:
                self.dim = other.dim
            return self
        if self.count == 0:
            self._init(other.dim, other.shift)
        with np.errstate(over="ignore", invalid="ignore"):
            s1, s2 = other._sums_about(self.shift)
            s1, s2 = self.sum + s1, self.sum_outer + s2
        if not (np.all(np.isfinite(s1)) and np.all(np.isfinite(s2))):
            raise ValueError("merging other overflows float64 (features too large or too far apart); "
                             "rescale the features")
        self.count += other.count
        self.sum, self.sum_outer = s1, s2
        return self

    def statistics(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` of everything seen; sigma uses the N - 1 normalisation."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.count}")
        n = self.count
        with np.errstate(over="ignore", invalid="ignore"):
            mean_c = self.sum / n
            cov = (self.sum_outer - n * np.outer(mean_c, mean_c)) / (n - 1)
            cov = _symmetrise(cov)
            mu = self.shift + mean_c
        if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(cov))):
            raise ValueError("the features' mean or covariance overflows float64; rescale the features")
        return mu, cov

    def state_dict(self) -> dict:
        """Plain arrays, e.g. to gather across processes and rebuild with :meth:`from_state_dict`."""
        return {"count": self.count, "dim": self.dim, "shift": self.shift, "sum": self.sum, "sum_outer": self.sum_outer}

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeatureStats":
        """Rebuild an accumulator from :meth:`state_dict`'s dict.

        ``state`` needs ``count`` (int >= 0) and ``dim`` (positive int, or None when count
        is 0); with count > 0 also ``shift`` and ``sum`` of shape (dim,) and ``sum_outer``
        of shape (dim, dim), all finite. Raises ``ValueError`` naming the key otherwise.
        """
        if not isinstance(state, dict):
            raise ValueError(f"state must be a dict from FeatureStats.state_dict(), got {type(state).__name__}")
        if "count" not in state:
            raise ValueError("state is missing the key 'count' (a FeatureStats.state_dict() has "
                             "count, dim, shift, sum, sum_outer)")
        count, dim = state["count"], state.get("dim")
        if isinstance(count, torch.Tensor) and count.numel() == 1 and not count.is_floating_point():
            count = count.item()
        if isinstance(count, (bool, np.bool_)) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"state['count'] must be a non-negative int, got {count!r}")
        if dim is not None and (isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer))
                                or dim <= 0):
            raise ValueError(f"state['dim'] must be a positive int or None, got {dim!r}")
        out = cls(dim)
        if count > 0:
            if dim is None:
                raise ValueError("state['dim'] is None but state['count'] is positive")
            d = int(dim)
            arrays = {}
            for key, shape in (("shift", (d,)), ("sum", (d,)), ("sum_outer", (d, d))):
                if key not in state:
                    raise ValueError(f"state is missing the key {key!r} (needed when count > 0)")
                a = _as_float64_array(state[key], f"state[{key!r}]")
                if a.shape != shape:
                    raise ValueError(f"state[{key!r}] must have shape {shape}, got {a.shape}")
                if not np.all(np.isfinite(a)):
                    raise ValueError(f"state[{key!r}] contains non-finite values (NaN or inf)")
                arrays[key] = np.array(a, dtype=np.float64)
            out._init(d, arrays["shift"])
            out.count = int(count)
            out.sum = arrays["sum"]
            out.sum_outer = arrays["sum_outer"]
        return out


#: Relative tolerances of :func:`frechet_distance`'s input checks: a covariance may be
#: asymmetric by up to ``_SYM_RTOL * max|entry|`` and have eigenvalues down to
#: ``-_PSD_RTOL * max|eigenvalue|`` (round-off, e.g. from float32 accumulation);
#: anything beyond is refused as not a covariance.
_SYM_RTOL = 1e-5
_PSD_RTOL = 1e-5


def _check_gaussian(mu, sigma, idx: int) -> Tuple[np.ndarray, np.ndarray]:
    mu_name, sigma_name = f"mu{idx}", f"sigma{idx}"
    mu = np.atleast_1d(_as_float64_array(mu, mu_name))
    sigma = np.atleast_2d(_as_float64_array(sigma, sigma_name))
    if mu.ndim != 1:
        raise ValueError(f"{mu_name} must be 1-D, got shape {mu.shape}")
    if mu.shape[0] == 0:
        raise ValueError(f"{mu_name} is empty (zero feature dimensions)")
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{sigma_name} must be a square 2-D matrix, got shape {sigma.shape}")
    if sigma.shape[0] != mu.shape[0]:
        raise ValueError(f"{sigma_name} has shape {sigma.shape} but {mu_name} has length {mu.shape[0]}")
    if not np.all(np.isfinite(mu)):
        raise ValueError(f"{mu_name} contains non-finite values (NaN or inf)")
    if not np.all(np.isfinite(sigma)):
        raise ValueError(f"{sigma_name} contains non-finite values (NaN or inf)")
    scale = float(np.max(np.abs(sigma)))
    if scale > 0.0:
        # compared in units of a power of two near the largest entry: S - S^T cannot overflow
        e = int(np.frexp(scale)[1])
        rel = float(np.max(np.abs(np.ldexp(sigma, -e) - np.ldexp(sigma.T, -e)))) / float(np.ldexp(scale, -e))
        if rel > _SYM_RTOL:
            raise ValueError(
                f"{sigma_name} is not symmetric (max |S - S^T| is {rel:.3g} of its largest entry "
                f"{scale:.3g}): not a covariance matrix"
            )
    return mu, _symmetrise(sigma)


def _psd_factor(sigma: np.ndarray, name: str) -> Tuple[np.ndarray, float]:
    """``(B, trace)`` with ``B @ B.T`` the covariance ``sigma`` (D, D) as a PSD matrix.

    ``B = V_r sqrt(L_r)`` (D, r) from the eigendecomposition, keeping the eigenvalues
    above ``D * eps * max|eigenvalue|`` (the numerical rank r): smaller ones, and
    negative ones down to ``-_PSD_RTOL * max|eigenvalue|``, are round-off of zero
    eigenvalues and dropped.  ``trace`` is the sum of the kept eigenvalues, the trace
    of ``B @ B.T``.  Raises ``ValueError`` (naming ``name``) if a more negative
    eigenvalue shows the matrix is not positive semi-definite.
    """
    d = sigma.shape[0]
    try:
        w, v = np.linalg.eigh(sigma)
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"the eigendecomposition of {name} failed ({exc}); the Frechet distance "
                         "cannot be computed") from None
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(v))):
        raise ValueError(f"the eigendecomposition of {name} gave non-finite values (its entries are too "
                         "large or too small for float64); rescale the features")
    scale = float(np.max(np.abs(w)))
    if scale == 0.0:
        return np.zeros((d, 0)), 0.0
    if w[0] < -_PSD_RTOL * scale:
        raise ValueError(
            f"{name} is not positive semi-definite (smallest eigenvalue {w[0]:.6g}, largest {w[-1]:.6g}): "
            "not a covariance matrix, so the Frechet distance is undefined"
        )
    keep = w > d * np.finfo(np.float64).eps * scale
    wk = w[keep]
    return v[:, keep] * np.sqrt(wk), float(math.fsum(wk.tolist()))


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula), exact.

    ``d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1^1/2 sigma2 sigma1^1/2)^1/2)``,
    the squared 2-Wasserstein distance between the Gaussians (Dowson & Landau 1982;
    Heusel et al. 2017 use it as FID with ``tr(sqrtm(sigma1 sigma2))``, which is the same
    trace).  It is defined for every pair of positive semi-definite covariances,
    including singular (rank-deficient) ones, e.g. from fewer samples than dimensions.

    Method (float64): each covariance is factored as ``S_i = B_i B_i^T`` from its
    symmetric eigendecomposition (``B_i = V sqrt(L)``, eigenvalues at round-off level
    of zero dropped, see below); then ``tr((S1^1/2 S2 S1^1/2)^1/2)`` is the sum of the
    singular values (nuclear norm) of the small matrix ``B1^T B2`` (r1 x r2, the
    numerical ranks), since ``S1^1/2 S2 S1^1/2 = M M^T`` with ``M = S1^1/2 S2^1/2``,
    whose singular values equal those of ``B1^T B2``.  No matrix square root of a
    non-symmetric product, no imaginary parts, no ``eps * I`` regularisation: the
    result is the exact distance up to float64 round-off RELATIVE to the
    covariances' magnitude (e.g. 2 samples of 4-d features spread over +-100: the
    exact 49932.18..., where ``scipy.linalg.sqrtm`` of the product gave a complex
    root and the usual absolute 1e-3 test on its imaginary part raised).

    Round-off: eigenvalues in ``[-1e-5 * s, D * eps * s]`` (``s`` the largest
    eigenvalue magnitude, ``D`` the dimension, ``eps`` float64's) are treated as 0,
    i.e. the distance is that of the nearest PSD covariances within round-off; the
    traces are those of the PSD matrices used.  The true distance is >= 0 (a squared
    distance between distributions), so a negative result can only be round-off and
    is returned as 0.0; identical inputs give exactly 0.0.

    Args:
        mu1, mu2: means, shape (D,) (numpy arrays, torch tensors or sequences).
        sigma1, sigma2: covariances, shape (D, D), symmetric positive semi-definite.

    Returns a finite Python float >= 0.

    Range: covariance entries anywhere up to float64's maximum are handled.  The
    covariance part (homogeneous of degree 1 in the pair) is computed on both
    matrices scaled by one power of two near their largest entry (exact), and scaled
    back; symmetrisation and the symmetry test run in such units too, so nothing
    overflows on the way (e.g. ``S1 = [[1e308]], S2 = [[0]]`` gives 1e308).  A NaN or
    inf arising anywhere inside raises ``ValueError``; it is never compared away.

    Raises ``ValueError`` naming the argument and the reason: non-numeric, complex or
    boolean input, wrong shapes or mismatched dimensions, non-finite values, a
    covariance that is not symmetric (beyond relative 1e-5) or not positive
    semi-definite (an eigenvalue below -1e-5 of the largest), a failed or non-finite
    decomposition, or a result that overflows float64.
    Covariances need at least 2 samples: see :func:`feature_statistics`.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, 1)
    mu2, sigma2 = _check_gaussian(mu2, sigma2, 2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu2 has length {mu2.shape[0]} but mu1 has length {mu1.shape[0]}: "
                         "the two feature sets have different dimensions")
    if np.array_equal(mu1, mu2) and np.array_equal(sigma1, sigma2):
        _psd_factor(sigma1, "sigma1")  # still refuse a matrix that is not a covariance
        return 0.0

    # The covariance part tr S1 + tr S2 - 2 tr(...) is homogeneous of degree 1 in (S1, S2):
    # compute it on both matrices scaled by one power of two 2^-e (exact), so that nothing
    # overflows for entries near the float64 maximum, and scale the result back.
    big = max(float(np.max(np.abs(sigma1))), float(np.max(np.abs(sigma2))))
    e = int(np.frexp(big)[1]) if big > 0.0 else 0
    b1, tr1 = _psd_factor(np.ldexp(sigma1, -e), "sigma1")
    b2, tr2 = _psd_factor(np.ldexp(sigma2, -e), "sigma2")
    diff = mu1 - mu2
    with np.errstate(over="ignore", invalid="ignore"):
        mean_term = float(diff @ diff)
        if b1.shape[1] == 0 or b2.shape[1] == 0:
            cross = 0.0
        else:
            try:
                sv = np.linalg.svd(b1.T @ b2, compute_uv=False)
            except np.linalg.LinAlgError as exc:
                raise ValueError(f"the singular value decomposition of the covariances' cross term failed "
                                 f"({exc}); the Frechet distance cannot be computed") from None
            if not np.all(np.isfinite(sv)):
                raise ValueError("the covariances' cross term is not finite; the Frechet distance cannot "
                                 "be computed (rescale the features)")
            cross = float(math.fsum(sv.tolist()))
        # d^2 >= 0 exactly; a negative covariance part is round-off (of order eps * (tr1 + tr2)).
        cov_part = max(tr1 + tr2 - 2.0 * cross, 0.0)
        value = mean_term + float(np.ldexp(cov_part, e))
    if math.isnan(value):
        raise ValueError("the Frechet distance computation produced NaN; the inputs are too large or too "
                         "small for float64 (rescale the features)")
    if not math.isfinite(value):
        raise ValueError("the Frechet distance overflows float64 (means or covariances too large); "
                         "rescale the features")
    return max(value, 0.0)
