"""Device arguments: one check for every public ``device=`` (and ``--device`` / ``train.device``).

A device is given as a str (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ..., or ``"auto"``
where the caller allows it), a ``torch.device``, or a non-negative int (torch's CUDA ordinal).
A mistake (another type, a string torch does not parse, a device this machine does not
have) raises ``ValueError`` naming the argument, instead of torch's RuntimeError /
AssertionError from deep inside ``.to()``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

__all__ = ["parse_device", "check_device"]


def _reason(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def parse_device(value: Any, name: str = "device", *, auto: bool = False) -> Optional[torch.device]:
    """``value`` as a ``torch.device``, checking its type and spelling only (not whether this
    machine has it; :func:`check_device` does). With ``auto=True``, ``"auto"`` is accepted
    too and gives None (to be resolved where the program runs).

    Raises ValueError naming ``name`` for a value that is not a str / torch.device /
    non-negative int, or a string torch cannot parse.
    """
    if isinstance(value, torch.device):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{name} must be a device name such as 'cpu', 'cuda', 'cuda:0' or 'mps'"
                         f"{' (or auto)' if auto else ''}, or a torch.device; got {type(value).__name__} {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be a non-negative CUDA device index, got {value}")
    if auto and value == "auto":
        return None
    try:
        return torch.device(value)
    except (RuntimeError, ValueError, TypeError) as e:
        reason = _reason(e)
        why = "" if reason.startswith("Expected one of") else f" ({reason})"  # torch's list of every type
        raise ValueError(f"{name}: unknown device {value!r}{why}; expected a device such as 'cpu', 'cuda', "
                         f"'cuda:0' or 'mps'{' (or auto)' if auto else ''}") from None


def check_device(value: Any, name: str = "device", *, auto: bool = False) -> torch.device:
    """``value`` as a ``torch.device`` this machine has. With ``auto=True``, ``"auto"`` gives
    CUDA, then MPS, then the CPU (whichever is available first).

    Raises ValueError naming ``name`` for the mistakes :func:`parse_device` finds and for a
    CUDA / MPS device that is not available here (no such device, or an index beyond the
    number of CUDA devices).
    """
    if auto and isinstance(value, str) and value == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = parse_device(value, name, auto=auto)
    assert dev is not None  # "auto" was handled above
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name} {str(dev)!r} is not available (no CUDA device)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name} {str(dev)!r} is not available ({torch.cuda.device_count()} CUDA devices)")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"{name} {str(dev)!r} is not available (no MPS device)")
    elif dev.type not in ("cpu", "meta"):
        # other backends (xpu, privateuse1, ...): torch knows whether they are present
        module = getattr(torch, dev.type, None)
        available = getattr(module, "is_available", None)
        if callable(available) and not available():
            raise ValueError(f"{name} {str(dev)!r} is not available (no {dev.type} device)")
    return dev
