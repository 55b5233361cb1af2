"""Reconstruction and distribution metrics for FlowMo tokenizers.

Images are float tensors in [-1, 1] of shape ``(B, C, H, W)``.  PSNR and SSIM
are computed on uint8-quantised images (see :func:`to_uint8`) with a data range
of 255, the convention used when reporting tokenizer reconstruction quality.

* :func:`psnr` - per-image peak signal-to-noise ratio over all channels/pixels.
* :func:`ssim` - per-image structural similarity with an 11x11 Gaussian window
  (sigma 1.5), numerically matching ``skimage.metrics.structural_similarity(a,
  b, channel_axis=..., gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)`` on the quantised images.
* :func:`frechet_distance`, :func:`feature_statistics`, :class:`FeatureStats` -
  the Frechet distance between Gaussians fitted to feature sets (the FID
  formula), plus streaming/mergeable feature statistics.  No network weights
  are involved here; feature extraction is the caller's business.

Metric computations run in float64.  Devices without float64 support (Apple
MPS) fall back to the CPU; elsewhere the result stays on the input's device.
"""

from __future__ import annotations

import math
from typing import Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "to_uint8",
    "psnr",
    "ssim",
    "frechet_distance",
    "feature_statistics",
    "FeatureStats",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

# SSIM constants (Wang et al. 2004, as used by scikit-image).
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_DATA_RANGE = 255.0


# --------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------


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
    return originals, reconstructions


def _compute_device(device: torch.device) -> torch.device:
    # MPS has no float64; everything else we know of does.
    return torch.device("cpu") if device.type == "mps" else device


