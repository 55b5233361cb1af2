"""MaskGIT's cosine mask schedule (Chang et al. 2022, "MaskGIT: Masked Generative Image
Transformer", sec. 3.2 and 3.3): gamma(r) = cos(pi r / 2), a decreasing map of [0, 1] onto [1, 0].

- Training (sec. 3.2): draw r ~ U(0, 1) per sample and mask ceil(gamma(r) * L) of the L tokens
  (at least 1, so every sample has a loss).
- Decoding (sec. 3.3): after step t of T (t = 0 .. T-1) floor(gamma((t + 1) / T) * L) tokens
  stay masked, 0 after the last step. Floor, as google-research/maskgit's code computes it
  (``jnp.floor`` of the mask ratio times the unknown count in its parallel decoding); the
  paper's text writes ceil(gamma(t / T) N). The two differ by one token wherever gamma * L
  is not an integer (L = 16, T = 3: 13 tokens stay masked after the first step, not 14), so
  decoding here, and its images, follow the released code, not the formula in the text.

Rounding is done with a tolerance of 1e-9 tokens, so that counts whose exact value is an integer
(L cos(pi / 3) = L / 2) are not moved by the last bit of a float cosine.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ._checks import check_int, check_real

__all__ = ["cosine_gamma", "training_mask_count", "sample_mask_counts", "random_mask", "decoding_schedule",
           "decoding_mask_count"]

_TOL = 1e-9


def cosine_gamma(r: float) -> float:
    """gamma(r) = cos(pi r / 2) for r in [0, 1] (MaskGIT's cosine schedule): the fraction of
    tokens masked at mask ratio r; 1 at r = 0, 0 at r = 1 (exactly).

    Raises:
        TypeError / ValueError: ``r`` not a number in [0, 1].
    """
    r = check_real(r, "r", low=0.0, high=1.0)
    return 0.0 if r == 1.0 else math.cos(math.pi * r / 2)


def training_mask_count(r: float, length: int) -> int:
    """How many of ``length`` tokens a training sample masks at r: ceil(gamma(r) * length),
    at least 1 (gamma(1) = 0 would leave nothing to predict), at most ``length``.

    Args:
        r: in [0, 1] (training draws r ~ U(0, 1)).
        length: L >= 1, the tokens per sample.

    Returns:
        An int in [1, length].

    Raises:
        TypeError / ValueError: ``r`` not in [0, 1], ``length`` not an int >= 1.
    """
    length = check_int(length, "length")
    g = cosine_gamma(r)
    return max(1, min(length, math.ceil(g * length - _TOL)))


def sample_mask_counts(batch: int, length: int, *, generator: Optional[torch.Generator] = None,
                       device: Optional[torch.device] = None) -> Tensor:
    """Training mask counts for ``batch`` samples: r ~ U(0, 1) per sample (one ``torch.rand``
    draw from ``generator``), then :func:`training_mask_count` (computed on the
    tensor in float32: ceil(cos(pi r / 2) L - 1e-9) clamped to [1, L]).

    Returns:
        int64 (batch,) on ``device``, each in [1, length].
    """
    return _sample_mask_counts(check_int(batch, "batch", minimum=0), check_int(length, "length"), generator=generator,
                               device=device)


def _sample_mask_counts(batch: int, length: int, *, generator: Optional[torch.Generator],
                        device: Optional[torch.device]) -> Tensor:
    """:func:`sample_mask_counts` for checked ``batch`` >= 0 and ``length`` >= 1."""
    r = torch.rand(batch, generator=generator, device=device)
    counts = torch.ceil(torch.cos(torch.pi * r / 2) * length - _TOL)
    return counts.clamp(1, length).long()


def random_mask(counts: Tensor, length: int, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """A uniformly random mask with ``counts[b]`` True entries in row b.

    Args:
        counts: int64 (B,), each in [0, length].
        length: L, the row length.
        generator: the random draws (one ``torch.rand`` (B, L) on ``counts``' device).

    Returns:
        bool (B, L): row b masks the ``counts[b]`` positions with the smallest uniform scores
        (each subset of that size equally likely).
    """
    length = check_int(length, "length")
    if not isinstance(counts, Tensor) or counts.ndim != 1 or counts.is_floating_point():
        raise TypeError(f"counts must be an integer tensor (B,), got {counts!r}")
    return _random_mask(counts, length, generator=generator)


def _random_mask(counts: Tensor, length: int, *, generator: Optional[torch.Generator]) -> Tensor:
    """:func:`random_mask` for an integer tensor ``counts`` (B,) and ``length`` >= 1 (no checks)."""
    scores = torch.rand(counts.shape[0], length, generator=generator, device=counts.device)
    rank = scores.argsort(dim=1).argsort(dim=1)  # rank of each position's score within its row
    return rank < counts[:, None]


def decoding_schedule(length: int, steps: int) -> list[int]:
    """The tokens left masked after each of ``steps`` decoding steps over ``length`` tokens.

    Entry t (t = 0 .. steps-1) is floor(gamma((t + 1) / steps) * length) (floor as
    google-research/maskgit's code; the paper's text writes ceil: see the module docstring),
    made strictly decreasing (at most the previous entry - 1, starting from ``length``: every step decodes at
    least one token, MaskGIT's ``min(unknown - 1, mask_len)``); the last entry is 0. No lower
    clamp is needed: for steps <= length, length * sin(pi/2 * k / steps) >= length * k / steps >= k
    for the k = steps - 1 - t steps still to come, so each later step keeps a token to decode.

    Args:
        length: L >= 1, the tokens per sample.
        steps: T, in [1, length] (a step decodes at least one token).

    Returns:
        A list of ``steps`` ints, strictly decreasing, ending in 0.

    Raises:
        TypeError / ValueError: ``length`` not an int >= 1; ``steps`` not an int in [1, length].
    """
    length = check_int(length, "length")
    return _decoding_schedule(length, check_int(steps, "steps (each decodes at least one token)", maximum=length))


def _decoding_schedule(length: int, steps: int) -> list[int]:
    """:func:`decoding_schedule` for ``length`` >= 1 and ``steps`` in [1, length] (no checks)."""
    out, prev = [], length
    for t in range(steps):
        n = 0 if t == steps - 1 else math.floor(cosine_gamma((t + 1) / steps) * length + _TOL)
        prev = min(prev - 1, n)
        out.append(prev)
    return out


def decoding_mask_count(step: int, steps: int, length: int) -> int:
    """Entry ``step`` (0-based, < steps) of :func:`decoding_schedule`: the tokens still masked
    after that step; 0 after the last one."""
    schedule = decoding_schedule(length, steps)
    return schedule[check_int(step, "step", minimum=0, maximum=len(schedule) - 1)]
