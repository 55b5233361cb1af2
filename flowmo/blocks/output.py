"""Output layers: adaLN (shift, scale), then a Linear head."""

from __future__ import annotations

from typing import Optional

from torch import Tensor, nn

from ._checks import check_like, check_positive_int, check_tensor, check_vec, first_parameter

__all__ = ["FinalLayer"]


class FinalLayer(nn.Module):
    """A stream's output head: LayerNorm (no affine, eps 1e-6), optional adaLN, Linear(width, out_dim).

    Keys ``norm_final`` (no parameters), ``adaLN_modulation.1`` (SiLU -> Linear(width, 2*width)
    giving shift, scale in that order) and ``linear``.
    With ``vec``: y = (1 + scale) * LN(x) + shift, then LN again (a quirk of the release, kept
    for compatibility), then Linear. Without ``vec``: Linear(LN(x)).

    Args:
        width: D, the token size.
        out_dim: the output size per token.
        modulation: with False there is no ``adaLN_modulation`` layer and ``forward`` takes
            only ``vec=None`` (every parameter then gets a gradient). The default (True) is the
            release's layout; FlowMo's encoder keeps it, unused, so released weights load.
    """

    def __init__(self, width: int, out_dim: int, *, modulation: bool = True):
        super().__init__()
        self.width = check_positive_int(width, "width")
        self.out_dim = check_positive_int(out_dim, "out_dim")
        if not isinstance(modulation, bool):
            raise TypeError(f"modulation must be a bool, got {type(modulation).__name__}")
        self.modulation = modulation
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        if modulation:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_dim)

    def forward(self, x: Tensor, vec: Optional[Tensor] = None) -> Tensor:
        """Tokens x (B, N, width) and the conditioning vector vec (B, width) or None
        -> (B, N, out_dim).

        Raises:
            TypeError / ValueError: ``x`` not (B, N, width); ``vec`` not (B, width) (e.g.
                (B, 1, width)) or given to a layer built with ``modulation=False``; ``x`` or ``vec``
                on another device or (outside ``torch.autocast``) of another dtype than the layer.
        """
        check_tensor(x, "x", f"(B, N, {self.width})", 3, self.width)
        check_vec(vec, x.shape[0], self.width, self.modulation)
        check_like(first_parameter(self), "the layer", {"x": x, "vec": vec})
        x = self.norm_final(x)
        if vec is not None:
            shift, scale = self.adaLN_modulation(vec)[:, None, :].chunk(2, dim=-1)
            x = self.norm_final(x * (1 + scale) + shift)
        return self.linear(x)