def _quantised_float64(images: torch.Tensor) -> torch.Tensor:
    """uint8 quantisation of ``images`` as float64 values in 0..255."""
    device = _compute_device(images.device)
    return to_uint8(images).to(device=device, dtype=torch.float64)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Quantise [-1, 1] float images to uint8: ``round((x + 1) / 2 * 255)`` clamped to 0..255.

    The arithmetic is done in float64 so float32 inputs produced as
    ``u / 127.5 - 1`` from uint8 ``u`` map back to exactly ``u``.  Rounding is
    round-half-to-even (``torch.round``).  Returns a ``torch.uint8`` tensor of
    the same shape (on the input's device).
    """
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a floating-point tensor in [-1, 1], got dtype {images.dtype}")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("images contains non-finite values (NaN or inf)")
    device = _compute_device(images.device)
    x = images.to(device=device, dtype=torch.float64)
    q = torch.round((x + 1.0) * 0.5 * 255.0).clamp_(0.0, 255.0)
    return q.to(torch.uint8).to(images.device)


# --------------------------------------------------------------------------
# PSNR
# --------------------------------------------------------------------------


def psnr(originals: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB on uint8-quantised images with data range 255.

    ``10 * log10(255**2 / MSE)`` where the MSE is taken over all channels and
    pixels of each image.  Identical quantised images (MSE 0) give ``+inf``;
    callers averaging over a data set should decide how to treat those (e.g.
    ``torch.isfinite`` mask or clamp).  Returns a float64 tensor of shape ``(B,)``.

    Raises ``ValueError`` (naming the argument) unless both inputs are finite
    4-D floating-point tensors of the same shape.
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    a = _quantised_float64(originals)
    b = _quantised_float64(reconstructions)
    mse = (a - b).square().flatten(1).mean(dim=1)
    # 255^2 / 0 -> inf, log10(inf) -> inf: no special casing needed.
    return 10.0 * torch.log10((_DATA_RANGE**2) / mse)


# --------------------------------------------------------------------------
# SSIM
# --------------------------------------------------------------------------


def _gaussian_kernel_1d(sigma: float, truncate: float, device, dtype=torch.float64) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)  # same radius rule as scipy.ndimage
    x = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _symmetric_indices(n: int, pad: int, device) -> torch.Tensor:
    """Indices for scipy.ndimage 'reflect' padding (``d c b a | a b c d | d c b a``).

    The edge sample is repeated (numpy's 'symmetric').  Works for any ``pad``,
    including pads larger than ``n``.
    """
    i = torch.arange(-pad, n + pad, device=device)
    j = torch.remainder(i, 2 * n)
    return torch.where(j >= n, 2 * n - 1 - j, j)


def _gaussian_filter_reflect(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter of ``maps`` (N, 1, H, W), scipy 'reflect' boundary."""
    pad = (kernel.numel() - 1) // 2
    _, _, h, w = maps.shape
    rows = _symmetric_indices(h, pad, maps.device)
    cols = _symmetric_indices(w, pad, maps.device)
    padded = maps.index_select(2, rows).index_select(3, cols)
    k = kernel.to(dtype=maps.dtype)
    out = F.conv2d(padded, k.view(1, 1, -1, 1))  # along H
    out = F.conv2d(out, k.view(1, 1, 1, -1))  # along W
    return out


def ssim(originals: torch.Tensor, reconstructions: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM on uint8-quantised images (Gaussian window, data range 255).

    Matches ``skimage.metrics.structural_similarity(a, b, channel_axis=...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=255)`` applied to the quantised images as float64:

    * local statistics are Gaussian-weighted, sigma 1.5, truncated at 3.5 sigma
      (an 11x11 window), with scipy.ndimage 'reflect' (edge-repeating) borders;
    * population (not sample) covariances, K1 = 0.01, K2 = 0.03;
    * the SSIM map is cropped by ``(11 - 1) // 2 = 5`` pixels on each border,
      averaged per channel, then averaged over channels.

    Computed in float64, vectorised over the batch.  Both spatial sizes must
    be at least 11.  Returns a float64 tensor of shape ``(B,)``.
    """
    originals, reconstructions = _check_pair(originals, reconstructions)
    kernel = _gaussian_kernel_1d(_SSIM_SIGMA, _SSIM_TRUNCATE, device="cpu")
    win = kernel.numel()
    b, c, h, w = originals.shape
    if h < win or w < win:
        raise ValueError(
            f"originals/reconstructions must be at least {win}x{win} pixels for SSIM "
            f"(Gaussian window size {win}), got {h}x{w}"
        )
    x = _quantised_float64(originals)
    y = _quantised_float64(reconstructions)
    kernel = kernel.to(x.device)

    # (B, 5, C, H, W) -> (B*5*C, 1, H, W): one filter pass for all statistics.
    stats = torch.stack([x, y, x * x, y * y, x * y], dim=1)
    filtered = _gaussian_filter_reflect(stats.reshape(-1, 1, h, w), kernel)
    ux, uy, uxx, uyy, uxy = filtered.reshape(b, 5, c, h, w).unbind(dim=1)

    vx = uxx - ux * ux
    vy = uyy - uy * uy
    vxy = uxy - ux * uy
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


# --------------------------------------------------------------------------
# Frechet distance and feature statistics
# --------------------------------------------------------------------------


def _as_float64_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", dtype=torch.float64).numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like: {exc}") from None
    return arr


def feature_statistics(features: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of ``features`` (N, D) in float64.

    The covariance is ``np.cov(features, rowvar=False)`` (unbiased, N - 1).
    Requires N >= 2 and finite values.
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
    mu = feats.mean(axis=0)
    sigma = np.atleast_2d(np.cov(feats, rowvar=False))
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
        if dim is not None and (not isinstance(dim, int) or dim <= 0):
            raise ValueError(f"dim must be a positive int or None, got {dim!r}")
        self.dim = dim
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
        """Add a batch of features of shape (N, D) (N may be 0). Returns ``self``."""
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
        if self.shift is None:
            self._init(feats.shape[1], feats.mean(axis=0))
        centred = feats - self.shift
        self.count += feats.shape[0]
        self.sum += centred.sum(axis=0)
        self.sum_outer += centred.T @ centred
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
        s1, s2 = other._sums_about(self.shift)
        self.count += other.count
        self.sum += s1
        self.sum_outer += s2
        return self

    def statistics(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` of everything seen; sigma uses the N - 1 normalisation."""
        if self.count < 2:
            raise ValueError(f"need at least 2 feature vectors for a covariance, have {self.count}")
        n = self.count
        mean_c = self.sum / n
        cov = (self.sum_outer - n * np.outer(mean_c, mean_c)) / (n - 1)
        cov = 0.5 * (cov + cov.T)
        return self.shift + mean_c, cov

    def state_dict(self) -> dict:
        """Plain arrays, e.g. to gather across processes and rebuild with :meth:`from_state_dict`."""
        return {"count": self.count, "dim": self.dim, "shift": self.shift, "sum": self.sum, "sum_outer": self.sum_outer}

    @classmethod
    def from_state_dict(cls, state: dict) -> "FeatureStats":
        out = cls(state.get("dim"))
        if state["count"] > 0:
            out._init(int(state["dim"]), np.asarray(state["shift"], dtype=np.float64))
            out.count = int(state["count"])
            out.sum = np.array(state["sum"], dtype=np.float64)
            out.sum_outer = np.array(state["sum_outer"], dtype=np.float64)
        return out


def _check_gaussian(mu, sigma, idx: int) -> Tuple[np.ndarray, np.ndarray]:
    mu_name, sigma_name = f"mu{idx}", f"sigma{idx}"
    mu = np.atleast_1d(_as_float64_array(mu, mu_name))
    sigma = np.atleast_2d(_as_float64_array(sigma, sigma_name))
    if mu.ndim != 1:
        raise ValueError(f"{mu_name} must be 1-D, got shape {mu.shape}")
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{sigma_name} must be a square 2-D matrix, got shape {sigma.shape}")
    if sigma.shape[0] != mu.shape[0]:
        raise ValueError(f"{sigma_name} has shape {sigma.shape} but {mu_name} has length {mu.shape[0]}")
    if not np.all(np.isfinite(mu)):
        raise ValueError(f"{mu_name} contains non-finite values")
    if not np.all(np.isfinite(sigma)):
        raise ValueError(f"{sigma_name} contains non-finite values")
    return mu, sigma


def _sqrtm(a: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():
        # Singular/ill-conditioned products warn; we check finiteness ourselves.
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        return np.asarray(linalg.sqrtm(a))


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula).

    ``||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2))``
    in float64, with the matrix square root from ``scipy.linalg.sqrtm``.  If
    that root is not finite (near-singular product), ``eps * I`` is added to
    both covariances and the root recomputed.  A negligible imaginary part from
    numerical error is dropped; one larger than 1e-3 (max absolute value)
    raises ``ValueError``.
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, 1)
    mu2, sigma2 = _check_gaussian(mu2, sigma2, 2)
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu2 has length {mu2.shape[0]} but mu1 has length {mu1.shape[0]}")

    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.all(np.isfinite(covmean)):
            raise ValueError("matrix square root of sigma1 @ sigma2 is not finite even after adding eps * I")
    if np.iscomplexobj(covmean):
        max_imag = float(np.max(np.abs(covmean.imag)))
        if max_imag > 1e-3:
            raise ValueError(f"sqrtm(sigma1 @ sigma2) has a significant imaginary part (max |imag| = {max_imag:.3g})")
        covmean = covmean.real

    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    if math.isnan(value):
        raise ValueError("Frechet distance evaluated to NaN")
    return value
