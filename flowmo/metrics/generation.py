"""Generation metrics: Inception Score, precision/recall, gFID and sFID, as pure functions.

Every function here works on features or class probabilities that were already computed
(numpy arrays or torch tensors); :func:`inception_features` computes them with the FID
InceptionV3 (:class:`flowmo.nets.inception.FIDInceptionV3`) in the conventions of the
reference evaluators:

* **gFID** (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the 2048-d
  pool3 features of the generated and the reference images. The distance itself is
  :func:`flowmo.metrics.frechet_distance` (exact, see its docstring); this module adds
  :func:`frechet_distance_of_features` (features -> statistics -> distance).
* **sFID** (Nash et al. 2021, "Generating images with sparse representations", Sec. 5): the
  same distance on *spatial* features: the first 7 channels of the 17x17 ``mixed_6/conv``
  map of the TF Inception graph, flattened to 7 * 17 * 17 = 2023 dims (the convention of
  OpenAI's guided-diffusion evaluator, ``FID_SPATIAL_NAME = "mixed_6/conv:0"``,
  ``spatial[..., :7]``). In the PyTorch port's module names ``mixed_6/conv`` is
  ``Mixed_6d.branch1x1`` (TF ``mixed_3`` .. ``mixed_7`` are ``Mixed_6a`` .. ``Mixed_6e``).
* **Inception Score** (Salimans et al. 2016, "Improved techniques for training GANs",
  Sec. 4): ``exp(E_x KL(p(y|x) || p(y)))`` over the 1008-way softmax of the same network,
  optionally averaged over groups of a fixed seeded shuffle of the rows, as torch-fidelity
  (:func:`inception_score`).
* **Precision and recall** (Kynkaenniemi et al. 2019, "Improved precision and recall metric
  for assessing generative models"): k-nearest-neighbour manifolds (:func:`precision_recall`),
  with float64 distances where guided-diffusion's evaluator uses float16 (up to about a
  percentage point apart).

No network weights are needed by the metric functions; tests check them on inputs with known
answers.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional, Union

import numpy as np
import torch

from flowmo.metrics.feature_stats import feature_statistics
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.inputs import _check_int, _feature_array
from flowmo.nets.frozen import evaluating
from flowmo.nets.inception import FIDInceptionV3

__all__ = [
    "InceptionScore",
    "PrecisionRecall",
    "InceptionFeatures",
    "SPATIAL_CHANNELS",
    "SPATIAL_DIM",
    "IS_SHUFFLE_SEED",
    "inception_score",
    "inception_score_from_logits",
    "precision_recall",
    "frechet_distance_of_features",
    "inception_features",
]

ArrayLike = Union[np.ndarray, torch.Tensor]

#: Channels of ``mixed_6/conv`` kept for sFID, and the resulting feature size (7 * 17 * 17).
SPATIAL_CHANNELS = 7
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17

#: Seed of the row permutation applied before the Inception Score's groups are cut
#: (``numpy.random.RandomState(seed).permutation(N)``; torch-fidelity's default ``rng_seed``).
IS_SHUFFLE_SEED = 2020


class InceptionScore(NamedTuple):
    """Inception Score: ``mean`` over the groups and their ``std`` (population, ddof=0, as
    the reference code's ``np.std``); ``std`` is 0.0 with one group."""

    mean: float
    std: float


class PrecisionRecall(NamedTuple):
    """Precision and recall (Kynkaenniemi et al. 2019), each a fraction in [0, 1]."""

    precision: float
    recall: float


class InceptionFeatures(NamedTuple):
    """Outputs of :func:`inception_features` for a batch of B images (float32 torch tensors,
    on the network's device):

    * ``pool``: (B, 2048) pool3 features (gFID, precision/recall);
    * ``spatial``: (B, 2023) sFID features (first 7 channels of ``mixed_6/conv``, 17x17,
      flattened in TF's NHWC order: index = (h * 17 + w) * 7 + c);
    * ``logits``: (B, 1008) ``pool @ fc.weight.T`` WITHOUT the bias, the Inception Score
      logits of the reference code (see :func:`inception_features`).
    """

    pool: torch.Tensor
    spatial: torch.Tensor
    logits: torch.Tensor


def _rows(x, name: str, min_rows: int = 1) -> np.ndarray:
    """``x`` (a numpy array or torch tensor, (N, D) real, finite, N >= min_rows) as float64;
    TypeError for non-array or non-real input, ValueError naming ``name`` otherwise."""
    return _feature_array(x, name, min_rows=min_rows, error=TypeError, sequences=False)


# --------------------------------------------------------------------------
# Inception Score
# --------------------------------------------------------------------------


def _score_groups(log_p: np.ndarray, p: np.ndarray, splits: int, shuffle_seed: Optional[int]) -> InceptionScore:
    """IS from per-sample log-probabilities ``log_p`` and probabilities ``p`` (N, C), with
    ``0 * log 0 = 0``: groups ``[i N // splits, (i + 1) N // splits)`` of the rows in the order
    ``RandomState(shuffle_seed).permutation(N)`` (given order for None or one group)."""
    n = p.shape[0]
    if shuffle_seed is not None and splits > 1:
        order = np.random.RandomState(shuffle_seed).permutation(n)
        p, log_p = p[order], log_p[order]
    scores = []
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        part_p, part_lp = p[lo:hi], log_p[lo:hi]
        marginal = part_p.mean(axis=0)  # p(y) over this group
        # p(y|x) (log p(y|x) - log p(y)); terms with p(y|x) = 0 are 0 (and log p(y) may be
        # -inf only where every p(y|x) in the group is 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_marginal = np.where(marginal > 0, np.log(marginal), 0.0)
            terms = np.where(part_p > 0, part_p * (part_lp - log_marginal), 0.0)
        kl = float(np.mean(np.sum(terms, axis=1)))
        scores.append(math.exp(max(kl, 0.0)))  # KL >= 0; a tiny negative is round-off
    arr = np.asarray(scores)
    return InceptionScore(float(arr.mean()), float(arr.std()))


def _groups(splits, shuffle_seed, n: int) -> tuple[int, Optional[int]]:
    """``(splits, shuffle_seed)`` checked: splits an int in [1, n] (a sample per group), the seed
    None or an int in [0, 2**32); ValueError naming the argument otherwise."""
    shuffle_seed = _check_int(shuffle_seed, "shuffle_seed", 0, 2**32, allow_none=True)
    return _check_int(splits, f"splits (groups of {n} samples)", 1, n + 1), shuffle_seed


def inception_score(probabilities: ArrayLike, *, splits: int = 1, shuffle_seed: Optional[int] = IS_SHUFFLE_SEED,
                    atol: float = 1e-4) -> InceptionScore:
    """Inception Score of class probabilities ``p(y|x)``, one row per generated image.

    ``IS = exp(E_x KL(p(y|x) || p(y)))`` with ``p(y) = E_x p(y|x)`` (Salimans et al. 2016,
    Sec. 4), computed in float64 with ``0 log 0 = 0``. With ``splits = k`` the rows are first
    put in the fixed order ``numpy.random.RandomState(shuffle_seed).permutation(N)`` (default
    seed 2020, :data:`IS_SHUFFLE_SEED`: torch-fidelity's ``samples_shuffle`` with its default
    ``rng_seed``, so its groups for the same rows), then cut into k contiguous groups
    ``[i N // k, (i + 1) N // k)`` of that order (the reference code, openai/improved-gan
    ``get_inception_score``, uses k = 10 over 50,000 images; OpenAI's guided-diffusion evaluator
    uses groups of 5,000, the same for 50,000 images, and reports the mean only); each group
    gets its own ``p(y)`` and score, and the result is their mean and population standard
    deviation. The shuffle matters: rows listed class by class (a folder written per class)
    cut into contiguous groups give each group only a few classes, capping its score near
    C / k; shuffled groups each see every class. With one group the order does not matter
    (no shuffle is made). ``shuffle_seed=None`` keeps the given order (the reference code's,
    right only for rows already in random order).

    Range: 1 <= IS <= C (the number of classes): 1 when every row equals p(y) (e.g. uniform
    predictions), C when predictions are one-hot and spread evenly over the C classes.

    Args:
        probabilities: (N, C) real, non-negative, each row summing to 1 within ``atol``
            (rows are renormalised to sum to exactly 1); numpy array or torch tensor.
        splits: number of groups k, 1 <= k <= N.
        shuffle_seed: seed of the row permutation before grouping (int in [0, 2**32)), or None.
        atol: tolerance of the row sums.

    Returns :class:`InceptionScore` ``(mean, std)`` (Python floats; std = 0.0 for one group).
    Raises ``TypeError`` for non-array or non-real input, ``ValueError`` naming the argument for
    a wrong shape, non-finite or negative values, rows not summing to 1, or bad ``splits`` /
    ``shuffle_seed``. For logits use :func:`inception_score_from_logits` (more precise than
    softmax-then-log).
    """
    p = _rows(probabilities, "probabilities")
    if np.any(p < 0):
        raise ValueError(f"probabilities must be non-negative, got a minimum of {float(p.min()):.6g}")
    sums = p.sum(axis=1)
    worst = sums[np.argmax(np.abs(sums - 1.0))]
    if abs(worst - 1.0) > atol:
        raise ValueError(f"each row of probabilities must sum to 1 (atol {atol}), one sums to {worst:.6g}: give softmax")
    splits, shuffle_seed = _groups(splits, shuffle_seed, p.shape[0])
    p = p / sums[:, None]
    with np.errstate(divide="ignore"):
        log_p = np.log(p)
    return _score_groups(log_p, p, splits, shuffle_seed)


def inception_score_from_logits(logits: ArrayLike, *, splits: int = 1,
                                shuffle_seed: Optional[int] = IS_SHUFFLE_SEED) -> InceptionScore:
    """Inception Score of unnormalised logits (N, C): ``p(y|x) = softmax(logits)`` in float64
    (via a stable log-softmax), then as :func:`inception_score` (Salimans et al. 2016; the
    same groups of the same seeded shuffle).

    For the FID Inception network the logits of the reference code are
    ``pool3 @ W`` without a bias (:attr:`InceptionFeatures.logits`). Raises as
    :func:`inception_score`.
    """
    z = _rows(logits, "logits")
    splits, shuffle_seed = _groups(splits, shuffle_seed, z.shape[0])
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return _score_groups(log_p, np.exp(log_p), splits, shuffle_seed)


# --------------------------------------------------------------------------
# precision and recall
# --------------------------------------------------------------------------


def _sq_dists(a: torch.Tensor, a_sq: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)) as ``|a|^2 + |b|^2 - 2 a.b``, clamped at 0."""
    return (a_sq[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)


def _kth_radii(x: torch.Tensor, x_sq: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Squared distance from each row of ``x`` to its k-th nearest other row: the (k+1)-th
    smallest squared distance counting the row's own (zero) distance, kept as a running
    (k+1)-smallest over column blocks so only (batch, batch + k + 1) values live at once."""
    n = x.shape[0]
    out = torch.empty(n, dtype=x.dtype, device=x.device)
    for i0 in range(0, n, batch):
        xi, si = x[i0:i0 + batch], x_sq[i0:i0 + batch]
        best: Optional[torch.Tensor] = None
        for j0 in range(0, n, batch):
            d = _sq_dists(xi, si, x[j0:j0 + batch], x_sq[j0:j0 + batch])
            cand = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False, sorted=True).values
        out[i0:i0 + batch] = best[:, k]
    return out


