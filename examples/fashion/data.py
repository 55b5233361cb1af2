"""Fashion-MNIST from its four standard IDX files, offline (no downloads).

Fashion-MNIST (Xiao, Rasul & Vollgraf 2017, arXiv 1708.07747): 70,000 grey 28x28 images of
clothing in 10 classes, 60,000 for training and 10,000 for testing, in MNIST's IDX format
(read by :func:`examples.fashion.idx.read_idx`):

    train-images-idx3-ubyte   train-labels-idx1-ubyte
    t10k-images-idx3-ubyte    t10k-labels-idx1-ubyte

each possibly gzip-compressed with a ``.gz`` suffix (as distributed). Any folder holding the
four files works; Debian and Ubuntu's package ``dataset-fashion-mnist`` installs them in
``/usr/share/datasets/fashion-mnist``. :func:`fashion_mnist_folder` finds the folder: the
argument, else ``$FLOWMO_FASHION_MNIST``, else the Debian folder.

:func:`write_class_folders` writes images as PNGs in one sub-folder per class, the layout of
ImageNet's training set that flowmo's image folders and ``flowmo tokenize`` read.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

from examples.fashion.idx import read_idx

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_FOLDER",
    "DEBIAN_PACKAGE",
    "ENV_VAR",
    "FILES",
    "FashionMNISTNotFound",
    "fashion_mnist_folder",
    "load_fashion_mnist",
    "class_folder_name",
    "write_class_folders",
]

PathLike = Union[str, "os.PathLike[str]"]

#: The 10 classes, in label order (Xiao et al. 2017, Table 1).
CLASS_NAMES: Tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)

#: split -> (images file, labels file), without the optional ``.gz``.
FILES: Dict[str, Tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_SPLIT_SIZES = {"train": 60000, "test": 10000}

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
DEBIAN_PACKAGE = "dataset-fashion-mnist"
ENV_VAR = "FLOWMO_FASHION_MNIST"

IMAGE_SIZE = 28


class FashionMNISTNotFound(FileNotFoundError):
    """No folder holding the Fashion-MNIST files (the message says where it looked, which files
    are needed and how to get them)."""


def _all_names() -> str:
    return ", ".join(n for pair in FILES.values() for n in pair)


def _find_file(folder: Path, stem: str) -> Optional[Path]:
    """``folder/stem`` or ``folder/stem.gz`` (the plain file first)."""
    for name in (stem, stem + ".gz"):
        p = folder / name
        if p.is_file():
            return p
    return None


def _missing(folder: Path, splits: Sequence[str]) -> list:
    return [stem for s in splits for stem in FILES[s] if _find_file(folder, stem) is None]


def _check_split(split) -> str:
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return split


def fashion_mnist_folder(folder: Optional[PathLike] = None, split: Optional[str] = None) -> Path:
    """The folder holding the Fashion-MNIST files of ``split`` (both splits when None).

    Looks at ``folder`` when given (and only there), else ``$FLOWMO_FASHION_MNIST`` when set
    (and only there), else ``/usr/share/datasets/fashion-mnist`` (Debian's
    ``dataset-fashion-mnist``). Raises :class:`FashionMNISTNotFound` naming the folder tried,
    the missing files and how to get them (``apt-get install dataset-fashion-mnist``, or any
    folder holding the four files, given as ``folder`` or ``$FLOWMO_FASHION_MNIST``).
    """
    splits = tuple(FILES) if split is None else (_check_split(split),)
    if folder is not None:
        where, source = Path(folder), "the folder given"
    elif os.environ.get(ENV_VAR):
        where, source = Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        where, source = DEBIAN_FOLDER, "the default folder"
    missing = _missing(where, splits) if where.is_dir() else [s for sp in splits for s in FILES[sp]]
    if missing:
        state = "lacks " + ", ".join(missing) if where.is_dir() else "does not exist"
        raise FashionMNISTNotFound(
            f"Fashion-MNIST not found: {source} {str(where)!r} {state} (each file may end in .gz). "
            f"Install Debian/Ubuntu's package {DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}, "
            f"files in {DEBIAN_FOLDER}), or put the four files ({_all_names()}) in a folder and pass "
            f"it as folder= or set ${ENV_VAR}. flowmo downloads nothing."
        )
    return where


def load_fashion_mnist(folder: Optional[PathLike] = None, split: str = "train") -> Tuple[np.ndarray, np.ndarray]:
    """Images and labels of one Fashion-MNIST split.

    ``folder`` is found by :func:`fashion_mnist_folder` (argument, ``$FLOWMO_FASHION_MNIST``,
    the Debian folder); ``split`` is ``"train"`` (60,000 images) or ``"test"`` (10,000).

    Returns ``(images, labels)``: images uint8 (N, 28, 28), 0 = black background, 255 = white
    (the files' values, unchanged); labels int64 (N,) in 0..9, indices into
    :data:`CLASS_NAMES`. N is whatever the files hold (any N >= 0 is accepted, so subsets
    written in the same format load too).

    Raises :class:`FashionMNISTNotFound` (a ``FileNotFoundError``) when the files are absent,
    ``ValueError`` for a bad ``split``, :class:`~examples.fashion.idx.IDXFormatError` for a corrupt
    file, and ``ValueError`` naming the file when the contents are not Fashion-MNIST's: images
    not uint8 (N, 28, 28), labels not uint8 (N,), different counts, or labels above 9.
    """
    split = _check_split(split)
    where = fashion_mnist_folder(folder, split)
    images_path = _find_file(where, FILES[split][0])
    labels_path = _find_file(where, FILES[split][1])
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{images_path}: expected uint8 images of shape (N, 28, 28), got {images.dtype} "
                         f"{images.shape}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise ValueError(f"{labels_path}: expected uint8 labels of shape (N,), got {labels.dtype} {labels.shape}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path} holds {labels.shape[0]} labels but {images_path} holds "
                         f"{images.shape[0]} images")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(f"{labels_path}: labels must be in 0..{len(CLASS_NAMES) - 1}, found {int(labels.max())}")
    return images, labels.astype(np.int64)


def class_folder_name(label: int, name: str) -> str:
    """Sub-folder name of a class: two-digit label, underscore, the name with every run of
    characters other than letters, digits and ``-`` replaced by ``-`` (e.g. ``00_T-shirt-top``,
    ``09_Ankle-boot``), so that sorting the folder names gives the label order."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", name).strip("-") or "class"
    return f"{label:02d}_{slug}"


