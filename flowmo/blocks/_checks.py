"""Input checks shared by the blocks: each raises TypeError/ValueError naming the argument.

Only shapes and types are checked (never values), so the checks cost no device
synchronisation and stay valid under ``torch.compile``.
"""

from __future__ import annotations

import numbers
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["check_tensor", "check_tokens", "check_vec", "check_grid", "check_positive_int", "check_streams",
           "check_like", "first_parameter"]


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_tensor(x: Any, name: str, ndim: int, layout: str) -> Tensor:
    """``x`` must be a floating tensor with ``ndim`` dims (``layout`` names them, e.g. "(B, N, D)")."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_tokens(x: Any, name: str, width: int, batch: Optional[int] = None) -> Tensor:
    """``x`` must be tokens (B, N, width), with batch ``batch`` when given."""
    check_tensor(x, name, 3, f"(B, N, {width})")
    if x.shape[-1] != width:
        raise ValueError(f"{name} must have shape (B, N, {width}) (last dim = the width {width}), "
                         f"got {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch {x.shape[0]} but the other stream has batch {batch}")
    return x


def check_vec(vec: Any, name: str, batch: Optional[int], width: int, modulated: bool) -> Optional[Tensor]:
    """``vec`` must be None or one conditioning vector per sample (B, width) (B = ``batch`` when
    given); a module built without modulation (``modulated=False``) takes only None."""
    if vec is None:
        return None
    if not modulated:
        raise ValueError(f"{name} must be None: this module was built with modulation=False "
                         "(no time conditioning); build it with modulation=True to condition on a vector")
    if not isinstance(vec, Tensor):
        raise TypeError(f"{name} must be None or a torch.Tensor (B, {width}), got {type(vec).__name__}")
    if batch is None and vec.ndim >= 1:
        batch = vec.shape[0]
    if vec.ndim != 2 or tuple(vec.shape) != (batch, width):
        raise ValueError(f"{name} must have shape (B, D) = ({batch}, {width}) (one conditioning vector per "
                         f"sample, no token axis), got {tuple(vec.shape)}")
    if not vec.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {vec.dtype}")
    return vec


def check_grid(grid: Any, name: str = "grid") -> tuple[int, int]:
    """``grid`` must be a pair (rows, cols) of positive ints."""
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"{name} must be a pair (rows, cols) of positive ints, got {grid!r}")
    rows, cols = grid
    for v, what in ((rows, "rows"), (cols, "cols")):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{name} must be a pair (rows, cols) of positive ints, got {tuple(grid)!r} "
                             f"({what} = {v!r})")
    return int(rows), int(cols)


def check_streams(streams: Any, name: str, allowed: tuple[str, ...] = ("img", "txt")) -> tuple[str, ...]:
    """``streams`` as a non-empty tuple of distinct names from ``allowed`` (a single name is accepted)."""
    if isinstance(streams, str):
        streams = (streams,)
    if (not isinstance(streams, (tuple, list)) or not streams or len(set(streams)) != len(streams)
            or any(not isinstance(o, str) or o not in allowed for o in streams)):
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {streams!r}")
    return tuple(streams)


def first_parameter(module: torch.nn.Module) -> Optional[Tensor]:
    """The module's first parameter (its dtype and device are the module's), or None."""
    return next(iter(module.parameters()), None)


def check_like(x: Optional[Tensor], name: str, ref: Optional[Tensor], owner: str, *, dtype: bool = True) -> None:
    """``x`` must be on ``ref``'s device and, with ``dtype``, have ``ref``'s dtype (``ref``: a
    parameter of ``owner``, e.g. "the block"), except under ``torch.autocast``, which runs
    mixed dtypes on purpose. Raises ValueError (device) / TypeError (dtype) naming ``name``."""
    if x is None or ref is None:
        return
    if x.device != ref.device:
        raise ValueError(f"{name} is on {x.device} but {owner}'s parameters are on {ref.device}: move it there "
                         f"({name}.to({str(ref.device)!r})) or move {owner}")
    if dtype and x.dtype != ref.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"{name} has dtype {x.dtype} but {owner}'s parameters are {ref.dtype}: cast the input "
                        f"({name}.to({ref.dtype})) or {owner} ({owner.split()[-1]}.to({x.dtype})), or run it under "
                        "torch.autocast")
