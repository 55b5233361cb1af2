"""Training images in tar shards (the webdataset layout), read by random access.

:class:`TarShardDataset` indexes one or many uncompressed tar files once, then reads any item
by seeking to its bytes, so the trainer keeps its map-style data order
(:class:`flowmo.train.sampler.StepBatchSampler`: a seeded permutation per epoch split across
ranks and accumulation micro-batches). Resume is therefore exact without recording a position
in a stream: the items of step ``k`` are a function of ``(seed, k)``.

Layout (webdataset's): members are grouped into samples by key, the member path up to the
first ``.`` of its base name (``n01440764/img001.jpg`` and ``n01440764/img001.cls`` are the
fields ``jpg`` and ``cls`` of key ``n01440764/img001``; fields compared lower-case). A sample
is an item when exactly one of its fields is an image extension
(:data:`flowmo.data.images.IMAGE_EXTENSIONS`). Member names are first normalised as tar
extracts them (:func:`member_path`: ``./c0/a.png``, ``c0//a.png``, ``c0/./a.png`` and
``/c0/a.png`` are all ``c0/a.png``), so a tar written by ``tar -C dir .`` has the keys, order
and classes of one written with plain names; a name with a ``..`` component is refused. Two
members of one key and field (``a.png`` and ``./a.png``, or ``a.json`` and ``a.JSON``) are
refused, as webdataset refuses them.

Every member that is not used is counted, never dropped in silence (:data:`IGNORED`; the
dataset's :attr:`~TarShardDataset.ignored` record, and one warning with the count and an example
of each kind that could hide an image, i.e. all but directories and an image's sidecar fields,
:data:`QUIET`): directories, links (webdataset reads regular files only), other non-regular
members, hidden names (a path component starting with ``.``, which the folder listing skips
too; webdataset would read ``a/._x.png`` as key ``a/``), webdataset's metadata names
(``__name__/...``), names without a key (no ``.`` in the base name), members whose field ends
in an image extension but is not one (webdataset reads ``Track 2.0.png`` as key ``Track 2``,
field ``0.png``: not an image of ours), fields of keys without an image, and the sidecar
fields of an image's key (``.json``, ``.txt``, a ``.cls`` not used as the label). Order: shards in
the given order; within a shard, items sorted by their image member's normalised name.
:func:`~flowmo.data.shard_writer.write_shards` (``flowmo shards``) writes a folder's
images in the folder's listing order (:func:`flowmo.data.listing.list_folder_images`) with
member name = relative file name, so the shards of a folder list the same items in the same
order as :class:`~flowmo.data.folders.ImageFolderDataset` over it, however they are split.

Decoding, resizing, cropping, the seeded draws per ``(seed, epoch, index)`` and the handling
of unreadable items are the folder dataset's (:func:`flowmo.data.images.decode_image`,
:func:`flowmo.data.draws.square_crop`).

The brace patterns need the optional ``webdataset`` extra (``pip install 'flowmo[shards]'``,
which brings ``braceexpand``); it is imported only when a string pattern is expanded or
shards are written.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch.utils.data import Dataset

from .draws import _check_int, first_readable, square_crop
from flowmo.data.images import IMAGE_EXTENSIONS, decode_image
from flowmo.data.image_sizes import check_size, resized_size

__all__ = ["TarShardDataset", "expand_shards", "split_key", "member_path", "is_shard_pattern", "EXTRA_HINT",
           "IGNORED", "QUIET"]

logger = logging.getLogger(__name__)

EXTRA_HINT = "pip install 'flowmo[shards]'"
"""How to install the optional dependencies of tar shards (``webdataset``, ``braceexpand``)."""

_KEY = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's tar_file_iterator skip_meta (matched at the start)
_IMAGE_FIELDS = frozenset(IMAGE_EXTENSIONS)
LABEL_SOURCES = ("cls", "prefix")

IGNORED: Dict[str, str] = {
    "directory": "directories",
    "link": "symbolic or hard links (only regular members are read, as webdataset reads them)",
    "special": "other members that are not regular files (fifos, devices)",
    "hidden": "hidden names (a path component starting with '.', left out as the folder listing leaves them out)",
    "metadata": "webdataset metadata names ('__name__/...', which webdataset skips)",
    "no key": "names without a '.' in the base name (webdataset gives them no key)",
    "dotted": "names with a second '.' (webdataset keys end at the first '.' of the base name: 'Track 2.0.png' "
              "is key 'Track 2', field '0.png', which is not an image field; rename them without the extra '.')",
    "no image": "fields of a key that has no image member (e.g. 'b.json' or 'b.cls' without a 'b.png')",
    "sidecar": "other fields of an image's key (.json, .txt, a .cls not used as the label), which webdataset "
               "shards carry beside their images",
}
"""Why a tar member is not used -> what the warning says of such members (module docstring)."""
QUIET = frozenset({"directory", "sidecar"})
"""The :data:`IGNORED` reasons that are counted but not warned of: they hold no image."""


def split_key(name: str):
    """``(key, field)`` of tar member ``name`` by webdataset's rule, or None.

    The key is the path up to the first ``.`` of the base name; the field is the rest, lower
    case: ``"a/b.c.JPG" -> ("a/b", "c.jpg")``. None for names without a ``.`` in the base name
    (``"a/b"``, ``".x"``), as webdataset's ``base_plus_ext``. Applied to the name as given: the
    reader applies it to :func:`member_path` of the member's name."""
    m = _KEY.match(name)
    return None if m is None else (m.group(1), m.group(2).lower())


