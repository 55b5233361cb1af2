"""The per-image decoding noise: one recipe for every place that decodes images with a seed.

``flowmo reconstruct --seed S`` (image ``i`` of the input list: inputs in the order given, a
folder's files as :func:`flowmo.data.listing.list_folder_images` lists them), ``flowmo
detokenize --seed S`` (row ``i`` of the token file), ``flowmo eval --seed S`` /
:func:`flowmo.metrics.evaluate_model` (image ``i``: its global id, the index in that same folder
listing) and the trainer's held-out evaluation (held-out image id ``i``, seed ``train.seed``)
all decode image ``i`` from :func:`image_noise`
``(S, [i], ...)``, so the same seed and image give the same reconstruction everywhere, whatever
the batch size, the number of processes or the device.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["image_noise"]


def image_noise(seed: int, ids: Sequence[int], shape: Sequence[int], *, device: Any = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal noise of shape ``(len(ids), *shape)``: row ``k`` is ``torch.randn(shape)``
    (float32) from a CPU ``torch.Generator`` seeded with ``numpy.random.SeedSequence([seed,
    ids[k]]).generate_state(2)`` (the two 32-bit words as one 63-bit seed), then converted to
    ``dtype`` on ``device``. It depends on the seed and the image id only: not on the batch, the
    rank, the order or the device.

    ``seed`` and every id: non-negative ints below 2**63 (numpy integers, and an integer torch
    tensor of ids, accepted); ``shape``: positive ints (e.g. ``(3, H, W)``); ``dtype`` a floating
    dtype. Raises ValueError naming the argument otherwise.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**63:
        raise ValueError(f"seed must be a non-negative int below 2**63, got {seed!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch dtype (noise is real-valued), got {dtype!r}")
    if isinstance(ids, Tensor):
        if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool or ids.ndim != 1:
            raise ValueError(f"ids must be a 1-D integer tensor or a sequence of ints, got {ids.dtype} {tuple(ids.shape)}")
        ids = ids.tolist()
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or int(s) <= 0 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints, got {shape!r}")
    shape = tuple(int(s) for s in shape)
    out = []
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= int(i) < 2**63:
            raise ValueError(f"ids must be non-negative ints below 2**63 (image ids), got {i!r}")
        state = np.random.SeedSequence([int(seed), int(i)]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed((int(state[0]) << 32 | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF)
        out.append(torch.randn(shape, generator=g, dtype=torch.float32))
    if not out:
        return torch.empty((0, *shape), dtype=dtype, device=device)
    return torch.stack(out).to(device=device, dtype=dtype)
