"""Argument checks shared by the token generators' entry points (constructors, ``loss``,
``generate``, ``forward``); each raises TypeError / ValueError naming the argument and saying
what was expected."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["check_int", "check_real", "check_index_tensor", "check_generator"]


def check_int(value: Any, name: str, *, minimum: int = 1, maximum: Optional[int] = None) -> int:
    """``value`` as an int >= ``minimum`` (and <= ``maximum`` when given; bools refused)."""
    bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_int or value < minimum or (maximum is not None and value > maximum):
        raise (ValueError if is_int else TypeError)(f"{name} must be an int {bound}, got {type(value).__name__} {value!r}")
    return int(value)


def check_real(value: Any, name: str, *, low: float, high: float = math.inf, low_open: bool = False) -> float:
    """``value`` as a finite float in [low, high] (``(low, high]`` with ``low_open``; bools refused)."""
    what = f"a finite number in {'(' if low_open else '['}{low}, {high}{')' if high == math.inf else ']'}"
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not is_real or not (math.isfinite(value) and (low < value if low_open else low <= value) and value <= high):
        raise (ValueError if is_real else TypeError)(f"{name} must be {what}, got {type(value).__name__} {value!r}")
    return float(value)


def check_index_tensor(x: Any, name: str, shape: tuple, layout: str, high: int, what: str,
                       device: Optional[torch.device] = None) -> Tensor:
    """``x`` must be an integer tensor of ``shape`` (None entries: any size) with values in
    [0, high) (``what`` says what the values are), on ``device`` when given; returned as int64."""
    if not isinstance(x, Tensor) or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an int64 torch.Tensor {layout}, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, x.shape)):
        raise ValueError(f"{name} must have shape {layout}, got {tuple(x.shape)}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the generator's weights are on {device}: move it there")
    if x.numel() and not bool(((x >= 0) & (x < high)).all()):
        raise ValueError(f"{name} must hold {what} in [0, {high}), got values in [{int(x.min())}, {int(x.max())}]")
    return x.long()


def check_generator(generator: Any, device: torch.device, name: str = "generator") -> Optional[torch.Generator]:
    """None, or a ``torch.Generator`` on ``device``'s type (draws are made on the model's device)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"{name} is a {generator.device.type} generator but the weights are on {device}: make it there")
    return generator


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
        raise ValueError(f"width ({width}) must be a multiple of heads ({heads}) with an even head dim (RoPE)")
    generator.mlp_ratio = check_real(mlp_ratio, "mlp_ratio", low=0.0, low_open=True)
    if int(width * mlp_ratio) < 1:
        raise ValueError(f"mlp_ratio ({mlp_ratio}) gives an MLP hidden size int(width * mlp_ratio) < 1")
    generator.label_dropout = check_real(label_dropout, "label_dropout", low=0.0, high=1.0)
    generator.rope_theta = check_real(rope_theta, "rope_theta", low=0.0, low_open=True)
