"""Labelled token sets: what ``flowmo tokenize --classes`` writes and a token generator trains on.

A token set is a folder::

    index.json                 # written last: its presence means the set is complete
    shard-00000.safetensors    # each shard an ordinary labelled token file (flowmo.data.tokens)
    shard-00001.safetensors
    ...

``index.json`` holds ``format`` (``flowmo-token-set``), ``version``, ``fingerprint`` (the
tokenizer spec's), ``layout`` (a :class:`~flowmo.data.token_layout.TokenLayout` object),
``classes`` (names; label i is ``classes[i]``), ``augment`` (e.g. ``["hflip"]``: each image was
also tokenized mirrored) and ``shards`` (``[{"file": ..., "count": ...}]``) with ``count``, their
total. Every shard is a valid token file, so ``flowmo detokenize`` decodes one directly.

Class folders (the ImageNet layout: one sub-folder of images per class, the class name the
sub-folder's name) are listed by :func:`class_folder_images`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from .files import atomic_write_text
from .images import IMAGE_EXTENSIONS
from .listing import list_folder_images
from .token_layout import TokenLayout
from .tokens import read_tokens, write_tokens

__all__ = ["TokenSet", "TokenShardWriter", "read_token_set", "class_folder_images",
           "TOKEN_SET_FORMAT", "TOKEN_SET_VERSION", "INDEX_NAME"]

PathLike = Union[str, os.PathLike]
TOKEN_SET_FORMAT = "flowmo-token-set"
TOKEN_SET_VERSION = "1"
INDEX_NAME = "index.json"


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
        raise ValueError(f"{argument} {str(root)!r} holds images outside class sub-folders ({', '.join(sorted(loose)[:3])}"
                         f"{', ...' if len(loose) > 3 else ''}); put each class's images in a sub-folder named after it")
    classes: list[str] = []
    items: list[tuple[Path, int]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = [path for _, path in list_folder_images(sub)[0]]  # the library's one folder listing
        if found:
            items += [(p, len(classes)) for p in found]
            classes.append(sub.name)
    if not classes:
        raise ValueError(f"{argument} {str(root)!r} has no class sub-folder holding images "
                         f"(extensions: {', '.join(IMAGE_EXTENSIONS)})")
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
    """

    sequences: Tensor
    labels: Tensor
    classes: list[str]
    layout: TokenLayout
    spec_json: str
    sources: list[str]
    augment: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.sequences.shape[0])


class TokenShardWriter:
    """Write a token set shard by shard (see the module docstring); a context manager.

    Args:
        folder: the output folder (created; must not hold a token set unless ``overwrite``).
        spec: the tokenizer's FlowMoSpec.
        layout: its :class:`TokenLayout` (:func:`~flowmo.data.token_layout.layout_for`).
        classes: the class names.
        shard_size: images per shard (>= 1).
        augment: recorded in the index (what the caller tokenized beside the originals).
        overwrite: replace an existing token set's index and shards.
    Raises:
        ValueError: bad arguments, or a token set already in ``folder``.
    """

    def __init__(self, folder: PathLike, *, spec: Any, layout: TokenLayout, classes: Sequence[str],
                 shard_size: int = 10_000, augment: Sequence[str] = (), overwrite: bool = False) -> None:
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
        if layout.fingerprint != spec.fingerprint():
            raise ValueError("layout's fingerprint is not the spec's: the layout belongs to another tokenizer")
        classes = list(classes)
        if not classes or len(set(classes)) != len(classes) or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {classes!r}")
        self.folder = Path(folder)
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"token set output {str(self.folder)!r} is a file; give a folder")
        old = sorted(self.folder.glob("shard-*.safetensors")) if self.folder.is_dir() else []
        if (old or (self.folder / INDEX_NAME).exists()) and not overwrite:
            raise ValueError(f"{str(self.folder)!r} already holds a token set; pass overwrite=True (--overwrite) to replace it")
        if overwrite:
            (self.folder / INDEX_NAME).unlink(missing_ok=True)
            for p in old:
                p.unlink()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.spec, self.layout, self.classes = spec, layout, classes
        self.shard_size, self.augment = shard_size, tuple(augment)
        self._rows: list[tuple[Tensor, Tensor, list[str]]] = []
        self._pending = 0
        self._shards: list[dict] = []
        self._closed = False

    def add(self, indices: Tensor, labels: Tensor, sources: Sequence[str]) -> None:
        """Append a batch: ``indices`` as the tokenizer gives them ((B, T), or (B, T, G) for a
        group layout), int64 ``labels`` (B,), B source names. Full shards are written at once."""
        if self._closed:
            raise ValueError("this TokenShardWriter is closed")
        self.layout.to_sequence(indices, "indices")  # checks shape and range
        if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (indices.shape[0],):
            raise ValueError(f"labels must be an int64 tensor of shape ({indices.shape[0]},)")
        if len(sources) != indices.shape[0]:
            raise ValueError(f"{len(sources)} source names for {indices.shape[0]} rows")
        self._rows.append((indices.detach().cpu().to(torch.int64), labels.detach().cpu(), list(sources)))
        self._pending += int(indices.shape[0])
        while self._pending >= self.shard_size:
            self._flush(self.shard_size)

    def _flush(self, n: int) -> None:
        tokens = torch.cat([r[0] for r in self._rows])
        labels = torch.cat([r[1] for r in self._rows])
        sources = [s for r in self._rows for s in r[2]]
        name = f"shard-{len(self._shards):05d}.safetensors"
        write_tokens(self.folder / name, tokens[:n], spec=self.spec, sources=sources[:n],
                     groups=self.layout.kind == "group", labels=labels[:n], classes=self.classes, layout=self.layout)
        self._shards.append({"file": name, "count": n})
        rest = tokens.shape[0] - n
        self._rows = [(tokens[n:], labels[n:], sources[n:])] if rest else []
        self._pending = rest

    def close(self) -> Path:
        """Write the last shard and then ``index.json`` (atomically); returns the index's path."""
        if self._closed:
            return self.folder / INDEX_NAME
        if self._pending:
            self._flush(self._pending)
        index = {"format": TOKEN_SET_FORMAT, "version": TOKEN_SET_VERSION, "fingerprint": self.spec.fingerprint(),
                 "layout": json.loads(self.layout.to_json()), "classes": self.classes, "augment": list(self.augment),
                 "shards": self._shards, "count": sum(s["count"] for s in self._shards)}
        self._closed = True
        return atomic_write_text(self.folder / INDEX_NAME, json.dumps(index, indent=1) + "\n")

    def __enter__(self) -> "TokenShardWriter":
        return self

    def __exit__(self, exc_type, *_: Any) -> None:
        if exc_type is None:
            self.close()  # an exception leaves no index: the set reads as incomplete


