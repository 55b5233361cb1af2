"""Argument checks shared by the token generators; each raises TypeError / ValueError naming
the argument and saying what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["check_int", "check_real", "check_bool", "check_index_tensor", "check_generator", "check_top_k"]


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as an int >= ``minimum`` (and <= ``maximum`` when given; bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be an int {bound}, got {value}")
    return int(value)


def check_real(value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a finite float in the interval [low, high] (ends open where asked; bools refused)."""
    lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
    what = f"a finite number in {lo}{low}, {high}{hi}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or v > high or (low_open and v == low) or (high_open and v == high):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def check_index_tensor(x: Any, name: str, shape: tuple, layout: str, high: int, what: str,
                       device: Optional[torch.device] = None) -> Tensor:
    """``x`` must be an integer tensor of ``shape`` (None entries: any size) with values in
    [0, high) (``what`` says what the values are), on ``device`` when given; returned as int64."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be an int64 torch.Tensor {layout}, got {type(x).__name__}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer (int64) tensor {layout}, got dtype {x.dtype}")
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the generator's weights are on {device}: move it there")
    if x.numel() and (bool((x < 0).any()) or bool((x >= high).any())):
        raise ValueError(f"{name} must hold {what} in [0, {high}), got values in "
                         f"[{int(x.min())}, {int(x.max())}]")
    return x.long()


def check_generator(generator: Any, device: torch.device, name: str = "generator") -> Optional[torch.Generator]:
    """None, or a ``torch.Generator`` on ``device``'s type (draws are made on the model's device)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator.device.type != device.type:
        raise ValueError(f"{name} is a {generator.device.type} generator but the generator's weights are on "
                         f"{device}: make it with torch.Generator(device={str(device)!r})")
    return generator


def check_top_k(top_k: Any, vocab_size: int, name: str = "top_k") -> Optional[int]:
    """None (no filter) or an int in [1, vocab_size]."""
    if top_k is None:
        return None
    k = check_int(top_k, name)
    if k > vocab_size:
        raise ValueError(f"{name} must be None or an int in [1, vocab_size = {vocab_size}], got {k}")
    return k


def set_transformer_options(generator: Any, *, vocab_size: Any, seq_len: Any, num_classes: Any, width: Any, depth: Any,
                            heads: Any, mlp_ratio: Any, label_dropout: Any, rope_theta: Any) -> None:
    """Check the constructor options the built-in transformer generators share and set them on
    ``generator`` (vocab_size >= 2, seq_len >= 1, num_classes >= 0, width/depth/heads >= 1 with an
    even head dim width / heads for RoPE, mlp_ratio > 0 giving an MLP of >= 1 unit, label_dropout
    in [0, 1], rope_theta > 0); TypeError / ValueError naming the option otherwise."""
    generator.vocab_size = check_int(vocab_size, "vocab_size", minimum=2)
    generator.seq_len = check_int(seq_len, "seq_len")
    generator.num_classes = check_int(num_classes, "num_classes", minimum=0)
    generator.width = check_int(width, "width")
    generator.depth = check_int(depth, "depth")
    generator.heads = check_int(heads, "heads")
    if width % heads or (width // heads) % 2:
        raise ValueError(f"width ({width}) must be a multiple of heads ({heads}) with an even head dim "
                         f"width / heads (RoPE rotates channel pairs)")
    generator.mlp_ratio = check_real(mlp_ratio, "mlp_ratio", low=0.0, low_open=True)
    if int(width * mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio ({mlp_ratio}) gives an MLP hidden size int(width * mlp_ratio) < 1")
    generator.label_dropout = check_real(label_dropout, "label_dropout", low=0.0, high=1.0)
    generator.rope_theta = check_real(rope_theta, "rope_theta", low=0.0, low_open=True)