def member_path(name: str) -> str:
    """A tar member's name with its path spelling normalised, as tar extracts it: leading
    ``/`` removed (GNU tar strips it), repeated ``/`` and ``.`` components dropped
    (``posixpath.normpath``): ``"./c0//./a.png" -> "c0/a.png"``; ``"."`` for the archive's root.

    Raises:
        ValueError: the name has a ``..`` component (GNU tar refuses to extract such a member;
            it may point outside the archive).
    """
    if ".." in name.split("/"):
        raise ValueError(f"member name {name!r} has a '..' component")
    return posixpath.normpath(name.lstrip("/") or ".")


def _require_braceexpand():
    try:
        import braceexpand  # installed with webdataset
    except ImportError as e:
        raise ImportError(f"tar-shard patterns need the optional webdataset extra: {EXTRA_HINT} ({e})") from None
    return braceexpand


def is_shard_pattern(text: str) -> bool:
    """Whether a command-line argument names tar shards rather than a folder or an image: it
    ends in ``.tar`` (a file or a brace pattern of them, e.g. ``val-{000..009}.tar``)."""
    return isinstance(text, str) and text.lower().endswith(".tar")


def expand_shards(shards: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]],
                  name: str = "shards") -> List[Path]:
    """The shard paths of a brace pattern or a list of them, in order.

    Args:
        shards: a path or brace pattern (``"data/train-{000000..000009}.tar"``, expanded by
            ``braceexpand`` as webdataset does), or a non-empty list of them (each expanded).
        name: the argument's name in error messages.
    Returns:
        the expanded paths, in the order written.
    Raises:
        TypeError: ``shards`` is not a str, path or list/tuple of them.
        ValueError: empty, an empty entry, or a path listed twice.
        ImportError: a pattern with braces without the ``webdataset`` extra (names the extra).
    """
    if isinstance(shards, (str, os.PathLike)):
        entries = [shards]
    elif isinstance(shards, (list, tuple)):
        entries = list(shards)
        if not entries:
            raise ValueError(f"{name} is an empty list; give a tar file, a brace pattern or a list of them")
    else:
        raise TypeError(f"{name} must be a path, a brace pattern or a list of them, got {type(shards).__name__}")
    out: List[Path] = []
    for e in entries:
        if not isinstance(e, (str, os.PathLike)):
            raise TypeError(f"{name} entries must be str or paths, got {type(e).__name__}: {e!r}")
        text = os.fspath(e)
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{name} has an empty entry: {e!r}")
        if "{" in text:
            out.extend(Path(p).expanduser() for p in _require_braceexpand().braceexpand(text))
        else:
            out.append(Path(text).expanduser())
    seen: Set[str] = set()
    for p in out:
        same = os.path.realpath(p)  # one file under two spellings (relative / absolute, '..', links) is one
        if same in seen:
            raise ValueError(f"{name} lists {str(p)!r} twice (its images would be read twice per epoch)")
        seen.add(same)
    return out


@dataclass(frozen=True)
class _Item:
    shard: int  # index into TarShardDataset.shards
    member: str  # the image member's name, normalised (member_path)
    offset: int  # byte offset of its data in the shard
    size: int  # bytes
    label: Optional[int]


