"""The built-in photos: real photos that ship inside installed wheels (scikit-image,
scikit-learn, matplotlib), for demos and smoke tests when the user gives no data.

* :class:`BuiltinPhotos` - random crops of the training photos, float32 ``(3, S, S)``
  tensors in [-1, 1], reproducible from ``(seed, epoch, index)`` (see
  :mod:`flowmo.data.draws`).
* :func:`held_out_photos` - a fixed tensor of crops of the photos that
  :class:`BuiltinPhotos` never trains on, for honest held-out numbers.
* :func:`load_photo`, :func:`available_photos` - one photo as an array; those this
  environment can load.

Every public name here is importable from :mod:`flowmo.data.folders` (and
``flowmo.data.folders``) too.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Iterable, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from flowmo.data.image_sizes import check_size
from .draws import _check_int, _generator, _randint, _uniform
from .images import decode_image, image_to_tensor

__all__ = ["BuiltinPhotos", "BUILTIN_PHOTO_NAMES", "DEFAULT_HOLDOUT", "available_photos", "load_photo",
           "held_out_photos"]

logger = logging.getLogger(__name__)

_BICUBIC = Image.Resampling.BICUBIC

_SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "stereo_motorcycle",  # left view of the stereo pair
)
_SKLEARN_PHOTOS = ("china", "flower")
_MATPLOTLIB_PHOTOS = ("grace_hopper",)

#: All photos :class:`BuiltinPhotos` knows about, in a fixed order.
BUILTIN_PHOTO_NAMES: Tuple[str, ...] = _SKIMAGE_PHOTOS + _SKLEARN_PHOTOS + _MATPLOTLIB_PHOTOS

#: Photos held out of training by default (both ship with scikit-image):
#: ``chelsea`` (a cat) and ``coffee`` (a cup of coffee), used whole.
DEFAULT_HOLDOUT: Tuple[str, ...] = ("chelsea", "coffee")

_PHOTO_CACHE: Dict[str, np.ndarray] = {}
_UNAVAILABLE: Dict[str, str] = {}


def _load_skimage(name: str) -> np.ndarray:
    from skimage import data as skdata

    # name is one of _SKIMAGE_PHOTOS (_loader_for): only those ship in the wheel; others would try to download.
    img = getattr(skdata, name)()
    if name == "stereo_motorcycle":
        img = img[0]
    return img


_SKLEARN_IMAGES: Dict[str, np.ndarray] = {}


def _load_sklearn(name: str) -> np.ndarray:
    if not _SKLEARN_IMAGES:
        from sklearn.datasets import load_sample_images

        bunch = load_sample_images()  # loads china.jpg and flower.jpg together
        for fname, img in zip(bunch.filenames, bunch.images):
            _SKLEARN_IMAGES[os.path.splitext(os.path.basename(fname))[0]] = img
    if name not in _SKLEARN_IMAGES:
        raise FileNotFoundError(f"{name}.jpg not among scikit-learn's sample images")
    return _SKLEARN_IMAGES.pop(name)


def _load_matplotlib(name: str) -> np.ndarray:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg", asfileobj=True) as fh:
        return np.asarray(decode_image(fh))  # an 8-bit JPEG: mode RGB


def _as_rgb_uint8(img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) uint8 photo, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr[..., :3])


def _loader_for(name: str) -> Callable[[str], np.ndarray]:
    if name in _SKIMAGE_PHOTOS:
        return _load_skimage
    if name in _SKLEARN_PHOTOS:
        return _load_sklearn
    if name in _MATPLOTLIB_PHOTOS:
        return _load_matplotlib
    raise ValueError(f"unknown built-in photo {name!r}; known: {', '.join(BUILTIN_PHOTO_NAMES)}")


def load_photo(name: str) -> np.ndarray:
    """The built-in photo ``name`` as an (H, W, 3) uint8 array (cached; read-only).

    Raises ``ValueError`` for unknown names and ``ImportError`` /
    ``OSError`` if the package shipping it is missing or the file is unreadable.
    """
    loader = _loader_for(name)
    if name not in _PHOTO_CACHE:
        arr = _as_rgb_uint8(loader(name))
        arr.setflags(write=False)
        _PHOTO_CACHE[name] = arr
    return _PHOTO_CACHE[name]


def available_photos(names: Iterable[str] = BUILTIN_PHOTO_NAMES) -> Tuple[str, ...]:
    """The subset of ``names`` that can be loaded in this environment (order kept)."""
    out = []
    for name in names:
        _loader_for(name)  # validates the name
        if name in _UNAVAILABLE:
            continue
        try:
            load_photo(name)
        except Exception as exc:  # noqa: BLE001 - missing package or unreadable file
            _UNAVAILABLE[name] = f"{type(exc).__name__}: {exc}"
            logger.info("built-in photo %s unavailable (%s)", name, _UNAVAILABLE[name])
            continue
        out.append(name)
    return tuple(out)


def _no_photos_error(what: str) -> ImportError:
    detail = "; ".join(f"{k}: {v}" for k, v in _UNAVAILABLE.items())
    return ImportError(
        f"no built-in photos available for {what}. They ship inside installed packages: "
        "`pip install scikit-image` (optionally also scikit-learn and matplotlib)."
        + (f" Failures: {detail}" if detail else "")
    )


def _check_holdout(holdout) -> Tuple[str, ...]:
    """``holdout`` (a built-in photo's name, or several) as a tuple; ValueError for an unknown name."""
    holdout = (holdout,) if isinstance(holdout, str) else tuple(holdout)
    for name in holdout:
        _loader_for(name)  # raises ValueError for unknown names
    return holdout


def _crop_resize(photo: Image.Image, box: Tuple[float, float, float, float], size: int, flip: bool) -> torch.Tensor:
    img = photo.resize((size, size), _BICUBIC, box=box)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image_to_tensor(img)


class BuiltinPhotos(Dataset):
    """Random crops of real photos shipped inside installed wheels.

    Sources: scikit-image's ``astronaut, chelsea, coffee, rocket,
    hubble_deep_field, immunohistochemistry, retina, stereo_motorcycle``
    (left view), scikit-learn's sample images ``china, flower`` and
    matplotlib's ``grace_hopper.jpg``.  Missing packages shrink the set;
    at least one photo must remain for training, else ``ImportError``.

    Photos named in ``holdout`` (default :data:`DEFAULT_HOLDOUT`: ``chelsea``
    and ``coffee``) are never used; :func:`held_out_photos` returns fixed
    crops of exactly those photos.  :attr:`photo_names` lists the training
    photos.

    Item ``index`` uses photo ``photo_names[index % len(photo_names)]``, a
    square crop whose side is a uniform fraction in ``scale`` of the photo's
    short side at a uniform position, optionally mirrored (``hflip``), and
    resized to ``image_size`` (bicubic, antialiased).  Draws depend only on
    ``(seed, epoch, index)``; see :meth:`set_epoch`.  Items are float32
    ``(3, image_size, image_size)`` tensors in [-1, 1].

    ``train=False`` gives deterministic eval crops: the draws ignore the
    epoch and flips are off.
    """

    def __init__(
        self,
        image_size: int,
        train: bool = True,
        length: int = 1024,
        seed: int = 0,
        holdout: Sequence[str] = DEFAULT_HOLDOUT,
        scale: Tuple[float, float] = (0.25, 1.0),
        hflip: bool = True,
    ):
        self.image_size = check_size(image_size, "image_size")
        self.train = bool(train)
        self.length = _check_int(length, "length", 1)
        self.seed = _check_int(seed, "seed")
        self.epoch = 0
        lo, hi = (float(v) for v in scale)
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
        self.scale = (lo, hi)
        self.hflip = bool(hflip)
        self.holdout = _check_holdout(holdout)
        candidates = [n for n in BUILTIN_PHOTO_NAMES if n not in self.holdout]
        self.photo_names: Tuple[str, ...] = available_photos(candidates)
        if not self.photo_names:
            raise _no_photos_error("training (after removing held-out photos " + ", ".join(self.holdout) + ")")
        self._images: Optional[Dict[str, Image.Image]] = None
        self._reduced: Dict[Tuple[str, int], Image.Image] = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_images"] = None  # rebuilt lazily from the module cache in workers
        state["_reduced"] = {}
        return state

    def _image(self, name: str) -> Image.Image:
        if self._images is None:
            self._images = {}
        if name not in self._images:
            self._images[name] = Image.fromarray(np.array(load_photo(name)))
        return self._images[name]

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of epoch ``epoch`` (train mode)."""
        self.epoch = _check_int(epoch, "epoch")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        n = self.length
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of length {n}")
        index = index % n
        name = self.photo_names[index % len(self.photo_names)]
        photo = self._image(name)
        w, h = photo.size
        g = _generator(self.seed, self.epoch if self.train else 0, index)
        lo, hi = self.scale
        frac = lo + (hi - lo) * _uniform(g)
        side = max(1, min(min(w, h), round(frac * min(w, h))))
        top = _randint(0, h - side, g)
        left = _randint(0, w - side, g)
        flip = self.train and self.hflip and _uniform(g) < 0.5
        # resize from the photo halved k times (box filter, cached), k the most that keeps the
        # crop at >= 2x the output size (PIL's reducing_gap=2 idea, paid once per photo): about
        # 1/255 mean difference to resizing the full-size crop, and 5-10x cheaper per item
        k = 0
        while side >> (k + 1) >= 2 * self.image_size:
            k += 1
        if k:
            if (name, k) not in self._reduced:
                self._reduced[(name, k)] = photo.reduce(1 << k)
            photo, f = self._reduced[(name, k)], float(1 << k)
            return _crop_resize(photo, (left / f, top / f, (left + side) / f, (top + side) / f), self.image_size, flip)
        return _crop_resize(photo, (left, top, left + side, top + side), self.image_size, flip)


def held_out_photos(image_size: int, holdout: Sequence[str] = DEFAULT_HOLDOUT) -> torch.Tensor:
    """Fixed crops of the held-out photos as a float32 ``(N, 3, S, S)`` tensor in [-1, 1].

    For every available photo in ``holdout`` (default ``chelsea`` and
    ``coffee``, which :class:`BuiltinPhotos` with the same ``holdout`` never
    trains on), five crops, in this order: the centred square of the full
    short side, then squares of half the short side centred on the four
    quadrant centres (top-left, top-right, bottom-left, bottom-right); each
    resized to ``image_size`` (bicubic, antialiased).  No randomness.
    Raises ``ImportError`` if none of the held-out photos is available.
    """
    size = check_size(image_size, "image_size")
    holdout = (holdout,) if isinstance(holdout, str) else tuple(holdout)
    names = available_photos(holdout)  # refuses unknown names
    if not names:
        raise _no_photos_error("the held-out set (" + ", ".join(holdout) + ")")
    crops = []
    for name in names:
        photo = Image.fromarray(np.array(load_photo(name)))
        w, h = photo.size
        short = min(w, h)
        boxes = [((w - short) // 2, (h - short) // 2, short)]
        half = short // 2
        for cy in (h / 4, 3 * h / 4):
            for cx in (w / 4, 3 * w / 4):
                left = min(max(0, round(cx - half / 2)), w - half)
                top = min(max(0, round(cy - half / 2)), h - half)
                boxes.append((left, top, half))
        for left, top, side in boxes:
            crops.append(_crop_resize(photo, (left, top, left + side, top + side), size, False))
    return torch.stack(crops)
