"""Output layers: adaLN (shift, scale), then a Linear head."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

__all__ = ["FinalLayer"]


class FinalLayer(nn.Module):
    """SiLU -> Linear(hidden, 2*hidden) gives (shift, scale) (keys ``adaLN_modulation.1``, ``linear``).

    With time: y = (1 + scale) * LN(x) + shift, then LN again (a quirk of the release, kept
    for compatibility), then Linear. Without time: Linear(LN(x)).
    """

    def __init__(self, width: int, out_dim: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, vec: Optional[Tensor]) -> Tensor:
        x = self.norm_final(x)
        if vec is not None:
            shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
            x = self.norm_final(x * (1 + scale) + shift)
        return self.linear(x)
