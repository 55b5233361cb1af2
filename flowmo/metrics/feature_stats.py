"""Feature mean and covariance in float64: :func:`feature_statistics` of one feature set and the
streaming, mergeable :class:`FeatureStats` accumulator (the inputs of the Frechet distance,
:func:`~flowmo.metrics.frechet.frechet_distance`)."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np
import torch

from flowmo.metrics.inputs import ArrayLike, _as_float64_array, _check_finite, _check_int, _feature_array

__all__ = ["feature_statistics", "FeatureStats"]


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
    feats = _feature_array(features, "features", min_rows=2)
    with np.errstate(over="ignore", invalid="ignore"):
        mu = feats.mean(axis=0)
        sigma = np.atleast_2d(np.cov(feats, rowvar=False))
    if not _finite(mu, sigma):
        mu, sigma = _scaled_mean_cov(feats)  # an intermediate overflowed: redo without it
        _check_no_overflow("the features' covariance", mu, sigma)
    return mu, sigma


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _check_no_overflow(what: str, *arrays: np.ndarray) -> None:
    if not _finite(*arrays):
        raise ValueError(f"{what} overflow float64 (features too large or too far apart); rescale the features")


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
        self.dim = _check_int(dim, "dim", allow_none=True)
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
        feats = _feature_array(features, "features")
        if self.dim is not None and feats.shape[1] != self.dim:
            raise ValueError(f"features has dimension {feats.shape[1]}, expected {self.dim}")
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
        _check_no_overflow("the features' sums of outer products", shift, s1, s2)
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
        if not isinstance(other, FeatureStats) or None not in (other.dim, self.dim) and other.dim != self.dim:
            raise ValueError(f"other must be a FeatureStats of dimension {self.dim}, got {getattr(other, 'dim', other)}")
        if other.count == 0:
            if self.dim is None:
                self.dim = other.dim
            return self
        if self.count == 0:
            self._init(other.dim, other.shift)
        with np.errstate(over="ignore", invalid="ignore"):
            s1, s2 = other._sums_about(self.shift)
            s1, s2 = self.sum + s1, self.sum_outer + s2
        _check_no_overflow("the sums merged from other", s1, s2)
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
        _check_no_overflow("the features' mean and covariance", mu, cov)
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
        if not isinstance(state, dict) or "count" not in state:
            raise ValueError(f"state must be a FeatureStats.state_dict() with a 'count', got {type(state).__name__}")
        count = state["count"]
        if isinstance(count, torch.Tensor) and count.numel() == 1 and not count.is_floating_point():
            count = count.item()
        count = _check_int(count, "state['count']", 0)
        d = _check_int(state.get("dim"), "state['dim']", allow_none=count == 0)
        out = cls(d)
        if count > 0:
            arrays = {}
            for key, shape in (("shift", (d,)), ("sum", (d,)), ("sum_outer", (d, d))):
                if key not in state:
                    raise ValueError(f"state is missing the key {key!r} (needed when count > 0)")
                a = _as_float64_array(state[key], f"state[{key!r}]")
                if a.shape != shape:
                    raise ValueError(f"state[{key!r}] must have shape {shape}, got {a.shape}")
                _check_finite(a, f"state[{key!r}]")
                arrays[key] = np.array(a, dtype=np.float64)
            out._init(d, arrays["shift"])
            out.count = count
            out.sum = arrays["sum"]
            out.sum_outer = arrays["sum_outer"]
        return out

