"""adaLN modulation: (shift, scale, gate) from the conditioning vector (DiT's adaLN-Zero form)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import check_like, check_positive_int, check_vec

__all__ = ["ModulationOut", "Modulation", "modulate"]


class ModulationOut(NamedTuple):
    """One (shift, scale, gate) triple, each (B, 1, D): broadcast over the N tokens of (B, N, D)."""

    shift: Tensor
    scale: Tensor
    gate: Tensor


class Modulation(nn.Module):
    """Linear(width, chunks * width) on SiLU(vec), split into ``chunks / 3`` (shift, scale, gate)
    triples (key ``lin``; the release's ``img_mod`` / ``txt_mod`` with ``chunks=6``).

    Args:
        width: D, the conditioning vector's and the tokens' size.
        chunks: a positive multiple of 3 (6: one triple for attention, one for the MLP).
    """

    def __init__(self, width: int, chunks: int = 6):
        super().__init__()
        self.width = check_positive_int(width, "width")
        self.chunks = check_positive_int(chunks, "chunks")
        if chunks % 3:
            raise ValueError(f"chunks must be a multiple of 3 (shift, scale, gate per triple), got {chunks}")
        self.lin = nn.Linear(width, chunks * width)

    def forward(self, vec: Tensor) -> list[ModulationOut]:
        """vec (B, D), one conditioning vector per sample (e.g. a :class:`TimeEmbedding` of t)
        -> ``chunks / 3`` :class:`ModulationOut` triples of (B, 1, D) tensors, in order
        (shift1, scale1, gate1), (shift2, scale2, gate2), ...

        Raises:
            ValueError: ``vec`` is not (B, D) (e.g. (B, 1, D): no token axis here).
        """
        if vec is None:
            raise ValueError("vec must be a (B, D) tensor, got None (without conditioning, pass mod=None to modulate)")
        check_vec(vec, None, self.width)
        check_like(self.lin.weight, "the modulation", {"vec": vec})
        return self._split(vec)

    def _split(self, vec: Tensor) -> list[ModulationOut]:
        """:meth:`forward` of a ``vec`` already checked."""
        out = self.lin(F.silu(vec))[:, None, :].chunk(self.chunks, dim=-1)
        return [ModulationOut(*out[i : i + 3]) for i in range(0, self.chunks, 3)]


def modulate(x: Tensor, mod: Optional[ModulationOut]) -> Tensor:
    """(1 + scale) * x + shift for tokens x (B, N, D) and a triple of (B, 1, D) tensors;
    ``x`` unchanged when there is no conditioning (``mod`` is None)."""
    if mod is None:
        return x
    return torch.addcmul(mod.shift, x, 1 + mod.scale)
