"""What the image datasets (:class:`~flowmo.data.folders.ImageFolderDataset`,
:class:`~flowmo.data.photos.BuiltinPhotos`) share: the checks of their ``image_size``,
``seed`` and ``epoch`` arguments, and random draws from a ``torch.Generator`` seeded from
``(seed, epoch, index)`` only, so that the crop of item ``index`` in epoch ``epoch`` does not
depend on worker count, worker assignment or iteration order."""

from __future__ import annotations

import numpy as np
import torch

from .images import check_size


def _check_image_size(image_size) -> int:
    """A positive int whose square is within Pillow's decompression-bomb limit
    (:func:`flowmo.data.images.check_size`: at most 9,459 by default); else ValueError naming
    ``image_size``."""
    return check_size(image_size, "image_size")


def _check_nonneg_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def _generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A torch.Generator seeded deterministically from ``(seed, epoch, index)``."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    g = torch.Generator()
    g.manual_seed((int(state[0]) << 32 | int(state[1])) & 0x7FFF_FFFF_FFFF_FFFF)
    return g


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """Uniform integer in the closed range [low, high]."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator, dtype=torch.float64).item())
