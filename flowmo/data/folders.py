"""Image datasets for FlowMo training and evaluation.

Every dataset here returns float32 tensors of shape ``(3, S, S)`` in [-1, 1].

* :class:`ImageFolderDataset` - all images under a folder (recursive), short
  side resized to ``image_size`` (bicubic, antialiased) then a random (train)
  or centre (eval) square crop.  Corrupt files, and files whose pixels
  :mod:`flowmo.data.images` cannot convert, are skipped and counted, never a crash.
* :class:`BuiltinPhotos`, :func:`held_out_photos`, :func:`load_photo`,
  :func:`available_photos` - the built-in photos, defined in :mod:`flowmo.data.photos`
  and importable from here.

Randomness is reproducible: the crop of item ``index`` in epoch ``epoch`` is
drawn from a ``torch.Generator`` seeded from ``(seed, epoch, index)`` only
(:mod:`flowmo.data.draws`), so it does not depend on worker count, worker
assignment or iteration order. Call ``set_epoch(epoch)`` on the dataset at the
start of every epoch (in each DataLoader worker that matters: with persistent
workers, recreate the iterator or set the epoch before the workers are started).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import torch
from PIL import Image
from torch.utils.data import Dataset

from flowmo.data.folder_kinds import kind_note
from .listing import list_folder_images
from .draws import _check_int, first_readable, square_crop
from flowmo.data.images import IMAGE_EXTENSIONS, decode_image, open_image_file
from flowmo.data.image_sizes import check_size, resized_size

__all__ = ["ImageFolderDataset"]

logger = logging.getLogger(__name__)


def _load_rgb(path: Path) -> Image.Image:
    """Fully decode ``path`` by :func:`flowmo.data.images.decode_image` (mode ``RGB``, or ``F`` for
    high-bit-depth grey); raises on corrupt, truncated or unconvertible files."""
    return decode_image(path)


def _verify_image(path: Path, size: Optional[int] = None) -> Optional[str]:
    """None if ``path`` is a regular file that decodes fully, converts to RGB and (``size``
    given) resizes to short side ``size`` within Pillow's pixel limit, else a short reason."""
    try:
        with open_image_file(path) as fp, Image.open(fp) as im:  # refuses named pipes, devices, ...
            if size is not None:
                resized_size(*im.size, size, name=repr(str(path)))  # from the header: before any decoding
            im.verify()  # structural checks (e.g. PNG chunk CRCs)
        img = decode_image(path)  # full decode (truncation) and the mode rules (unconvertible pixels)
        if img.size[0] <= 0 or img.size[1] <= 0:
            return "empty image"
        if size is not None:
            resized_size(*img.size, size, name=repr(str(path)))
    except Exception as exc:  # noqa: BLE001 - any decoder error means "unreadable"
        return f"{type(exc).__name__}: {exc}"
    return None


