"""Weight averaging and renormalisation of the trainer, as pure functions on dicts of tensors:
the EMA update and the rescaling of the transformer blocks' Linear weights to fixed norms."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["block_linear_weights", "renormalize_", "ema_update_"]


def block_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Linear weight inside the transformer blocks (``...double_blocks.N...``)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and ".double_blocks." in f".{name}.":
            out[f"{name}.weight"] = m.weight
    return out


@torch.no_grad()
def renormalize_(weights: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
    """Rescale each weight in place to its target Frobenius norm: w <- w * (n0 / ||w||)."""
    for name, w in weights.items():
        n = torch.linalg.vector_norm(w.float())
        w.mul_((targets[name].to(w.device) / n.clamp_min(1e-12)).to(w.dtype))


@torch.no_grad()
def ema_update_(ema: dict[str, Tensor], params: dict[str, Tensor], decay: float, every: int) -> None:
    """ema <- decay**every * ema + (1 - decay**every) * param (one update standing for ``every`` steps)."""
    w = 1.0 - decay**every
    names = list(ema)
    torch._foreach_lerp_([ema[n] for n in names], [params[n].detach().to(ema[n].dtype) for n in names], w)