def _check_images_labels(images, labels) -> Tuple[np.ndarray, np.ndarray]:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        torch = None
    if torch is not None and isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if torch is not None and isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 3:
        raise TypeError("images must be a uint8 array of shape (N, H, W), got "
                        f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
    if not isinstance(labels, np.ndarray) or labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise TypeError("labels must be an integer array of shape (N,), got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels has {labels.shape[0]} entries but images has {images.shape[0]}")
    return images, labels.astype(np.int64)


def write_class_folders(out: PathLike, images, labels, *, class_names: Sequence[str] = CLASS_NAMES,
                        size: Optional[int] = None, fit: str = "pad", mode: str = "RGB",
                        limit_per_class: Optional[int] = None) -> Dict[int, int]:
    """Write images as PNGs in one sub-folder per class (the ImageNet layout).

    Layout: ``out/<class_folder_name(label, class_names[label])>/<index>.png``, e.g.
    ``out/07_Sneaker/00042.png``, where ``index`` is the image's position in ``images``
    (zero-padded to 5 digits, more when N needs it), so every PNG traces back to its source
    row. Folder names sort in label order (see :func:`class_folder_name`). Classes without
    images get no folder. Existing files of the same names are replaced (atomically); other
    files in ``out`` are left alone.

    Geometry (``size`` None keeps each image's own H x W):

    * ``fit="pad"``: the image is centred on a black (0) ``size`` x ``size`` canvas, the
      left/top margin ``(size - W) // 2`` / ``(size - H) // 2``; needs size >= H and W
      (e.g. 28 -> 32 adds 2 black pixels on each side). Pixels are unchanged.
    * ``fit="resize"``: resized to ``size`` x ``size`` with Pillow's bicubic filter
      (``Image.Resampling.BICUBIC``; aspect ratio not kept for non-square images).

    ``mode="RGB"`` (default) saves 8-bit RGB with the grey value in all three channels (what
    the RGB tokenizers read); ``mode="L"`` saves 8-bit greyscale.

    Args:
        out: destination folder (created).
        images: uint8 (N, H, W) numpy array or torch tensor, 0 = black.
        labels: integer (N,), each in ``0 .. len(class_names) - 1``.
        class_names: names for the folder names (default :data:`CLASS_NAMES`).
        size: output side in pixels (>= 1), or None.
        fit: ``"pad"`` or ``"resize"`` (used only with ``size``).
        mode: ``"RGB"`` or ``"L"``.
        limit_per_class: write at most this many images per class (the first ones in input
            order), or None for all.

    Returns {label: number of images written} for the labels written.
    Raises ``TypeError`` for images/labels of the wrong type, dtype or rank, ``ValueError``
    naming the argument for mismatched lengths, labels out of range, a bad size / fit / mode /
    limit, or a pad size smaller than the images.
    """
    from PIL import Image

    from flowmo.data.files import atomic_write

    images, labels = _check_images_labels(images, labels)
    names = list(class_names)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError("class_names must be a non-empty sequence of strings")
    if labels.size and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must be in 0..{len(names) - 1} (one per class name), got values "
                         f"{int(labels.min())}..{int(labels.max())}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise ValueError(f"size must be a positive int or None, got {size!r}")
    if fit not in ("pad", "resize"):
        raise ValueError(f"fit must be 'pad' or 'resize', got {fit!r}")
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    if limit_per_class is not None and (isinstance(limit_per_class, bool)
                                        or not isinstance(limit_per_class, (int, np.integer)) or limit_per_class < 0):
        raise ValueError(f"limit_per_class must be a non-negative int or None, got {limit_per_class!r}")
    n, h, w = images.shape
    if size is not None and fit == "pad" and (size < h or size < w):
        raise ValueError(f"size {size} is smaller than the images ({h}x{w}): fit='pad' cannot pad them; "
                         "use fit='resize'")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    digits = max(5, len(str(max(n - 1, 0))))
    counts: Dict[int, int] = {}
    for i in range(n):
        label = int(labels[i])
        if limit_per_class is not None and counts.get(label, 0) >= limit_per_class:
            continue
        pixels = images[i]
        if size is not None and fit == "pad":
            canvas = np.zeros((size, size), dtype=np.uint8)
            top, left = (size - h) // 2, (size - w) // 2
            canvas[top:top + h, left:left + w] = pixels
            pixels = canvas
        img = Image.fromarray(np.ascontiguousarray(pixels))  # 2-D uint8 -> mode "L"
        if size is not None and fit == "resize":
            img = img.resize((size, size), Image.Resampling.BICUBIC)
        if mode == "RGB":
            img = img.convert("RGB")
        folder = out / class_folder_name(label, names[label])
        atomic_write(folder / f"{i:0{digits}d}.png", lambda tmp, im=img: im.save(tmp, format="PNG"), suffix=".png")
        counts[label] = counts.get(label, 0) + 1
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m examples.fashion.data --out DIR [--size 32] [--split train test]
    [--limit-per-class N] [--data FOLDER]``: write the splits as class folders
    (``DIR/<split>/<NN_Class>/<index>.png``, RGB, padded to ``--size``), the layout
    ``flowmo train`` (``train.data.folder``) and ``flowmo tokenize --classes`` read."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m examples.fashion.data", description=main.__doc__)
    p.add_argument("--out", required=True, help="output folder (one sub-folder per split)")
    p.add_argument("--size", type=int, default=32, help="side of the written images: 28 padded with black (32)")
    p.add_argument("--split", nargs="+", choices=sorted(FILES), default=["train", "test"])
    p.add_argument("--limit-per-class", type=int, default=None, metavar="N")
    p.add_argument("--data", default=None, help=f"folder of the IDX files (default: ${ENV_VAR}, then {DEBIAN_FOLDER})")
    args = p.parse_args(argv)
    try:
        for split in args.split:
            images, labels = load_fashion_mnist(args.data, split)
            counts = write_class_folders(Path(args.out) / split, images, labels, size=args.size,
                                         limit_per_class=args.limit_per_class)
            print(f"{split}: wrote {sum(counts.values())} images in {len(counts)} class folders under "
                  f"{Path(args.out) / split}")
    except (OSError, ValueError) as e:
        print(f"python -m examples.fashion.data: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
