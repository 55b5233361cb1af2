"""Labelled token sets: what ``flowmo tokenize --classes`` writes and a token generator trains on.

A token set is a folder::

    index.json                 # written last: its presence means the set is complete
    shard-00000.safetensors    # each shard an ordinary labelled token file (flowmo.data.tokens)
    shard-00001.safetensors
    ...

``index.json`` holds ``format`` (``flowmo-token-set``), ``version``, ``fingerprint`` (the
tokenizer spec's), ``layout`` (a :class:`~flowmo.data.token_layout.TokenLayout` object),
``classes`` (names; label i is ``classes[i]``), ``augment`` (e.g. ``["hflip"]``: each image was
also tokenized mirrored) and ``shards`` (``[{"file": ..., "count": ...}]``, each file once) with ``count``, their
total, and (when the writer was given it) ``tokenizer_weights``, the tokenizer's
:func:`~flowmo.state_dicts.token_weights_digest`, also in every shard's metadata. Every shard is a
valid token file, so ``flowmo detokenize`` decodes one directly.

Writing (:class:`TokenShardWriter`) stages the new shards in a hidden ``.partial-*`` folder
inside the set's folder and moves them in only at the end, so replacing a set (``overwrite``)
leaves the old one readable until the new one is complete.

Class folders (the ImageNet layout: one sub-folder of images per class, the class name the
sub-folder's name) are listed by :func:`class_folder_images`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .files import atomic_write_text, fsync_dir
from .images import IMAGE_EXTENSIONS
from .listing import list_folder_images
from flowmo.data.token_layout import TokenLayout
from .tokens import _check_labels, _names, write_tokens
from flowmo.data.folder_kinds import TOKEN_SET_FORMAT
from flowmo.spec import no_tokens_error

__all__ = [
    "TokenSet", "TokenShardWriter", "class_folder_images", "TOKEN_SET_VERSION", "INDEX_NAME",
    "STAGING_PREFIX",
]

PathLike = Union[str, os.PathLike]
TOKEN_SET_VERSION = "1"
INDEX_NAME = "index.json"
STAGING_PREFIX = ".partial-"


def class_folder_images(root: PathLike, *, argument: str = "root") -> tuple[list[str], list[tuple[Path, int]]]:
    """The images of a class-folder tree (one sub-folder per class, images anywhere below it).

    Returns:
        (classes, items): the class names (the non-hidden sub-folders holding at least one
        image, sorted by name) and ``(path, label)`` for every image, sorted by class, then as
        :func:`flowmo.data.listing.list_folder_images` lists the class's folder.
    Raises:
        FileNotFoundError: ``root`` is not a folder.
        ValueError (naming ``argument``): no sub-folder holds an image, or images lie directly
            in ``root`` (they would have no class).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{argument} {str(root)!r} is not a folder")
    exts = {"." + e for e in IMAGE_EXTENSIONS}
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts and not p.name.startswith(".")]
    if loose:
        raise ValueError(f"{argument} {str(root)!r} holds images outside class sub-folders, e.g. {min(loose)!r}")
    classes: list[str] = []
    items: list[tuple[Path, int]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = [path for _, path in list_folder_images(sub)[0]]  # the library's one folder listing
        if found:
            items += [(p, len(classes)) for p in found]
            classes.append(sub.name)
    if not classes:
        raise ValueError(f"{argument} {str(root)!r} has no class sub-folder holding images ({'/'.join(IMAGE_EXTENSIONS)})")
    return classes, items


@dataclass(frozen=True)
class TokenSet:
    """A labelled token set in memory.

    Attributes:
        sequences: int64 (N, L), the tokens in ``layout`` (:meth:`TokenLayout.to_sequence`).
        labels: int64 (N,), class indices into ``classes``.
        classes: the class names.
        layout: the :class:`TokenLayout` (with the tokenizer's fingerprint).
        spec_json: the tokenizer's spec JSON.
        sources: N source names (relative image paths; mirrored images end in ``#hflip``).
        augment: the augmentations tokenized beside the originals, e.g. ``("hflip",)``.
        tokenizer_weights: the tokenizer's :func:`~flowmo.state_dicts.token_weights_digest`, or
            None for a set written without it.
    """

    sequences: Tensor
    labels: Tensor
    classes: list[str]
    layout: TokenLayout
    spec_json: str
    sources: list[str]
    augment: tuple[str, ...] = ()
    tokenizer_weights: Optional[str] = None

    def __len__(self) -> int:
        return int(self.sequences.shape[0])

    def __repr__(self) -> str:  # a summary, not every row (a set may hold millions)
        return (f"TokenSet({len(self)} sequences of {self.layout.seq_len} tokens in [0, {self.layout.vocab_size}), "
                f"{len(self.classes)} classes, layout {self.layout.kind!r}, augment {list(self.augment)})")


def _is_shard_name(name: str) -> bool:
    return name.startswith("shard-") and name.endswith(".safetensors")


class TokenShardWriter:
    """Write a token set shard by shard (see the module docstring); a context manager.

    Shards are written into a hidden staging folder inside ``folder`` (``.partial-<random>``,
    created with the first full shard); :meth:`close` then removes an existing set's
    ``index.json`` and shards, moves the new shards in (renames within one file system) and
    writes the new ``index.json`` last. So until :meth:`close` an existing set (``overwrite``)
    stays complete and readable; an exception inside the ``with`` block (or :meth:`abort`)
    removes the staging folder, and ``folder`` too when this writer created it and it is empty,
    leaving the file system as it was. A process killed before :meth:`close` leaves the staging
    folder behind (hidden, never read as part of a set).

    Args:
        folder: the output folder (created; must not hold a token set unless ``overwrite``).
        spec: the tokenizer's :class:`flowmo.FlowMoSpec`.
        layout: its :class:`TokenLayout` (:func:`~flowmo.data.token_layout.layout_for`).
        classes: the class names (a list or tuple of distinct strings).
        shard_size: images per shard (an int >= 1).
        augment: recorded in the index (what the caller tokenized beside the originals): a list or
            tuple of distinct strings, e.g. ``["hflip"]``.
        overwrite: a bool: replace an existing token set (at :meth:`close`).
        tokenizer_weights: the tokenizer's :func:`~flowmo.state_dicts.token_weights_digest`,
            recorded in the index and every shard (None: not recorded).
    Raises:
        TypeError: an argument of the wrong type (naming it): ``spec`` not a FlowMoSpec,
            ``layout`` not a TokenLayout (a JSON string: :meth:`TokenLayout.from_json` it first),
            ``classes`` / ``augment`` a string or holding non-strings, ``overwrite`` not a bool.
        ValueError: bad values (naming the argument), or a token set already in ``folder``.
    """

    def __init__(self, folder: PathLike, *, spec: Any, layout: TokenLayout, classes: Sequence[str],
                 shard_size: int = 10_000, augment: Sequence[str] = (), overwrite: bool = False,
                 tokenizer_weights: Optional[str] = None) -> None:
        from ..spec import FlowMoSpec
        from .tokens import check_weights_digest

        if not isinstance(spec, FlowMoSpec):
            raise TypeError(f"spec must be a flowmo.FlowMoSpec (the tokenizer's), got {type(spec).__name__}")
        if not spec.quantizer.discrete:
            raise no_tokens_error(spec.quantizer.name, "a token set", owner="the spec's",
                                  fix="write token sets of a discrete tokenizer")
        if not isinstance(layout, TokenLayout):
            raise TypeError(f"layout must be a TokenLayout (parse JSON with TokenLayout.from_json), got {layout!r:.40}")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        if not isinstance(overwrite, bool):
            raise TypeError(f"overwrite must be a bool, got {type(overwrite).__name__}")
        if layout.fingerprint != spec.fingerprint():
            raise ValueError("layout's fingerprint is not the spec's: the layout belongs to another tokenizer")
        self.classes = _names(classes, "classes", empty=False)
        self.augment = tuple(_names(augment, "augment", empty=True))
        self.tokenizer_weights = (None if tokenizer_weights is None
                                  else check_weights_digest(tokenizer_weights, "tokenizer_weights"))
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"token set output {str(self.folder)!r} is a file; give a folder")
        if _holds_set(self.folder) and not overwrite:
            raise ValueError(f"{str(self.folder)!r} already holds a token set; pass overwrite=True (--overwrite) to replace it")
        self.spec, self.layout, self.shard_size, self.overwrite = spec, layout, shard_size, overwrite
        self._made_folder = False
        self._staging: Optional[Path] = None
        self._rows: list[tuple[Tensor, Tensor, list[str]]] = []
        self._pending = 0
        self._shards: list[dict] = []
        self._closed = False

    def add(self, indices: Tensor, labels: Tensor, sources: Sequence[str]) -> None:
        """Append a batch: ``indices`` as the tokenizer gives them ((B, T), or (B, T, G) for a
        group layout), int64 ``labels`` (B,) in [0, len(classes)), B source names (a list or
        tuple of strings). Full shards are written (to the staging folder) at once.

        Raises:
            TypeError: ``indices`` / ``labels`` not integer tensors; ``sources`` a string or
                holding non-strings.
            ValueError: wrong shapes or counts, values out of range, a closed writer.
        """
        if self._closed:
            raise ValueError("this TokenShardWriter is closed")
        self.layout.to_sequence(indices, "indices")  # checks type, shape and range
        n = int(indices.shape[0])
        _check_labels(labels, n, len(self.classes))
        if not isinstance(sources, (list, tuple)) or not all(isinstance(x, str) for x in sources):
            raise TypeError(f"sources must be a list of {n} names (sources must be strings), got {sources!r:.60}")
        if len(sources) != n:
            raise ValueError(f"{len(sources)} source names for {n} rows")
        self._rows.append((indices.detach().cpu().to(torch.int64), labels.detach().cpu(), list(sources)))
        self._pending += n
        while self._pending >= self.shard_size:
            self._flush(self.shard_size)

    def _staging_folder(self) -> Path:
        if self._staging is None:
            if not self.folder.exists():
                self.folder.mkdir(parents=True)
                self._made_folder = True
            self._staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.folder))
        return self._staging

    def _flush(self, n: int) -> None:
        tokens = torch.cat([r[0] for r in self._rows])
        labels = torch.cat([r[1] for r in self._rows])
        sources = [s for r in self._rows for s in r[2]]
        name = f"shard-{len(self._shards):05d}.safetensors"
        write_tokens(self._staging_folder() / name, tokens[:n], spec=self.spec, sources=sources[:n],
                     groups=self.layout.kind == "group", labels=labels[:n], classes=self.classes, layout=self.layout,
                     tokenizer_weights=self.tokenizer_weights)
        self._shards.append({"file": name, "count": n})
        rest = tokens.shape[0] - n
        self._rows = [(tokens[n:], labels[n:], sources[n:])] if rest else []
        self._pending = rest

    def close(self) -> Path:
        """Write the last shard, replace an existing set's index and shards with the new shards
        and write ``index.json`` last (atomically); returns the index's path.

        Raises:
            ValueError: no rows were added (a token set holds at least one row); the writer is
                then closed and an existing set untouched.
        """
        if self._closed:
            return self.folder / INDEX_NAME
        if not self._pending and not self._shards:
            self.abort()
            raise ValueError("no rows were added to this TokenShardWriter: a token set holds at least one")
        try:
            if self._pending:
                self._flush(self._pending)
            staging = self._staging_folder()
            index = {"format": TOKEN_SET_FORMAT, "version": TOKEN_SET_VERSION, "fingerprint": self.spec.fingerprint(),
                     "layout": json.loads(self.layout.to_json()), "classes": self.classes,
                     "augment": list(self.augment), "shards": self._shards,
                     "count": sum(s["count"] for s in self._shards)}
            if self.tokenizer_weights is not None:
                index["tokenizer_weights"] = self.tokenizer_weights
            # the old set stops being readable here, and the new one is complete with its index
            (self.folder / INDEX_NAME).unlink(missing_ok=True)
            for p in self.folder.iterdir():
                if _is_shard_name(p.name) and p.is_file():
                    p.unlink()
            for s in self._shards:
                os.replace(staging / s["file"], self.folder / s["file"])
            fsync_dir(self.folder)
            path = atomic_write_text(self.folder / INDEX_NAME, json.dumps(index, indent=1) + "\n")
        except BaseException:
            self.abort()
            raise
        self._remove_staging()
        self._closed = True
        return path

    def abort(self) -> None:
        """Discard what was written: the staging folder, and ``folder`` when this writer created it
        and it is left empty. An existing set is untouched. The writer is closed afterwards."""
        self._closed = True
        self._rows, self._pending = [], 0
        self._remove_staging()
        if self._made_folder:
            try:
                self.folder.rmdir()  # only when empty
            except OSError:
                pass

    def _remove_staging(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __enter__(self) -> "TokenShardWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()  # an existing set stays as it was; nothing of the new one is left


def _holds_set(folder: Path) -> bool:
    return folder.is_dir() and ((folder / INDEX_NAME).exists()
                                or any(_is_shard_name(p.name) for p in folder.iterdir()))