def _read_at(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise EOFError(f"{size} bytes expected at offset {offset}, {len(data)} read (the tar file is truncated)")
    return data


def _zeros_from(path: Path, offset: int) -> bool:
    """Whether the bytes of ``path`` from ``offset`` to its end are all zero (a tar's end)."""
    with open(path, "rb") as f:
        f.seek(offset)
        while chunk := f.read(1 << 20):
            if chunk.count(0) != len(chunk):
                return False
    return True


def _member_kind(m: tarfile.TarInfo) -> Optional[str]:
    """The :data:`IGNORED` reason of a member that is not a regular file, else None."""
    if m.isreg():
        return None
    if m.isdir():
        return "directory"
    return "link" if m.issym() or m.islnk() else "special"


def _count(ignored: Dict[str, list], reason: str, example: str) -> None:
    entry = ignored.setdefault(reason, [0, example])
    entry[0] += 1


def _left_out(ignored: Dict[str, list]) -> str:
    """The members left out, in words: count, kind and one example per :data:`IGNORED` reason."""
    return "; ".join(f"{IGNORED[r]}: {n}, e.g. {ex!r}" for r, (n, ex) in ignored.items())


def _index_shard(path: Path, k: int, labels: Optional[str], name: str) -> Tuple[List[_Item], Dict[str, list]]:
    """The items of one shard, sorted by image member name, and the members not used
    (:data:`IGNORED` reason -> [count, first "<shard>/<member>"]). Errors: module docstring."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        glob = " (a '*' or '?' is not expanded here: use a brace pattern such as 'train-{000..009}.tar', or let "\
               "the shell expand an unquoted glob)" if any(c in str(path) for c in "*?[") else ""
        raise FileNotFoundError(f"{name}: tar shard not found: {str(path)!r}{glob}") from None
    if not stat.S_ISREG(mode):
        raise ValueError(f"{name}: {str(path)!r} is not a regular file")
    size = os.stat(path).st_size
    images: dict = {}  # key -> list of (member, offset, size)
    cls: dict = {}  # key -> (raw member name, offset, size)
    seen: dict = {}  # (key, field) -> raw name: one field twice is refused
    ignored: Dict[str, list] = {}
    others: list = []  # (key, "<shard>/<member>") of fields that are not images: sidecars or keys without one
    members, last = 0, None
    try:
        with tarfile.open(path, mode="r:") as tf:  # "r:": uncompressed only (random access)
            for m in tf:
                members, last = members + 1, m.name
                if m.issparse():  # its bytes are not stored in one piece
                    raise ValueError(f"{name}: {str(path)!r} holds the sparse member {m.name!r}; write it without --sparse (flowmo shards does)")
                example = f"{path}/{m.name}"
                try:
                    norm = member_path(m.name)
                except ValueError as e:
                    raise ValueError(f"{name}: {str(path)!r}: {e} (tar refuses to extract such a member); write the "
                                     "shard again from inside its folder") from None
                reason = _member_kind(m)
                if reason is None and any(c.startswith(".") for c in norm.split("/")):
                    reason = "hidden"
                if reason is None and _META.match(norm):
                    reason = "metadata"
                parts = split_key(norm) if reason is None else None
                if reason is None and parts is None:
                    reason = "no key"
                if reason is not None:
                    _count(ignored, reason, example)
                    continue
                key, field = parts
                if parts in seen:  # names compared as tar extracts them, fields lower-case, as webdataset does
                    raise ValueError(f"{name}: {str(path)!r} holds two members of key {key!r} and field {field!r} "
                                     f"({seen[parts]!r} and {m.name!r}); keep one")
                seen[parts] = m.name
                if field in _IMAGE_FIELDS:
                    images.setdefault(key, []).append((norm, m.offset_data, m.size))
                elif field.rsplit(".", 1)[-1] in _IMAGE_FIELDS:
                    _count(ignored, "dotted", example)
                elif field == "cls" and labels == "cls":
                    cls[key] = (m.name, m.offset_data, m.size)
                else:
                    others.append((key, example))
            end = tf.offset  # after the last member tarfile read
    except tarfile.ReadError as e:
        if not members:  # a .tar.gz (not read by random access) or another file
            raise ValueError(f"{name}: {str(path)!r} is not an uncompressed tar file ({e}); decompress it") from None
        end = None  # damaged after a member
    # tarfile also ends quietly at a cut header (the members after it would be lost), or where two tars were concatenated
    if end is None or not _zeros_from(path, end):
        raise ValueError(f"{name}: {str(path)!r} is truncated or damaged after its member {members} ({last!r})")
    if members == 0:
        raise ValueError(f"{name}: {str(path)!r} is an empty tar file (no members)")
    for key, example in others:
        _count(ignored, "sidecar" if key in images else "no image", example)
    for key, (raw, _, _) in cls.items():
        if key not in images:  # the label of no image
            _count(ignored, "no image", f"{path}/{raw}")
    if not images:  # an image member is named KEY.EXT, EXT one of IMAGE_EXTENSIONS
        raise ValueError(f"{name}: {str(path)!r} holds no images ({members} members; KEY.EXT with EXT in "
                         f"{'/'.join(IMAGE_EXTENSIONS)}{'; left out: ' + _left_out(ignored) if ignored else ''})")
    items = []
    for key, found in images.items():
        if len(found) > 1:
            raise ValueError(f"{name}: {str(path)!r} has {len(found)} images under key {key!r}; one image per key")
        member, offset, nbytes = found[0]
        if offset + nbytes > size:
            raise ValueError(f"{name}: {str(path)!r} is truncated: its member {member!r} is cut short")
        label = None
        if labels == "cls":
            where = cls.get(key)
            label = _cls_label(path, key, None if where is None else where[1:], name)
        items.append(_Item(k, member, offset, nbytes, label))
    items.sort(key=lambda it: it.member)
    return items, ignored


def _cls_label(path: Path, key: str, where, name: str) -> int:
    """The class index in the ``.cls`` member of ``key`` (``where``: its offset and size, None if
    missing); ValueError naming the member otherwise."""
    if where is None:
        raise ValueError(f"{name}: labels='cls' but {str(path)!r} has no {key}.cls member for image key {key!r}")
    try:
        text = _read_at(path, *where).decode("utf-8").strip()
    except (EOFError, UnicodeDecodeError) as e:
        text = f"{type(e).__name__}: {e}"
    if not re.fullmatch(r"[0-9]{1,18}", text):  # ASCII digits (not '٣'), below 2**63 (an int64 label)
        raise ValueError(f"{name}: {str(path)!r} member {key}.cls is not a class index below 10**18: {text[:40]!r}")
    return int(text)


class TarShardDataset(Dataset):
    """The images of tar shards, as float32 ``(3, S, S)`` tensors in [-1, 1].

    ``shards`` is indexed once on construction (layout, order and grouping in the module
    docstring); ``dataset[i]`` seeks to item ``i``'s bytes and decodes them exactly as
    :class:`~flowmo.data.folders.ImageFolderDataset` decodes a file: short side resized to
    ``image_size``, a square crop drawn from ``(seed, epoch, index)`` when ``train`` (plus a
    random horizontal flip when ``hflip``), centred otherwise. Call :meth:`set_epoch` at the
    start of every epoch.

    An item that does not decode (corrupt or truncated bytes, pixels the decoding rules refuse,
    a resized size over Pillow's pixel limit) never crashes ``__getitem__``: the next readable
    item (cyclically) is returned instead, keeping the requested index's draws, and the bad
    item's name (``"<shard path>/<member name>"``, :meth:`name`) is added to :attr:`bad_paths`;
    :attr:`skipped` counts them. The members that are not items (the rules in the module
    docstring) are counted in :attr:`ignored` (an :data:`IGNORED` reason -> ``(count, first
    "<shard path>/<member name as stored>")``) and one warning on construction lists those that
    could hide an image (all but :data:`QUIET`).

    Labels (``labels``): None (the default, no labels); ``"cls"``, the integer text of each
    key's ``.cls`` member (required for every image); ``"prefix"``, the index of the key's first
    path component (of the normalised name: ``./c0/a.png`` is in class ``c0``) among the sorted
    distinct first components (the class-folder rule of ``flowmo tokenize --classes``;
    :attr:`class_names` lists them). :meth:`label` returns it.

    Raises (on construction): TypeError / ValueError for a bad ``shards`` (see
    :func:`expand_shards`), ``image_size``, ``seed`` or ``labels``; FileNotFoundError naming
    ``shards`` for a missing shard; ValueError naming ``shards`` and the file for a shard that
    is not an uncompressed tar, is empty, holds no images, has two images under one key, two
    members of one key and field or a member name with a ``..`` component, and for a missing
    or malformed label; ImportError naming the extra for a brace pattern without
    ``webdataset``.
    """

    def __init__(self, shards, image_size: int, train: bool = True, seed: int = 0, hflip: bool = False,
                 labels: Optional[str] = None):
        self.image_size = check_size(image_size, "image_size")
        self.train = bool(train)
        self.hflip = bool(hflip)
        self.seed = _check_int(seed, "seed")
        self.epoch = 0
        if labels is not None and labels not in LABEL_SOURCES:
            raise ValueError(f"labels must be None, 'cls' or 'prefix', got {labels!r}")
        self.shards: List[Path] = expand_shards(shards)
        self.items: List[_Item] = []
        self.ignored: Dict[str, Tuple[int, str]] = {}
        for k, path in enumerate(self.shards):
            items, ignored = _index_shard(path, k, labels, "shards")
            self.items.extend(items)
            for reason, (n, example) in ignored.items():
                before = self.ignored.get(reason, (0, example))
                self.ignored[reason] = (before[0] + n, before[1])
        loud = {r: v for r, v in self.ignored.items() if r not in QUIET}
        if loud:
            left = sum(n for n, _ in loud.values())
            logger.warning("shards: left out %d tar member%s that %s not images of this dataset: %s", left,
                           "s" if left != 1 else "", "are" if left != 1 else "is", _left_out(loud))
        self.class_names: Optional[List[str]] = None
        if labels == "prefix":
            self._prefix_labels()
        self.bad_paths: Set[str] = set()

    def _prefix_labels(self) -> None:
        firsts = []
        for i, it in enumerate(self.items):
            if "/" not in it.member:
                raise ValueError(f"labels='prefix' but shards member {self.name(i)!r} has no folder in its key")
            firsts.append(it.member.split("/", 1)[0])
        self.class_names = sorted(set(firsts))
        index = {n: i for i, n in enumerate(self.class_names)}
        self.items = [_Item(it.shard, it.member, it.offset, it.size, index[f]) for it, f in zip(self.items, firsts)]

    # -- bookkeeping -------------------------------------------------------
    @property
    def skipped(self) -> int:
        """Number of distinct items found unreadable so far (in this process)."""
        return len(self.bad_paths)

    def set_epoch(self, epoch: int) -> None:
        """Select the random crops of epoch ``epoch`` (train mode)."""
        self.epoch = _check_int(epoch, "epoch")

    def name(self, index: int) -> str:
        """Item ``index``'s name: ``"<shard path>/<image member name>"`` (the name normalised, :func:`member_path`)."""
        it = self.items[index]
        return f"{self.shards[it.shard]}/{it.member}"

    def label(self, index: int) -> int:
        """Item ``index``'s class index (ValueError if the dataset was built without ``labels``)."""
        lab = self.items[index].label
        if lab is None:
            raise ValueError("this TarShardDataset has no labels; build it with labels='cls' or 'prefix'")
        return lab

    def read_bytes(self, index: int) -> bytes:
        """Item ``index``'s image bytes as stored (raises OSError / EOFError when unreadable)."""
        it = self.items[index]
        return _read_at(self.shards[it.shard], it.offset, it.size)

    def _record_bad(self, name: str, reason: str) -> None:
        if name not in self.bad_paths:
            self.bad_paths.add(name)
            logger.warning("skipping unreadable image %s (%s)", name, reason)

    # -- data --------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    def _decode(self, index: int):
        buf = io.BytesIO(self.read_bytes(index))
        buf.name = self.name(index)  # decode_image names the source in its errors
        img = decode_image(buf)
        resized_size(*img.size, self.image_size, name=repr(buf.name))  # refused before resizing
        return img

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.items)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for dataset of length {n}")
        index = index % n
        # crops are keyed on the requested index, so a substitution is still deterministic
        img, last = first_readable(n, index, self.name, self.bad_paths, lambda j: square_crop(
            self._decode(j), self.image_size, train=self.train, hflip=self.hflip, seed=self.seed, epoch=self.epoch,
            index=index), self._record_bad)
        if img is not None:
            return img
        detail = f" (last error: {last})" if last else ""
        raise RuntimeError(f"no readable image in the {len(self.shards)} tar shards: all {n} items failed{detail}")
