"""Sampling pieces shared by the token generators: classifier-free guidance on logits, a top-k
filter, Gumbel noise and temperature sampling. Pure functions of their inputs and a
``torch.Generator``; logits are float32 (..., V) over a vocabulary of V tokens."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import check_int, check_real

__all__ = ["guide", "top_k_filter", "gumbel_noise", "sample_logits"]


def _check_logits(logits: Tensor, name: str = "logits") -> Tensor:
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a float torch.Tensor (..., V), got {type(logits).__name__}")
    if not logits.is_floating_point() or logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must be a floating tensor (..., V) with V >= 1, got {logits.dtype} "
                         f"{tuple(logits.shape)}")
    return logits


def guide(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance on logits (Ho & Salimans 2022, applied to logits as in MaskGIT
    and LlamaGen): uncond + scale * (cond - uncond).

    Scale 1 gives cond up to float rounding; a generator skips the unconditional pass and uses
    ``cond`` itself there, so that guidance 1 is exactly no guidance. Scale 0 is unconditional.

    Args:
        cond, uncond: float logits of one shape (..., V).
        scale: a finite number >= 0.

    Returns:
        float tensor of the inputs' shape.

    Raises:
        ValueError: a scale so large that the guided logits overflow (inf or NaN: every token
            would come out as index 0), named ``cfg_scale``.
    """
    _check_logits(cond, "cond")
    _check_logits(uncond, "uncond")
    if cond.shape != uncond.shape:
        raise ValueError(f"cond and uncond must have one shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}")
    scale = check_real(scale, "scale", low=0.0)
    out = uncond + scale * (cond - uncond)
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(cond).all() and torch.isfinite(uncond).all()):
        raise ValueError(f"cfg_scale {scale:g} makes the guided logits overflow {out.dtype} (inf or NaN); "
                         "use a moderate guidance scale (e.g. 1 to 10)")
    return out


def top_k_filter(logits: Tensor, k: Optional[int]) -> Tensor:
    """Keep the ``k`` largest logits of each row (last dim), set the others to -inf.

    Exactly ``k`` entries stay finite per row (ties at the k-th value broken by
    ``torch.topk``), so k = 1 leaves one token: sampling then gives the argmax at any temperature.

    Args:
        logits: float (..., V).
        k: None (no filter: ``logits`` returned as is) or an int in [1, V].

    Returns:
        float (..., V), a new tensor unless k is None or V.
    """
    _check_logits(logits)
    if k is None:
        return logits
    k = check_int(k, "k")
    v = logits.shape[-1]
    if k > v:
        raise ValueError(f"k (top-k) must be None or an int in [1, {v}] (the vocabulary), got {k}")
    if k == v:
        return logits
    vals, idx = logits.topk(k, dim=-1)
    return torch.full_like(logits, -torch.inf).scatter(-1, idx, vals)


def gumbel_noise(shape: tuple, *, generator: Optional[torch.Generator] = None,
                 device: Optional[torch.device] = None) -> Tensor:
    """Standard Gumbel draws -log(-log(u)), u ~ U(0, 1) (one ``torch.rand`` from ``generator``,
    clamped to [tiny, 1 - eps] so the result is finite), float32 of ``shape`` on ``device``."""
    u = torch.rand(shape, generator=generator, device=device)
    tiny = torch.finfo(torch.float32).tiny
    u = u.clamp(tiny, 1.0 - torch.finfo(torch.float32).eps)
    return -torch.log(-torch.log(u))


def sample_logits(logits: Tensor, temperature: float, *, generator: Optional[torch.Generator] = None) -> Tensor:
    """One token per row from softmax(logits / temperature), by the Gumbel-max trick
    (argmax(logits / temperature + G), G standard Gumbel: an exact categorical draw).

    Args:
        logits: float (..., V); -inf entries (a top-k filter's) are never drawn.
        temperature: >= 0; 0 takes the argmax (no random draw is made).
        generator: the Gumbel draws (on ``logits``' device).

    Returns:
        int64 (...), indices in [0, V).

    Raises:
        ValueError: a temperature so small that logits / temperature overflows float32 (the
            draw would no longer be the softmax's), named ``temperature``; use 0 for argmax.
    """
    _check_logits(logits)
    temperature = check_real(temperature, "temperature", low=0.0)
    if temperature == 0.0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if bool(torch.isnan(scaled).any() or torch.isposinf(scaled).any()) and not bool(torch.isposinf(logits).any()):
        raise ValueError(f"temperature {temperature:g} is too small: logits / temperature overflows float32; "
                         "use temperature 0 for the argmax, or a temperature >= 1e-3")
    g = gumbel_noise(tuple(logits.shape), generator=generator, device=logits.device)
    return (scaled + g).argmax(dim=-1)
