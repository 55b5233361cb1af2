"""Codebook statistics of the tokens an evaluation sees: per-group code counts (dense or sparse),
usage, entropy and perplexity."""

from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

__all__ = ["CodeCounts", "count_tokens", "codebook_statistics", "code_summary", "DENSE_CODEBOOK_LIMIT"]

#: Codebooks up to this size are counted in a dense array; larger ones sparsely.
DENSE_CODEBOOK_LIMIT = 2**20


def _mean(values: np.ndarray) -> float:
    return math.fsum(values.tolist()) / len(values) if len(values) else float("nan")


class CodeCounts:
    """Occurrence counts of code indices per token group (dense up to DENSE_CODEBOOK_LIMIT codes)."""

    def __init__(self, codebook_size: int, groups: int, tokens_per_image: int):
        self.codebook_size = int(codebook_size)
        self.groups = int(groups)
        self.tokens_per_image = int(tokens_per_image)
        self.dense = self.codebook_size <= DENSE_CODEBOOK_LIMIT
        if self.dense:
            self.counts: Any = np.zeros((self.groups, self.codebook_size), dtype=np.int64)
        else:
            self.counts = [dict() for _ in range(self.groups)]

    def update(self, idx: np.ndarray) -> None:  # idx (N, groups)
        for h in range(self.groups):
            col = idx[:, h]
            if self.dense:
                self.counts[h] += np.bincount(col, minlength=self.codebook_size)
            else:
                vals, cnt = np.unique(col, return_counts=True)
                d = self.counts[h]
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    d[v] = d.get(v, 0) + c

    @property
    def layout(self) -> tuple[int, int, int]:
        """``(codebook_size, groups, tokens_per_image)``: counts merge only between equal layouts."""
        return self.codebook_size, self.groups, self.tokens_per_image

    def merge(self, other: "CodeCounts") -> None:
        if other.layout != self.layout:
            raise ValueError("cannot merge code counts of different codebook sizes / group counts / token counts")
        if self.dense:
            self.counts += other.counts
        else:
            for d, o in zip(self.counts, other.counts):
                for v, c in o.items():
                    d[v] = d.get(v, 0) + c

    def group_counts(self, h: int) -> np.ndarray:
        if self.dense:
            return self.counts[h]
        return np.array(sorted(self.counts[h].values()), dtype=np.int64)


def codebook_statistics(counts: np.ndarray, codebook_size: int) -> dict:
    """Usage, entropy (bits) and perplexity of one group's code counts.

    ``counts`` holds the occurrences of each used code (zeros allowed). ``usage`` is the
    fraction of the ``codebook_size`` codes seen at least once; ``entropy_bits`` is
    ``-sum p log2 p`` of the empirical code distribution (>= 0; one code used gives 0.0, never
    -0.0) and ``perplexity`` ``2 ** entropy``.
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    used = int((counts > 0).sum())
    if total == 0:
        return {"codes_used": 0, "usage": 0.0, "entropy_bits": 0.0, "perplexity": 1.0, "tokens": 0}
    p = counts[counts > 0].astype(np.float64) / total
    # each term p * log2(1 / p) >= 0, so the sum is >= 0; "+ 0.0" turns a -0.0 (p = 1) into 0.0
    h = float((p * -np.log2(p)).sum()) + 0.0
    return {"codes_used": used, "usage": used / codebook_size, "entropy_bits": h, "perplexity": float(2.0**h),
            "tokens": total}


def code_summary(codes: CodeCounts) -> dict:
    """Codebook size, groups, tokens per image and usage / entropy / perplexity averaged over groups
    (each group's in ``per_group``), as ``compute()`` reports them."""
    groups = [codebook_statistics(codes.group_counts(h), codes.codebook_size) for h in range(codes.groups)]
    return {
        "codebook_size": codes.codebook_size,
        "groups": codes.groups,
        "tokens_per_image": codes.tokens_per_image,
        "max_entropy_bits": math.log2(codes.codebook_size),
        "usage": _mean(np.array([g["usage"] for g in groups])),
        "entropy_bits": _mean(np.array([g["entropy_bits"] for g in groups])),
        "perplexity": _mean(np.array([g["perplexity"] for g in groups])),
        "per_group": groups,
    }


def count_tokens(codes: Optional[CodeCounts], tokens: Tensor, b: int, size: Optional[int]) -> CodeCounts:
    """Add a batch of ``b`` images' ``tokens`` (an integer tensor (b, T) of indices, or (b, T, G) of
    indices per token group, each in [0, ``size``)) to ``codes`` (None: new counts of this layout);
    returns the counts. Raises TypeError for another kind of tensor, ValueError for another shape, a
    missing ``size``, indices out of range or a layout other than ``codes``' own."""
    if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError("tokens must be an integer torch.Tensor of shape (B, T) or (B, T, G)")
    if tokens.ndim not in (2, 3) or tokens.shape[0] != b:
        raise ValueError(f"tokens must have shape ({b}, T) or ({b}, T, G), got {tuple(tokens.shape)}")
    if size is None:
        raise ValueError("codebook statistics need the codebook size: pass codebook= to update or codebook_size= to Evaluator")
    size = int(size)
    t = tokens.shape[1]
    g = tokens.shape[2] if tokens.ndim == 3 else 1
    idx = tokens.detach().reshape(b * t, g).cpu().numpy().astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= size):
        raise ValueError(f"tokens must lie in [0, {size}), got values in [{idx.min()}, {idx.max()}]")
    if codes is None:
        codes = CodeCounts(size, g, t)
    elif codes.layout != (size, g, t):
        raise ValueError(f"tokens changed layout (codebook size, groups, tokens per image) from {codes.layout} to {(size, g, t)}")
    codes.update(idx)
    return codes