def _fraction_inside(query: torch.Tensor, q_sq: torch.Tensor, ref: torch.Tensor, r_sq: torch.Tensor,
                     radii: torch.Tensor, batch: int) -> float:
    """Fraction of ``query`` rows within (<=) the radius of at least one ``ref`` row."""
    inside = 0
    for i0 in range(0, query.shape[0], batch):
        qi, si = query[i0:i0 + batch], q_sq[i0:i0 + batch]
        hit = torch.zeros(qi.shape[0], dtype=torch.bool, device=query.device)
        for j0 in range(0, ref.shape[0], batch):
            d = _sq_dists(qi, si, ref[j0:j0 + batch], r_sq[j0:j0 + batch])
            hit |= (d <= radii[None, j0:j0 + batch]).any(dim=1)
        inside += int(hit.sum())
    return inside / query.shape[0]


def precision_recall(real_features: ArrayLike, generated_features: ArrayLike, *, k: int = 3,
                     batch_size: int = 1024, device: Union[str, torch.device, None] = None) -> PrecisionRecall:
    """Improved precision and recall (Kynkaenniemi et al. 2019, Sec. 2, Eq. 1-3).

    Each set's manifold is the union of balls around its points, each ball's radius being
    the distance to the point's k-th nearest neighbour in the same set (Euclidean distance;
    the point itself does not count, a duplicate of it does, at distance 0: the
    (k+1)-th smallest distance counting its own zero, as the reference code computes it).
    A sample is inside a manifold when its distance to some ball's centre is <= that
    ball's radius (inclusive, as the reference code).

    * precision = fraction of generated samples inside the real manifold;
    * recall = fraction of real samples inside the generated manifold.

    The paper (and OpenAI's guided-diffusion evaluator) use k = 3 on InceptionV3 / VGG-16
    pool features; 50,000 samples per set in the paper's ImageNet figures, 10,000 in ADM's.

    Computation: float64 on ``device`` (default: the features' device if torch tensors,
    else CPU), both sets shifted by the first real feature vector (distances unchanged, less
    cancellation than about the origin, exact for integer-valued features), squared distances ``|a|^2 + |b|^2 - 2 a.b`` in blocks of
    ``batch_size x batch_size``: memory is O(batch_size^2 + N D), never an (N, N) matrix.
    The block size changes results only through float64 round-off of a distance lying
    exactly on a radius (integer-valued features are exact).

    Precision convention: these distances are float64. OpenAI's guided-diffusion evaluator
    (``DistanceBlock``, adapted from Kynkaenniemi et al.'s code) computes them in float16
    (float32 only where float16 overflows), which moves samples lying near a radius across
    it: its precision and recall can differ from these by about a percentage point (up to
    1.4 points on 1,500 + 1,500 Inception pool3 features). Compare figures computed the
    same way.

    Args:
        real_features: (N_real, D), N_real >= k + 1, finite reals (numpy or torch).
        generated_features: (N_gen, D), N_gen >= k + 1, same D.
        k: neighbourhood size, >= 1 (default 3, the paper's).
        batch_size: rows per block, >= 1.
        device: where to compute.

    Returns :class:`PrecisionRecall` of Python floats in [0, 1]. Raises ``TypeError`` for
    non-array or non-real input, ``ValueError`` naming the argument for wrong shapes,
    mismatched dimensions, non-finite values, too few rows for ``k``, or bad ``k`` /
    ``batch_size``.
    """
    k = _check_int(k, "k")
    batch = _check_int(batch_size, "batch_size")
    real = _rows(real_features, "real_features", k + 1)
    gen = _rows(generated_features, "generated_features", k + 1)
    if real.shape[1] != gen.shape[1]:
        raise ValueError(f"generated_features has dimension {gen.shape[1]} but real_features {real.shape[1]}")
    if device is None:
        device = real_features.device if isinstance(real_features, torch.Tensor) else torch.device("cpu")
    shift = real[0]  # a point inside the cloud; exact for integer-valued features (unlike the mean)
    real_t = torch.as_tensor(real - shift, dtype=torch.float64, device=device)
    gen_t = torch.as_tensor(gen - shift, dtype=torch.float64, device=device)
    real_sq = (real_t * real_t).sum(dim=1)
    gen_sq = (gen_t * gen_t).sum(dim=1)
    real_radii = _kth_radii(real_t, real_sq, k, batch)
    gen_radii = _kth_radii(gen_t, gen_sq, k, batch)
    precision = _fraction_inside(gen_t, gen_sq, real_t, real_sq, real_radii, batch)
    recall = _fraction_inside(real_t, real_sq, gen_t, gen_sq, gen_radii, batch)
    return PrecisionRecall(float(precision), float(recall))


