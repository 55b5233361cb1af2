"""The release's test-vector recipe: synthetic weights made from each state-dict key alone.

Used by the parity tests; also handy for checking another implementation against ours.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["reference_tensor", "reference_state_dict", "state_dict_checksum"]


def reference_tensor(key: str, shape: Sequence[int]) -> Tensor:
    """randn seeded by crc32(key); ``.scale`` -> 1 + 0.1 x, ``.bias`` -> 0.02 x,
    else x / sqrt(shape[1]) for 2+ dims and x for vectors."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    x = torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    if key.endswith(".scale"):
        return 1 + 0.1 * x
    if key.endswith(".bias"):
        return 0.02 * x
    return x / math.sqrt(shape[1]) if len(shape) >= 2 else x


def reference_state_dict(shapes: Mapping[str, Sequence[int]]) -> dict[str, Tensor]:
    return {k: reference_tensor(k, s) for k, s in shapes.items()}


def state_dict_checksum(state: Mapping[str, Tensor]) -> float:
    """Sum of every tensor, each summed in float64, the sums added in float64."""
    return math.fsum(float(v.double().sum()) for v in state.values())
