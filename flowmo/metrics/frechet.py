"""The exact Frechet distance between two Gaussians (the FID formula), for feature statistics
from :mod:`flowmo.metrics.feature_stats`."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np

from flowmo.metrics.feature_stats import _symmetrise
from flowmo.metrics.inputs import ArrayLike, _as_float64_array, _check_finite

__all__ = ["frechet_distance"]


#: Relative tolerances of :func:`frechet_distance`'s input checks: a covariance may be
#: asymmetric by up to ``_SYM_RTOL * max|entry|`` and have eigenvalues down to
#: ``-_PSD_RTOL * max|eigenvalue|`` (round-off, e.g. from float32 accumulation);
#: anything beyond is refused as not a covariance.
_SYM_RTOL = 1e-5
_PSD_RTOL = 1e-5


def _check_gaussian(mu, sigma, idx: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` as float64 (D,), (D, D) finite arrays, sigma symmetric within _SYM_RTOL
    (then symmetrised); ValueError naming ``mu{idx}`` / ``sigma{idx}`` otherwise."""
    mu_name, sigma_name = f"mu{idx}", f"sigma{idx}"
    mu = np.atleast_1d(_as_float64_array(mu, mu_name))
    sigma = np.atleast_2d(_as_float64_array(sigma, sigma_name))
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise ValueError(f"{mu_name} is empty or not 1-D: expected the means (D,) with D >= 1, got shape {mu.shape}")
    if sigma.shape != (mu.shape[0],) * 2:
        raise ValueError(f"{sigma_name} has shape {sigma.shape}, expected the covariance {(mu.shape[0],) * 2} of {mu_name}")
    _check_finite(mu, mu_name)
    _check_finite(sigma, sigma_name)
    rel = _asymmetry(sigma)
    if rel > _SYM_RTOL:
        raise ValueError(f"{sigma_name} is not symmetric (max |S - S^T| is {rel:.3g} of max |S|): not a covariance")
    return mu, _symmetrise(sigma)


def _asymmetry(sigma: np.ndarray) -> float:
    """max |S - S^T| / max |S| of a finite square matrix (0 for the zero matrix), computed in units
    of a power of two near the largest entry, so that S - S^T cannot overflow."""
    scale = float(np.max(np.abs(sigma)))
    if scale == 0.0:
        return 0.0
    e = int(np.frexp(scale)[1])
    return float(np.max(np.abs(np.ldexp(sigma, -e) - np.ldexp(sigma.T, -e)))) / float(np.ldexp(scale, -e))


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
    except np.linalg.LinAlgError:
        w = v = np.full(1, np.nan)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(v))):
        raise ValueError(f"the eigendecomposition of {name} failed or is not finite; rescale the features")
    scale = float(np.max(np.abs(w)))
    if scale == 0.0:
        return np.zeros((d, 0)), 0.0
    if w[0] < -_PSD_RTOL * scale:
        raise ValueError(f"{name} is not positive semi-definite (eigenvalues {w[0]:.6g} .. {w[-1]:.6g})")
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
        raise ValueError(f"mu2 has length {mu2.shape[0]} but mu1 {mu1.shape[0]}: the feature sets have different dimensions")
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
            except np.linalg.LinAlgError:
                sv = np.full(1, np.nan)
            # a non-finite cross term makes the value NaN, refused below
            cross = float(math.fsum(sv.tolist())) if np.all(np.isfinite(sv)) else math.nan
        # d^2 >= 0 exactly; a negative covariance part is round-off (of order eps * (tr1 + tr2)).
        cov_part = max(tr1 + tr2 - 2.0 * cross, 0.0)
        value = mean_term + float(np.ldexp(cov_part, e))
    if not math.isfinite(value):
        raise ValueError("the Frechet distance overflows float64 or is NaN: rescale the features")
    return max(value, 0.0)