# --------------------------------------------------------------------------
# Frechet distances (gFID, sFID) and the Inception features
# --------------------------------------------------------------------------


def frechet_distance_of_features(features_a: ArrayLike, features_b: ArrayLike) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (N_a, D) and (N_b, D).

    ``frechet_distance(*feature_statistics(a), *feature_statistics(b))`` from
    :mod:`flowmo.metrics` (mean and unbiased covariance in float64; the exact distance
    of Dowson & Landau 1982 / Heusel et al. 2017). On pool features this is gFID; on
    :attr:`InceptionFeatures.spatial` it is sFID (Nash et al. 2021). For streaming many
    batches use :class:`flowmo.metrics.FeatureStats` and ``frechet_distance`` directly.
    Each set needs >= 2 rows; raises ``ValueError`` (from those functions) otherwise, or for
    mismatched dimensions.
    """
    return frechet_distance(*feature_statistics(features_a), *feature_statistics(features_b))


def inception_features(net: FIDInceptionV3, images: torch.Tensor) -> InceptionFeatures:
    """Pool3, sFID spatial features and IS logits of ``images`` in one forward pass.

    ``net`` is a :class:`~flowmo.nets.inception.FIDInceptionV3` (e.g. from
    :func:`flowmo.nets.inception.inception_fid`); ``images`` are what its ``forward`` takes:
    float (B, 3, H, W) in [-1, 1] (or [0, 1] for ``input_range="01"``), resized to 299x299
    by the network's own preprocessing. Runs the network in eval mode under ``torch.no_grad()``
    (:func:`flowmo.nets.frozen.evaluating`: BatchNorm uses its running statistics, so features
    do not depend on the batch, and no buffer changes), then gives every submodule back its
    own ``training`` flag.

    * ``pool``: ``net(images)``, (B, 2048);
    * ``spatial``: the output of ``net.Mixed_6d.branch1x1`` (conv + BN + ReLU, 192 channels,
      17x17 for a 299x299 input), which is TF's ``mixed_6/conv:0``, read by a forward hook
      (removed afterwards); its first 7 channels, in TF's NHWC order, flattened to (B, 2023)
      (Nash et al. 2021; guided-diffusion's evaluator ``spatial[..., :7]``);
    * ``logits``: ``pool @ net.fc.weight.T`` (B, 1008), no bias: the reference IS code
      (openai/improved-gan, guided-diffusion) takes the weight input of
      ``softmax/logits/MatMul`` and multiplies pool3 by it alone. This differs from
      ``net.logits`` (which adds ``fc.bias``).

    Raises ``TypeError`` if ``net`` is not an ``FIDInceptionV3``, and the network's own
    errors for bad ``images``.
    """
    if not isinstance(net, FIDInceptionV3):
        raise TypeError(f"net must be a flowmo.nets.inception.FIDInceptionV3, got {type(net).__name__}")
    captured: list = []

    def hook(_module, _inputs, output):
        captured.append(output)

    handle = net.Mixed_6d.branch1x1.register_forward_hook(hook)
    try:
        with evaluating(net):
            pool = net(images)
            logits = pool @ net.fc.weight.T
    finally:
        handle.remove()
    fmap = captured[0]  # the network calls its Mixed_6d.branch1x1 once per forward
    spatial = fmap[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(fmap.shape[0], -1)
    return InceptionFeatures(pool=pool, spatial=spatial, logits=logits)
