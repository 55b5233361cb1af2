"""An image folder -> tar shards (webdataset's ``ShardWriter``), read back by
:class:`flowmo.data.shards.TarShardDataset` in the folder's order.

Command line: ``flowmo shards`` (:mod:`flowmo.cli.shards`)::

    flowmo shards --input FOLDER --output "out/train-%06d.tar" [--max-count N] [--max-size BYTES] [--classes]

Each image of the folder's listing (:func:`flowmo.data.listing.list_folder_images`: recursive,
hidden files skipped, sorted by relative name) becomes one sample whose key is its relative
name without the extension and whose one field is the file's extension as written, holding
the file's bytes unchanged (no re-encoding; an unreadable file is copied too, and skipped at
training time as the folder dataset skips it). With ``--classes``, a ``.cls`` member holds the
index of the file's top-level folder among the sorted top-level folders (the class-folder rule
of ``flowmo tokenize --classes``). Tar members are written in PAX format with mtime 0, so the
same folder gives the same bytes.

Refused (ValueError naming the argument): a file whose base name has a ``.`` before its
extension (webdataset would split its key at the first ``.``), a file in a top-level folder
named ``__NAME__`` (webdataset skips it as metadata), two files with the same key
(``a.jpg`` and ``a.png``), ``--classes`` with images at the top level, an output pattern
without a ``%`` format, and an output shard that exists already (never overwritten).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List

from flowmo.data.folder_kinds import kind_note
from .draws import _check_int
from .listing import list_folder_images
from .shards import _META, EXTRA_HINT

__all__ = ["write_shards"]


def _keys(rel_names: List[str], classes: bool, name: str):
    keys, problems = [], []
    for rel in rel_names:
        stem, ext = rel.rsplit(".", 1)
        if "." in stem.rsplit("/", 1)[-1]:
            problems.append(rel)
        keys.append((stem, ext))
    if problems:  # webdataset keys end at the first '.' of the base name
        raise ValueError(f"{name}: {len(problems)} file names have a '.' before the extension, e.g. {problems[0]!r}")
    meta = [rel for rel in rel_names if _META.match(rel)]
    if meta:  # webdataset (and the shard reader) skip such folders as metadata
        raise ValueError(f"{name}: {len(meta)} files are in a folder named '__NAME__', e.g. {meta[0]!r}; rename it")
    seen = {}
    for rel, (stem, _) in zip(rel_names, keys):
        if stem in seen:
            raise ValueError(f"{name}: {seen[stem]!r} and {rel!r} would have the same key {stem!r}; one image per key")
        seen[stem] = rel
    if not classes:
        return keys, None
    top = [rel for rel in rel_names if "/" not in rel]
    if top:
        raise ValueError(f"{name}: --classes needs one folder per class, got {len(top)} top-level images, e.g. {top[0]!r}")
    firsts = [rel.split("/", 1)[0] for rel in rel_names]
    index = {c: i for i, c in enumerate(sorted(set(firsts)))}
    return keys, [index[f] for f in firsts]


def write_shards(folder, output: str, max_count: int = 100_000, max_size: int = 3_000_000_000,
                 classes: bool = False) -> List[Path]:
    """Write the images under ``folder`` into tar shards named ``output % 0``, ``output % 1``, ...

    Args:
        folder: an image folder (listed by :func:`flowmo.data.listing.list_folder_images`).
        output: a ``%`` pattern for the shard paths, e.g. ``"out/train-%06d.tar"``; its folder is
            created.
        max_count: at most this many images per shard (>= 1).
        max_size: a new shard is started once a shard holds this many bytes of members (>= 1;
            a shard may exceed it by its last image).
        classes: also write ``KEY.cls`` with the class index of the top-level folder.
    Returns:
        the paths written, in order.
    Raises:
        FileNotFoundError: ``folder`` does not exist.
        ValueError: ``folder`` has no images or names webdataset cannot key, ``output`` is not a
            ``%`` pattern or names an existing file, ``max_count`` / ``max_size`` below 1, or
            ``classes`` with images at the top level (each message names the argument).
        ImportError: ``webdataset`` is not installed (names the extra).
    """
    try:
        import webdataset as wds
    except ImportError as e:
        raise ImportError(f"writing tar shards needs the optional webdataset extra: {EXTRA_HINT} ({e})") from None
    max_count = _check_int(max_count, "max_count", 1)
    max_size = _check_int(max_size, "max_size", 1)
    root = Path(folder).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"input folder not found: {str(root)!r}")
    if not root.is_dir():
        raise ValueError(f"input {str(root)!r} is not a folder")
    if not isinstance(output, str):
        raise TypeError(f"output must be a str pattern like 'out/train-%06d.tar', got {type(output).__name__}")
    try:
        first, second = output % 0, output % 1
    except (TypeError, ValueError):
        first = second = None
    if first is None or first == second:
        raise ValueError(f"output must hold one integer % format, e.g. 'out/train-%06d.tar', got {output!r}")
    if Path(first).parent != Path(second).parent or "\0" in first:
        raise ValueError(f"output's shard number must be in the file name, not in a folder, got {output!r}")
    files, not_regular = list_folder_images(root)
    if not files:  # searched recursively, hidden files ignored
        raise ValueError(f"input folder {str(root)!r} holds no images{kind_note(root)}")
    for rel, _, reason in not_regular:
        print(f"skipping {rel}: {reason}")
    keys, labels = _keys([rel for rel, _ in files], classes, "input")
    # at most one shard per image: refuse before writing anything if any of those names exists
    existing = next((output % i for i in range(len(files)) if os.path.lexists(output % i)), None)
    if existing is not None:
        raise ValueError(f"output shard {existing!r} exists already; remove the old shards or choose another --output")
    Path(first).parent.mkdir(parents=True, exist_ok=True)
    written: List[Path] = []
    streams = {}

    def post(fname):  # TarWriter leaves a stream it did not open unclosed
        streams.pop(fname).close()

    def opener(fname):
        try:
            stream = open(fname, "xb")  # never overwrite
        except FileExistsError:
            raise ValueError(f"output shard {fname!r} exists already; remove it or choose another --output") from None
        written.append(Path(fname))
        streams[fname] = stream
        return stream

    writer = wds.ShardWriter(output, maxcount=max_count, maxsize=max_size, verbose=0, opener=opener, post=post,
                             encoder=False, mtime=0, format="PAX_FORMAT")
    try:
        for i, ((_, path), (stem, ext)) in enumerate(zip(files, keys)):
            sample = {"__key__": stem, ext: path.read_bytes()}
            if labels is not None:
                sample["cls"] = str(labels[i]).encode()
            writer.write(sample)
    finally:
        writer.close()
        for stream in streams.values():  # after an error inside a write
            stream.close()
    return written
