"""What the image datasets (:class:`~flowmo.data.folders.ImageFolderDataset`,
:class:`~flowmo.data.photos.BuiltinPhotos`) share: the check of their integer arguments (``seed``,
``epoch``, ``length``; also the image grids' and shard writer's; ``image_size``:
:func:`flowmo.data.image_sizes.check_size`), and random draws from a ``torch.Generator`` seeded from
``(seed, epoch, index)`` only, so that the crop of item ``index`` in epoch ``epoch`` does not
depend on worker count, worker assignment or iteration order; and :func:`square_crop`, the
resize + crop (+ flip) both the folder and the tar-shard datasets apply to a decoded image."""

from __future__ import annotations

import numpy as np
import torch

from PIL import Image

from flowmo.data.image_sizes import resize_short_side
from flowmo.data.images import image_to_tensor


def _check_int(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum`` (bools refused); else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
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


def square_crop(img: Image.Image, image_size: int, *, train: bool, hflip: bool, seed: int, epoch: int,
                index: int) -> torch.Tensor:
    """The datasets' transform of one decoded image: short side resized to ``image_size``
    (antialiased bicubic, :func:`flowmo.data.images.resize_short_side`), then a square
    ``image_size`` crop, uniformly random when ``train`` (plus a horizontal flip with
    probability 1/2 when ``hflip``), centred otherwise. The draws come from
    :func:`_generator` ``(seed, epoch, index)`` only (top, then left, then the flip).

    Args:
        img: a decoded image (mode ``RGB`` or ``F``, :func:`flowmo.data.images.decode_image`).
        image_size: the side ``S`` of the result (already checked by the caller).
    Returns:
        float32 tensor ``(3, S, S)`` in [-1, 1].
    Raises:
        ValueError: the resized image would exceed Pillow's pixel limit (from resizing).
    """
    s = image_size
    img = resize_short_side(img, s)
    w, h = img.size
    if train:
        g = _generator(seed, epoch, index)
        top = _randint(0, h - s, g)
        left = _randint(0, w - s, g)
        flip = hflip and _uniform(g) < 0.5
    else:
        top, left, flip = (h - s) // 2, (w - s) // 2, False
    img = img.crop((left, top, left + s, top + s))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image_to_tensor(img)


def first_readable(n: int, index: int, key, bad, load, record_bad):
    """The skip-to-the-next-readable-item rule both datasets share: items ``index``,
    ``index + 1``, ... (cyclically, ``n`` in all), skipping those whose ``key(j)`` is in ``bad``;
    returns ``(load(j), "")`` for the first whose ``load`` succeeds, after ``record_bad(key(j),
    reason)`` for each that raised; ``(None, last reason)`` when none does."""
    last = ""
    for k in range(n):
        j = (index + k) % n
        name = key(j)
        if name in bad:
            continue
        try:
            return load(j), ""
        except Exception as exc:  # noqa: BLE001 - any read/decode/transform error: skip the item
            last = f"{type(exc).__name__}: {exc}"
            record_bad(name, last)
    return None, last
