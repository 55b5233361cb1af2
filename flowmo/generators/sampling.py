"""Sampling pieces shared by the token generators: classifier-free guidance on logits, a top-k
filter, Gumbel noise and temperature sampling. Pure functions of their inputs and a
``torch.Generator``; logits are float32 (..., V) over a vocabulary of V tokens.

The public functions check their arguments; the generators' decoding loops call the unchecked
kernels (``_guided``, ``_top_k``, ``_draw``) on arguments ``generate`` checked once, and collect
the kernels' overflow flags on the device, checked once after the loop (no host sync per step)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._checks import check_int, check_real

__all__ = ["guide", "top_k_filter", "gumbel_noise", "sample_logits"]


def _check_logits(logits: Tensor, name: str = "logits") -> Tensor:
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"{name} must be a floating tensor (..., V), V >= 1, got {getattr(logits, 'dtype', type(logits))}")
    return logits


def _guided(cond: Tensor, uncond: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """``uncond + scale * (cond - uncond)`` and a bool scalar tensor: whether it overflowed (a
    non-finite value from finite inputs). No checks, no host sync."""
    out = uncond + scale * (cond - uncond)
    overflow = ~torch.isfinite(out).all() & torch.isfinite(cond).all() & torch.isfinite(uncond).all()
    return out, overflow


def _top_k(logits: Tensor, k: Optional[int]) -> Tensor:
    """:func:`top_k_filter` for k None or in [1, V] (no checks)."""
    if k is None or k == logits.shape[-1]:
        return logits
    vals, idx = logits.topk(k, dim=-1)
    return torch.full_like(logits, -torch.inf).scatter(-1, idx, vals)


def _draw(logits: Tensor, temperature: float, generator: Optional[torch.Generator]) -> tuple[Tensor, Tensor]:
    """:func:`sample_logits`'s tokens for a temperature >= 0 and a bool scalar tensor: whether
    logits / temperature overflowed float32 (NaN or +inf where the logits have no +inf). No
    checks, no host sync."""
    if temperature == 0.0:
        return logits.argmax(dim=-1), torch.zeros((), dtype=torch.bool, device=logits.device)
    scaled = logits.float() / temperature
    overflow = (torch.isnan(scaled) | torch.isposinf(scaled)).any() & ~torch.isposinf(logits).any()
    g = gumbel_noise(tuple(logits.shape), generator=generator, device=logits.device)
    return (scaled + g).argmax(dim=-1), overflow


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
    if _check_logits(uncond, "uncond").shape != cond.shape:
        raise ValueError(f"cond and uncond must have one shape, got {tuple(cond.shape)} and {tuple(uncond.shape)}")
    scale = check_real(scale, "scale", low=0.0)
    out, overflow = _guided(cond, uncond, scale)
    if bool(overflow):
        raise ValueError(f"cfg_scale {scale:g} makes the guided logits overflow {out.dtype}; use a moderate scale (1 to 10)")
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
    return _top_k(logits, None if k is None else check_int(k, "k (top-k)", maximum=logits.shape[-1]))


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
    tokens, overflow = _draw(_check_logits(logits), check_real(temperature, "temperature", low=0.0), generator)
    if bool(overflow):
        raise ValueError(f"temperature {temperature:g} is too small (logits / temperature overflow float32); use 0 for argmax")
    return tokens


def _check_no_overflow(overflow: Tensor, cfg_scale: float, temperature: float) -> None:
    """After a decoding loop: ValueError if any step's guided or temperature-scaled logits
    overflowed (the kernels' flags, or-ed on the device: one host sync per ``generate``)."""
    if bool(overflow):
        raise ValueError(f"cfg_scale {cfg_scale:g} or temperature {temperature:g} made the logits overflow float32")
