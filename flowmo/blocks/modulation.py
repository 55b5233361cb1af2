"""adaLN modulation: (shift, scale, gate) from the conditioning vector."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ModulationOut", "Modulation", "modulate"]


class ModulationOut(NamedTuple):
    shift: Tensor
    scale: Tensor
    gate: Tensor


class Modulation(nn.Module):
    """Linear(hidden, 6*hidden) on SiLU(vec), split into two (shift, scale, gate) triples (key ``lin``)."""

    def __init__(self, width: int, chunks: int = 6):
        super().__init__()
        self.chunks = chunks
        self.lin = nn.Linear(width, chunks * width)

    def forward(self, vec: Tensor) -> list[ModulationOut]:
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.chunks, dim=-1)
        return [ModulationOut(*out[i : i + 3]) for i in range(0, self.chunks, 3)]


def modulate(x: Tensor, mod: Optional[ModulationOut]) -> Tensor:
    """(1 + scale) * x + shift; identity when there is no conditioning (mod is None)."""
    if mod is None:
        return x
    return torch.addcmul(mod.shift, x, 1 + mod.scale)
