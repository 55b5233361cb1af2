"""The input checks of the blocks: each raises TypeError / ValueError naming the argument.

A module's ``forward`` (a public function's body) makes one check of its inputs and hands
them to unchecked internals. Only metadata is checked (types, shapes, dtypes, devices; never
values), so a check costs no device synchronisation and stays valid under ``torch.compile``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["check_positive_int", "check_positive_real", "check_tensor", "check_grid", "check_streams",
           "check_vec", "check_table", "check_like", "first_parameter", "shape_of"]


def check_positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive_real(value: Any, name: str, rule: str = "a real number > 0 (finite)") -> float:
    """``value`` as a finite float > 0 (bools and tensors refused); ValueError "``name`` must be ``rule``"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_tensor(x: Any, name: str, layout: str, ndim: Optional[int] = None, last: Optional[int] = None,
                 floating: bool = True) -> Tensor:
    """``x`` must be a tensor of ``layout`` (e.g. "(B, N, 32)"): ``ndim`` dims and a last dim of
    ``last`` where given, floating-point with ``floating``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if (ndim is not None and x.ndim != ndim) or (last is not None and (x.ndim == 0 or x.shape[-1] != last)):
        raise ValueError(f"{name} must have shape {layout}{f' ({ndim} dims)' if ndim else ''}, got {shape_of(x)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def check_grid(grid: Any, name: str = "grid") -> tuple[int, int]:
    """``grid`` as a pair (rows, cols) of positive ints."""
    if not isinstance(grid, (tuple, list)) or len(grid) != 2:
        raise TypeError(f"{name} must be a pair (rows, cols) of positive ints, got {grid!r}")
    if any(isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1 for v in grid):
        raise ValueError(f"{name} must be a pair (rows, cols) of positive ints, got rows = {grid[0]}, cols = {grid[1]}")
    return int(grid[0]), int(grid[1])


def check_streams(streams: Any, name: str, allowed: tuple[str, ...] = ("img", "txt")) -> tuple[str, ...]:
    """``streams`` as a non-empty tuple of distinct names from ``allowed`` (a single name is accepted)."""
    streams = (streams,) if isinstance(streams, str) else streams
    if (not isinstance(streams, (tuple, list)) or not streams or len(set(streams)) != len(streams)
            or any(not isinstance(o, str) or o not in allowed for o in streams)):
        raise ValueError(f"{name} must be a non-empty subset of {allowed}, got {streams!r}")
    return tuple(streams)


def check_vec(vec: Any, batch: Optional[int], width: int, modulated: bool = True) -> None:
    """``vec`` must be None or one conditioning vector per sample (B, width) (B = ``batch``, or
    vec's own batch when None); a module built without modulation takes only None. Its dtype is
    left to :func:`check_like`."""
    batch = vec.shape[0] if batch is None and isinstance(vec, Tensor) and vec.ndim else batch
    if vec is not None and not modulated:
        raise ValueError("vec must be None: this module was built with modulation=False")
    if vec is not None and (not isinstance(vec, Tensor) or vec.shape != (batch, width)):
        raise ValueError(f"vec must have shape (B, D) = ({batch}, {width}), got {shape_of(vec)}")


def check_table(freqs: Any, name: str, n: int, head_dim: int, covers: Optional[str], pairs: str,
                device: Optional[torch.device] = None) -> None:
    """``freqs`` must be a float32 RoPE table (n, head_dim / 2, 2) (on ``device`` when given).
    The messages: a table of another row count "covers M tokens``covers``" (None: the shape
    message instead), one of another head dim "... but ``pairs``: sum(axes_dim) must equal the
    head dim"."""
    half = head_dim // 2
    if not isinstance(freqs, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor ({n}, {half}, 2), got {type(freqs).__name__}")
    if covers is not None and freqs.ndim == 3 and freqs.shape[0] != n:
        raise ValueError(f"{name} covers {freqs.shape[0]} tokens{covers}")
    if freqs.ndim == 3 and freqs.shape[2] == 2 and 2 * freqs.shape[1] != head_dim:
        raise ValueError(f"{name} has {freqs.shape[1]} angle pairs per token, for a head dim of {2 * freqs.shape[1]}, "
                         f"but {pairs}: sum(axes_dim) must equal the head dim")
    if freqs.shape != (n, half, 2) or freqs.dtype != torch.float32:
        raise ValueError(f"{name} must be float32 ({n}, {half}, 2), got {freqs.dtype} {shape_of(freqs)}")
    if device is not None and freqs.device != device:
        raise ValueError(f"{name} is on {freqs.device} but x is on {device}: build the table there")


def check_like(ref: Optional[Tensor], owner: str, inputs: dict[str, Optional[Tensor]], any_dtype: tuple = ()) -> None:
    """Each tensor of ``inputs`` (None entries skipped) must be on the device of ``ref`` (a
    parameter of ``owner``, e.g. "the block"; None: nothing to check) and, unless named in
    ``any_dtype`` or under ``torch.autocast`` (which mixes dtypes on purpose), have its dtype.
    Raises ValueError (device) / TypeError (dtype) naming the input."""
    for name, x in inputs.items() if ref is not None else ():
        if x is not None and x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but {owner}'s parameters are on {ref.device}")
        if (x is not None and x.dtype != ref.dtype and name not in any_dtype
                and not torch.is_autocast_enabled(x.device.type)):
            raise TypeError(f"{name} has dtype {x.dtype} but {owner}'s parameters are {ref.dtype} (cast one)")


def first_parameter(module: torch.nn.Module) -> Optional[Tensor]:
    """The module's first parameter (its dtype and device are the module's), or None."""
    return next(iter(module.parameters()), None)


def shape_of(x: Any) -> Any:
    """``x``'s shape as a tuple, or its type's name when it is not a tensor (for messages)."""
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
