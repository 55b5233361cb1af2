"""Count host synchronisations: calls that read a tensor's values into Python.

On a GPU each such call (``.item()``, ``bool(t)``, ``float(t)``, ``int(t)``, ``.tolist()``,
``.numpy()``, ``.nonzero()``, indexing with a boolean mask, ``torch.equal``) makes the host
wait until the device's queue has drained. The same calls can be counted on the CPU, where
they cost nothing, by patching those methods: :func:`count_host_syncs` does that for the
duration of a ``with`` block, so a test on the CPU can hold a piece of work to a sync budget
that a GPU run would see (on CUDA, ``torch.cuda.set_sync_debug_mode`` reports the same calls).

    with count_host_syncs() as syncs:
        model.decode(code)
    assert syncs.count <= 1, syncs.report()

Not thread-safe (it patches ``torch.Tensor`` for every thread), and it counts a read of a
tensor that already lives on the host too: code meant to be sync-free keeps Python numbers in
Python and tensors on the device.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import torch

__all__ = ["HostSyncs", "count_host_syncs"]

_TENSOR_METHODS = ("item", "tolist", "numpy", "nonzero", "__bool__", "__float__", "__int__", "__index__")
_TORCH_FUNCTIONS = ("nonzero", "equal")
_TORCH_DIR = os.path.dirname(torch.__file__)


@dataclass
class HostSyncs:
    """The host syncs counted inside one :func:`count_host_syncs` block.

    ``count`` is their number; ``sites`` counts them by (what, ``file:line`` of the first caller
    outside torch), so a failing budget names the lines to change."""

    count: int = 0
    sites: Counter = field(default_factory=Counter)

    def report(self) -> str:
        """The sites, most frequent first, one per line (``3x item at flowmo/model.py:157``)."""
        lines = [f"{n}x {what} at {where}" for (what, where), n in self.sites.most_common()]
        return f"{self.count} host syncs:\n" + "\n".join(lines)


def _caller() -> str:
    for frame in reversed(traceback.extract_stack()[:-1]):
        if not frame.filename.startswith(_TORCH_DIR) and not frame.filename.endswith("syncs.py"):
            return f"{os.path.relpath(frame.filename)}:{frame.lineno}"
    return "?"


@contextlib.contextmanager
def count_host_syncs() -> Iterator[HostSyncs]:
    """Patch the value-reading tensor methods for the block and count their calls (nested reads
    count once: ``bool(t)`` calling ``t.item()`` is one sync). Yields a :class:`HostSyncs`."""
    syncs = HostSyncs()
    depth = [0]
    originals: list[tuple[object, str, object]] = []

    def wrap(owner: object, name: str) -> None:
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            if name == "__getitem__":
                index = args[1] if len(args) > 1 else None
                parts = index if isinstance(index, tuple) else (index,)
                if not any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts):
                    return original(*args, **kwargs)
            if depth[0] == 0:
                syncs.count += 1
                syncs.sites[(name.strip("_"), _caller())] += 1
            depth[0] += 1
            try:
                return original(*args, **kwargs)
            finally:
                depth[0] -= 1

        originals.append((owner, name, original))
        setattr(owner, name, counted)

    try:
        for name in _TENSOR_METHODS + ("__getitem__",):
            wrap(torch.Tensor, name)
        for name in _TORCH_FUNCTIONS:
            wrap(torch, name)
        yield syncs
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)
