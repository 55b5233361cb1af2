"""Devices and processes: the one device rule and the one process-group set-up of flowmo.

A device is given as a str (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ..., or ``"auto"``
where the caller allows it), a ``torch.device``, or a non-negative int (torch's CUDA ordinal).
A mistake (another type, a string torch does not parse, a device this machine does not
have) raises ``ValueError`` naming the argument, instead of torch's RuntimeError /
AssertionError from deep inside ``.to()``.

**The device rule** (:func:`resolve_device`; every ``device=`` / ``--device`` / ``train.device``
that takes ``auto``: ``flowmo reconstruct``/``tokenize``/``detokenize``/``eval``/``train``,
:func:`flowmo.cli.io.resolve_device`): ``auto`` is CUDA device ``LOCAL_RANK`` (0 without a launcher)
when CUDA is available, else MPS when available and this is a single process (MPS has one device
and no process-group backend), else the CPU. A bare ``cuda`` means CUDA device ``LOCAL_RANK`` too,
so each process of a launched run uses its own GPU; an indexed one (``cuda:1``) is taken as given.

**The process group** (:func:`init_process_group`): under a launcher (``torchrun``: ``WORLD_SIZE``
> 1, ``RANK``, ``LOCAL_RANK``) training and distributed evaluation start the default group with
NCCL for a CUDA device and gloo otherwise, unless one is already running.

**One host sync for many value checks** (:class:`ValueChecks`): a public method that checks its
inputs' values (finite, in range) and its result gathers the checks' boolean flags on the device
and reads them all at once, instead of making the host wait for the device once per check.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import Tensor

__all__ = ["parse_device", "check_device", "resolve_device", "DistContext", "init_process_group", "ValueChecks",
           "native_bf16"]


@dataclass(frozen=True)
class DistContext:
    """This process's place in a launched run: ``world`` processes, this one ``rank`` (0 ..
    world - 1) and ``local_rank`` (its index on this machine), from the launcher's
    ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` (1, 0, 0 without a launcher)."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    def __post_init__(self) -> None:
        for name in ("world", "rank", "local_rank"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"DistContext.{name} must be an int, got {type(v).__name__} {v!r}")
        if self.world < 1 or not 0 <= self.rank < self.world or self.local_rank < 0:
            raise ValueError(f"DistContext needs world >= 1, 0 <= rank < world and local_rank >= 0, got {self}")

    @property
    def enabled(self) -> bool:
        """True for one of several processes."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True for rank 0 (the process that writes shared files and prints)."""
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        """The context the launcher's environment variables describe (torchrun sets them).

        Raises:
            ValueError: naming the variable, when one is not a non-negative integer, when
                ``WORLD_SIZE`` > 1 without ``RANK``, or when ``RANK`` is not below ``WORLD_SIZE``.
        """
        def read(var: str, default: Optional[str]) -> int:
            raw = os.environ.get(var, default)
            if raw is None:
                raise ValueError(f"environment variable {var} expected, but not set (WORLD_SIZE > 1: launch with torchrun)")
            value = int(raw) if raw.strip().isdigit() else -1
            if value < 0:
                raise ValueError(f"environment variable {var} must be a non-negative integer, got {raw!r}")
            return value

        world = read("WORLD_SIZE", "1")
        if world <= 1:
            return cls()
        rank = read("RANK", None)
        if rank >= world:
            raise ValueError(f"environment variable RANK ({rank}) must be below WORLD_SIZE ({world})")
        return cls(world, rank, read("LOCAL_RANK", "0"))


def _auto_device(ctx: DistContext) -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", ctx.local_rank)
    mps = getattr(torch.backends, "mps", None)
    if not ctx.enabled and mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    if isinstance(value, bool) or not isinstance(value, (str, int)) or isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be a device name such as 'cpu', 'cuda', 'cuda:0' or 'mps'{' (or auto)' if auto else ''}, "
                         f"a torch.device or a non-negative CUDA index; got {type(value).__name__} {value!r}")
    if auto and value == "auto":
        return None
    try:
        return torch.device(value)
    except (RuntimeError, ValueError, TypeError) as e:
        reason = _reason(e)
        why = "" if reason.startswith("Expected one of") else f" ({reason})"  # torch's list of every type
        raise ValueError(f"{name}: unknown device {value!r}{why}; expected 'cpu', 'cuda', 'cuda:0' or 'mps'"
                         f"{' (or auto)' if auto else ''}") from None


def check_device(value: Any, name: str = "device", *, auto: bool = False) -> torch.device:
    """``value`` as a ``torch.device`` this machine has. With ``auto=True``, ``"auto"`` gives
    :func:`resolve_device`'s choice for this process (the rule in the module docstring).

    Raises ValueError naming ``name`` for the mistakes :func:`parse_device` finds and for a
    CUDA / MPS device that is not available here (no such device, or an index beyond the
    number of CUDA devices).
    """
    if auto and isinstance(value, str) and value == "auto":
        return _auto_device(DistContext.from_env())
    dev = parse_device(value, name, auto=auto)
    count, what = _devices_here(dev.type)
    if count == 0 or count is not None and dev.index is not None and dev.index >= count:
        raise ValueError(f"{name} {str(dev)!r} is not available ({what})")
    return dev


def _devices_here(kind: str) -> tuple[Optional[int], str]:
    """How many devices of type ``kind`` this machine has (None: some, how many unknown), in words too."""
    if kind == "cpu":
        return 1, "the CPU is one device: 'cpu' or 'cpu:0'"
    if kind == "meta":
        return 0, "'meta' holds no data to compute with; expected a device such as 'cpu' or 'cuda'"
    if kind == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return n, f"{n} CUDA devices" if n else "no CUDA device"
    # MPS and other backends (xpu, privateuse1, ...): torch knows whether they are present
    module = getattr(torch.backends, "mps", None) if kind == "mps" else getattr(torch, kind, None)
    available = getattr(module, "is_available", None)
    present = callable(available) and available() if kind == "mps" else not callable(available) or available()
    return (None if present else 0), f"no {kind} device"


def resolve_device(value: Any = "auto", name: str = "device", ctx: Optional[DistContext] = None) -> torch.device:
    """The device this process runs on for ``value`` (``"auto"`` or None, or a device as
    :func:`check_device` takes it), by the rule in the module docstring: ``auto`` picks
    ``cuda:LOCAL_RANK``, MPS (single process) or the CPU; a bare ``cuda`` gets the index
    ``LOCAL_RANK``. ``ctx``: the process's :class:`DistContext` (default: from the environment).

    Raises ValueError naming ``name`` for a malformed device or one this machine does not have.
    """
    ctx = DistContext.from_env() if ctx is None else ctx
    if value is None or (isinstance(value, str) and value == "auto"):
        return _auto_device(ctx)
    dev = check_device(value, name, auto=True)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", ctx.local_rank)
    return dev


def init_process_group(device: torch.device, ctx: Optional[DistContext] = None, *,
                       timeout_s: Optional[float] = None) -> bool:
    """Start torch.distributed's default process group for a launched run (``ctx.world`` > 1)
    unless one is already running: backend NCCL when ``device`` is a CUDA device, else gloo;
    ``timeout_s`` (seconds, > 0) bounds collective operations (None: torch's default).
    Returns True when it started the group here (the caller then destroys it), False otherwise
    (a single process, or a group started by the caller's caller)."""
    import torch.distributed as dist

    ctx = DistContext.from_env() if ctx is None else ctx
    if not ctx.enabled or not dist.is_available() or dist.is_initialized():
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    kwargs = {} if timeout_s is None else {"timeout": datetime.timedelta(seconds=float(timeout_s))}
    dist.init_process_group(backend, **kwargs)
    return True


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matmuls natively, so that bf16 autocast speeds it up:
    a CUDA device that supports bf16, or a CPU with AVX512-BF16 or AMX (other CPUs emulate bf16,
    about 2-3x slower than their float32: docs/performance.md). False for other devices."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


class ValueChecks:
    """Checks of tensor values gathered on the device and read with one host sync.

    Reading a flag such as ``bool(torch.isfinite(x).all())`` makes the host wait until the
    device has computed it; a method checking three inputs and its output that way waits four
    times. Instead each check is added here, ``add(ok, error)``, and :meth:`read` reads every
    flag in one transfer (``flowmo.testing.syncs.count_host_syncs`` counts 1), raising the
    error of the first check that failed, in the order the checks were added. So a method can
    check its inputs before its work, keep going, and read those flags together with a check
    of its result at the end (the work then runs on the bad input before the error is raised,
    which is harmless for arithmetic; a lookup that would fail on a bad index, such as an
    embedding table's gather, must read its check first).

    ``add(ok, error)``: ``ok`` a boolean tensor (any shape: every entry must be True; a
    float32 ``isfinite`` or a comparison; NaN compares False), ``error`` a callable taking no
    arguments that returns the exception to raise. ``error`` runs only when its check failed,
    so it may read values for its message (more syncs, on the failure path only). The flags
    may live on different devices (each is moved to the first one's; one that is not on the
    same device as the others costs a copy). :meth:`read` empties the list; reading an empty
    one reads nothing.
    """

    def __init__(self) -> None:
        self._checks: list[tuple[Tensor, Callable[[], BaseException]]] = []

    def __len__(self) -> int:
        return len(self._checks)

    def add(self, ok: Tensor, error: Callable[[], BaseException]) -> None:
        """Add the check "every entry of the boolean tensor ``ok`` is True" (see the class)."""
        self._checks.append((ok.all(), error))

    def read(self) -> None:
        """Read every flag added since the last read with one host sync; raise the first failed
        check's error (the checks are then forgotten)."""
        checks, self._checks = self._checks, []
        if not checks:
            return
        device = checks[0][0].device
        flags = torch.stack([ok.to(device) for ok, _ in checks])
        if bool(flags.all()):
            return
        for (_, error), passed in zip(checks, flags.tolist()):
            if not passed:
                raise error()