# --------------------------------------------------------------------------
# image folder
# --------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """All images under ``root`` (recursive), as float32 ``(3, S, S)`` tensors in [-1, 1].

    Files are matched by extension (case-insensitive; ``extensions`` may be
    given with or without the dot); hidden files and folders (names starting
    with ``.``, e.g. macOS ``._*`` resource forks) are ignored; symlinked
    folders are followed.  The list is sorted by relative path, so it is the
    same on every run and machine: folders are walked in sorted order, a
    folder reached by several paths (symlinks) is read once, under the first
    of them in that order, and a file reached by several names (symlinks) is
    listed once, under the first of its relative names in sorted order.
    Entries with an image extension that are not regular files (named pipes,
    sockets, devices, broken symlinks) are left out of :attr:`files` and
    recorded, logged and counted like unreadable files (reading a named pipe
    would block forever).

    Each image is decoded by :func:`flowmo.data.images.decode_image` (every mode
    Pillow opens, by its documented rules: EXIF orientation applied,
    transparency composited onto white, 16-bit grey scaled by 1/65535 at full
    precision, ...), its short side resized to ``image_size`` with
    antialiased bicubic resampling, and a square ``image_size`` crop taken:
    uniformly random when ``train`` (plus a random horizontal flip when
    ``hflip``), centred otherwise.  Random draws depend only on
    ``(seed, epoch, index)``; see :meth:`set_epoch`.

    Corrupt or unreadable files, files whose pixels the decoding rules
    refuse (e.g. float samples outside [0, 1]), and files whose resized size
    would exceed Pillow's decompression-bomb pixel limit (a very long, thin
    image: see :func:`flowmo.data.images.resized_size`) never crash
    ``__getitem__``: any error decoding or transforming one file makes the next
    readable file (cyclically) be returned instead, the bad path is added to
    :attr:`bad_paths` and :attr:`skipped` counts them.  In DataLoader workers
    those records live in the worker processes, so a trainer that wants an
    exact count should call :meth:`scan_corrupt` once before training.

    Raises ``FileNotFoundError`` if ``root`` does not exist and ``ValueError``
    if it is not a folder or contains no matching regular files, or if
    ``image_size`` is not a positive int with ``image_size ** 2`` within Pillow's
    pixel limit (:func:`flowmo.data.images.check_size`).
    """

    def __init__(
        self,
        root,
        image_size: int,
        train: bool = True,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        seed: int = 0,
        hflip: bool = False,
    ):
        self.image_size = check_size(image_size, "image_size")
        self.train = bool(train)
        self.hflip = bool(hflip)
        self.seed = _check_int(seed, "seed")
        self.epoch = 0
        if isinstance(extensions, str):
            extensions = (extensions,)
        exts = tuple(sorted({"." + e.lower().lstrip(".") for e in extensions}))
        if not exts or any(e == "." for e in exts):
            raise ValueError(f"extensions must be non-empty names like 'png', got {extensions!r}")
        self.extensions = exts
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise FileNotFoundError(f"image folder not found: {str(self.root)!r} (looking for {', '.join(exts)} files)")
        if not self.root.is_dir():
            raise ValueError(f"image folder path is not a directory: {str(self.root)!r}")
        self.bad_paths: Set[Path] = set()
        self.files: List[Path]
        self.files, not_regular = self._list_files()
        for path, reason in not_regular:
            self._record_bad(path, reason)
        self._not_regular: List[Path] = [p for p, _ in not_regular]
        if not self.files:  # searched recursively, hidden files ignored
            raise ValueError(f"no image files with extensions {', '.join(exts)} under {str(self.root)!r}; "
                             f"{len(not_regular)} entries that are not regular files skipped{kind_note(self.root)}")

    def _list_files(self) -> Tuple[List[Path], List[Tuple[Path, str]]]:
        """(regular image files, sorted by relative name and de-duplicated; the entries with an
        image extension that are not regular files, each with the reason)."""
        files, not_regular = list_folder_images(self.root, self.extensions)
        return [p for _, p in files], [(p, reason) for _, p, reason in not_regular]

    # -- bookkeeping -------------------------------------------------------

    @property
    def skipped(self) -> int:
        """Number of distinct files found unreadable so far (in this process)."""
        return len(self.bad_paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of epoch ``epoch`` (train mode)."""
        self.epoch = _check_int(epoch, "epoch")

    def _record_bad(self, path: Path, reason: str) -> None:
        if path not in self.bad_paths:
            self.bad_paths.add(path)
            logger.warning("skipping unreadable image %s (%s)", path, reason)

    def scan_corrupt(self, drop: bool = True) -> List[Path]:
        """Try to decode every file once; return the unreadable ones (sorted by
        relative name), including the entries left out of :attr:`files` for not
        being regular files.

        A file is unreadable if it does not decode, its pixels cannot be
        converted to RGB, or its resized size would exceed Pillow's pixel limit
        (see :func:`flowmo.data.images.resized_size`).  Bad files are added to
        :attr:`bad_paths` (so :attr:`skipped` counts them) and, when ``drop`` is
        true, removed from :attr:`files` so that indices only cover readable
        images.  Raises ``ValueError`` if no readable file is left.
        """
        bad: List[Path] = []
        for path in self.files:
            reason = "previously failed" if path in self.bad_paths else _verify_image(path, self.image_size)
            if reason is not None:
                self._record_bad(path, reason)
                bad.append(path)
        if drop and bad:
            bad_set = set(bad)
            remaining = [p for p in self.files if p not in bad_set]
            if not remaining:
                raise ValueError(f"all {len(self.files)} image files under {str(self.root)!r} are unreadable")
            self.files = remaining
        return sorted(bad + self._not_regular, key=lambda p: p.relative_to(self.root).as_posix())

    # -- data --------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def _transform(self, img: Image.Image, index: int) -> torch.Tensor:
        return square_crop(img, self.image_size, train=self.train, hflip=self.hflip, seed=self.seed,
                           epoch=self.epoch, index=index)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of length {n}")
        index = index % n

        def load(j: int) -> torch.Tensor:
            img = _load_rgb(self.files[j])
            # Refused before resizing: a 1,000,000 x 1 image would be upscaled to 256 x 256,000,000.
            resized_size(*img.size, self.image_size, name=repr(str(self.files[j])))
            # Crops are keyed on the requested index, so a substitution is still deterministic.
            return self._transform(img, index)

        img, last = first_readable(n, index, self.files.__getitem__, self.bad_paths, load, self._record_bad)
        if img is not None:
            return img
        detail = f" (last error: {last})" if last else ""
        raise RuntimeError(f"no readable image files under {str(self.root)!r}: all {n} failed to load{detail}")