def _bad(folder: Path, why: str) -> ValueError:
    return ValueError(f"token set {str(folder)!r}: {why}")


def read_token_set(path: PathLike) -> TokenSet:
    """Read a token set folder (or one labelled token file, e.g. a single shard).

    Every shard is checked against the index: the same fingerprint, layout and classes, and the
    counts written there. Raises FileNotFoundError when absent, ValueError (naming the file)
    when incomplete (no ``index.json``: an interrupted ``flowmo tokenize``) or inconsistent.
    """
    path = Path(path)
    if path.is_file():
        tf = read_tokens(path)
        if tf.labels is None or tf.layout is None:
            raise _bad(path, "is a token file without labels and layout; write one with "
                             "'flowmo tokenize --classes' (a class-folder tree)")
        layout = TokenLayout.from_json(tf.layout)
        return TokenSet(layout.to_sequence(tf.tokens), tf.labels, tf.classes, layout, tf.spec_json, tf.sources)
    if not path.is_dir():
        raise FileNotFoundError(f"token set {str(path)!r} does not exist")
    index_path = path / INDEX_NAME
    if not index_path.is_file():
        raise _bad(path, f"has no {INDEX_NAME}: it is incomplete (an interrupted 'flowmo tokenize'?) or not a token set")
    try:
        index = json.loads(index_path.read_text())
        if index.get("format") != TOKEN_SET_FORMAT:
            raise ValueError(f"format is {index.get('format')!r}, not {TOKEN_SET_FORMAT!r}")
        layout = TokenLayout.from_json(json.dumps(index["layout"]))
        classes, shards = list(index["classes"]), list(index["shards"])
        augment = tuple(index.get("augment", ()))
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise _bad(path, f"unreadable {INDEX_NAME} ({type(e).__name__}: {e})") from None
    if layout.fingerprint != index.get("fingerprint"):
        raise _bad(path, "the index's layout and fingerprint disagree")
    seqs, labels, sources, spec_json = [], [], [], ""
    for entry in shards:
        file = path / str(entry.get("file", ""))
        if not file.is_file() or file.parent != path:
            raise _bad(path, f"shard {entry.get('file')!r} listed in {INDEX_NAME} is missing")
        tf = read_tokens(file)
        if tf.fingerprint != layout.fingerprint or tf.layout is None or TokenLayout.from_json(tf.layout) != layout:
            raise _bad(path, f"shard {file.name} was written by another tokenizer or in another layout")
        if tf.classes != classes or tf.labels is None:
            raise _bad(path, f"shard {file.name} has other classes than the index")
        if tf.tokens.shape[0] != entry.get("count"):
            raise _bad(path, f"shard {file.name} holds {tf.tokens.shape[0]} rows, the index says {entry.get('count')}")
        seqs.append(layout.to_sequence(tf.tokens, f"{file.name} tokens"))
        labels.append(tf.labels)
        sources += tf.sources
        spec_json = tf.spec_json
    if not seqs:
        raise _bad(path, "holds no shards")
    return TokenSet(torch.cat(seqs), torch.cat(labels), classes, layout, spec_json, sources, augment)
