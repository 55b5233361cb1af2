"""Weight averaging and renormalisation of the trainer, as pure functions on dicts of tensors:
the EMA update (and its decay, with or without warm-up) and the rescaling of the transformer
blocks' Linear weights to fixed norms."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["block_linear_weights", "renormalize_", "ema_keep", "ema_update_", "weights_words"]


def block_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Linear weight inside the transformer blocks (``...double_blocks.N...``)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and ".double_blocks." in f".{name}.":
            out[f"{name}.weight"] = m.weight
    return out


@torch.no_grad()
def renormalize_(weights: dict[str, Tensor], targets: dict[str, Tensor], skip: Optional[Tensor] = None) -> None:
    """Rescale each weight in place to its target Frobenius norm: w <- w * (n0 / ||w||); where
    ``skip`` (a bool 0-dim tensor, e.g. a skipped optimizer step) is True, w is left bitwise as
    it is (decided on the device: no host sync)."""
    for name, w in weights.items():
        scale = targets[name].to(w.device) / torch.linalg.vector_norm(w.float()).clamp_min(1e-12)
        if skip is not None:
            scale = torch.where(skip, torch.ones_like(scale), scale)
        w.mul_(scale.to(w.dtype))


def ema_keep(decay: float, start: int, end: int, warmup: bool) -> float:
    """The share of the old EMA kept by one update standing for optimizer steps ``start + 1 ..
    end`` (0 <= start < end): the product over those steps n of the per-step decay d_n.

    ``warmup=False`` (the release's EMA): d_n = ``decay``, so the product is decay ** (end - start).
    ``warmup=True``: d_n = min(decay, (1 + s) / (10 + s)) with s = n - 1 the steps before step n,
    and d_1 = 0: the warm-up of diffusers' ``EMAModel.get_decay`` (its default, ``use_ema_warmup``
    off, ``update_after_step`` 0). The first step replaces the initial weights; until ``decay``
    takes over (from n = 9 decay / (1 - decay): 891 for 0.99, 89991 for 0.9999) the EMA after
    step N weighs step n's weights in proportion to (n + 1)(n + 2)...(n + 8), about 60% of the
    weight on the last tenth of the steps: the EMA of a short run is an average of its late
    weights, not of its initialisation. The product of (1 + s) / (10 + s) = n / (n + 9) over
    n = a+1 .. m telescopes to prod_{i=1..9} (a + i) / (m + i): the cost does not grow with the span.

    A pure function of its arguments (a resumed run repeats it bit for bit). Float in [0, 1]."""
    if not warmup:
        return decay ** (end - start)
    if start == 0:
        return 0.0  # the update covers step 1, whose decay is 0
    # the first step at which n / (n + 9) >= decay: from there on d_n = decay
    switch = max(1, math.ceil(9 * decay / (1 - decay)))
    keep = 1.0
    last_warm = min(end, switch - 1)
    if last_warm > start:
        for i in range(1, 10):
            keep *= (start + i) / (last_warm + i)
    flat = end - max(start, switch - 1)
    if flat > 0:
        keep *= decay ** flat
    return keep


@torch.no_grad()
def ema_update_(ema: dict[str, Tensor], params: dict[str, Tensor], keep: float) -> None:
    """ema <- keep * ema + (1 - keep) * param, in place, for every name of ``ema`` (``keep`` from
    :func:`ema_keep`; 0 copies the weights)."""
    names = list(ema)
    torch._foreach_lerp_([ema[n] for n in names], [params[n].detach().to(ema[n].dtype) for n in names], 1.0 - keep)


def weights_words(weights: str, ema: Any) -> str:
    """Which weights an exported folder holds, in words: ``"ema (...)"`` with the run's EMA recipe
    (``ema``: its EMAConfig) or ``"raw (...)"``; the first word is ``ema`` or ``raw`` (a model
    card's ``weights`` line: :func:`flowmo.folders.card.card_weights` reads it back)."""
    if weights == "raw":
        return "raw (the trained weights of the step, not averaged)"
    return (f"ema (the exponential moving average of the trained weights: decay {ema.decay:g} per step, updated "
            f"every {ema.every} step{'s' if ema.every != 1 else ''}, "
            f"{'with warm-up min(decay, n / (n + 9))' if ema.warmup else 'no warm-up'})")
