"""What a folder's ``config.json`` says the folder is, so that saving one kind of folder never
overwrites another kind's (a generator exported over a tokenizer folder, a model folder over a
training run's records, which could then no longer resume); and what any path flowmo reads is
(:func:`path_kind`, :func:`describe_path`), so that every reader given the wrong kind of folder
or file says which kind it found (:func:`wrong_kind`).

The kinds, told apart by the file's top-level keys (the formats flowmo writes):

- ``"generator"``: a generator folder (:meth:`flowmo.generators.TokenGenerator.save_pretrained`):
  ``"format": "flowmo-generator"``.
- ``"tokenizer"``: a tokenizer model folder (:meth:`flowmo.FlowMo.save_pretrained`, ``flowmo
  convert``, ``flowmo export``): a FlowMo spec, with ``"encoder"``, ``"decoder"`` and
  ``"quantizer"`` and neither ``"format"`` nor ``"train"``.
- ``"tokenizer-run"``: a tokenizer training run (``flowmo train --out``): ``"model"`` and ``"train"``.
- ``"generator-run"``: a generator training run (``flowmo train-generator --out``): ``"generator"``
  and ``"train"``.
- ``"unknown"``: any other file (not JSON, not an object, or another format).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Union

__all__ = ["CONFIG_NAME", "FOLDER_KINDS", "PATH_KINDS", "folder_kind", "path_kind", "describe_path", "kind_note",
           "wrong_kind", "check_folder_kind", "check_outside_run"]

CONFIG_NAME = "config.json"
TOKEN_FORMAT = "flowmo-tokens"
"""The ``format`` metadata of a token file (:mod:`flowmo.data.tokens`)."""
TOKEN_SET_FORMAT = "flowmo-token-set"
"""The ``format`` of a token set's ``index.json`` (:mod:`flowmo.data.token_shards`)."""

FOLDER_KINDS = {
    "generator": "a generator folder",
    "tokenizer": "a tokenizer model folder",
    "tokenizer-run": "a tokenizer training run (flowmo train --out)",
    "generator-run": "a generator training run (flowmo train-generator --out)",
    "unknown": "a config.json flowmo does not know (not a generator folder, tokenizer folder or training run)",
}

PATH_KINDS = {
    **FOLDER_KINDS,
    "tokenizer-checkpoint": "a tokenizer training checkpoint (a folder in a flowmo train run's checkpoints/)",
    "generator-checkpoint": "a generator training checkpoint (a folder in a flowmo train-generator run's "
                            "checkpoints/)",
    "token-set": "a token set (flowmo tokenize --classes)",
    "partial-token-set": "an incomplete token set (shards without index.json: an interrupted flowmo tokenize?)",
    "token-file": "a token file (flowmo tokenize)",
    "safetensors": "a safetensors file without flowmo's token metadata (model weights?)",
    "config-file": "a config.json file",
    "checkpoints": "the checkpoints/ folder of a training run (give the run folder or one checkpoint)",
    "images": "a folder of images",
    "empty": "an empty folder",
    "folder": "a folder flowmo does not know (no config.json, index.json or state.json)",
    "file": "a file flowmo does not know",
}
"""Every kind :func:`path_kind` tells apart, in words (those of :data:`FOLDER_KINDS` included)."""

PathLike = Union[str, os.PathLike]


def folder_kind(directory: PathLike) -> Optional[str]:
    """The kind of folder ``directory`` is by its ``config.json`` (a key of :data:`FOLDER_KINDS`),
    or None when it holds no ``config.json`` (a new or empty folder).

    A ``config.json`` that cannot be read as a JSON object is ``"unknown"``; never raises for a
    damaged file."""
    path = Path(directory) / CONFIG_NAME
    if not path.exists() and not path.is_symlink():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return "unknown"
    if not isinstance(doc, dict):
        return "unknown"
    if "format" in doc:
        return "generator" if doc["format"] == "flowmo-generator" else "unknown"
    if "train" in doc:
        if "model" in doc:
            return "tokenizer-run"
        if "generator" in doc:
            return "generator-run"
        return "unknown"
    if {"encoder", "decoder", "quantizer"} <= set(doc):
        return "tokenizer"
    return "unknown"


def path_kind(path: PathLike) -> Optional[str]:
    """The kind of what ``path`` is (a key of :data:`PATH_KINDS`), or None when it does not exist.

    A folder with a ``config.json``: :func:`folder_kind`; else a training checkpoint (its
    ``state.json``; ``"kind": "generator"`` for a generator run's), a token set (``index.json`` of
    the token-set format; shards without it: ``"partial-token-set"``), a folder of images (image
    files at its top or one level down, the class-folder layout), an empty folder, or
    ``"folder"``. A file: a token file (safetensors with flowmo's token metadata; only its header
    is read), another safetensors file, a ``config.json``, or ``"file"``. Never raises (an
    unreadable folder or file is ``"folder"`` / ``"file"``)."""
    p = Path(path)
    try:
        if p.is_dir():
            return _folder_kind_by_contents(p)
        if p.is_file():
            return _file_kind(p)
    except OSError:
        return "folder" if p.is_dir() else "file"
    return None


def _folder_kind_by_contents(d: Path) -> str:
    import itertools

    kind = folder_kind(d)
    if kind is not None:
        return kind
    state = d / "state.json"
    if state.is_file():
        doc = _json_object(state)
        return "generator-checkpoint" if doc.get("kind") == "generator" else "tokenizer-checkpoint"
    if (d / "index.json").is_file():

        return "token-set" if _json_object(d / "index.json").get("format") == TOKEN_SET_FORMAT else "folder"
    from flowmo.data.images import IMAGE_EXTENSIONS

    entries = list(itertools.islice(d.iterdir(), 2000))  # a kind, not a listing: a bounded look
    if not entries:
        return "empty"
    if any(e.name.startswith("shard-") and e.name.endswith(".safetensors") for e in entries):
        return "partial-token-set"
    if any(e.name.startswith("ckpt-") and (e / "state.json").is_file() for e in entries[:50]):
        return "checkpoints"

    def image(e: Path) -> bool:
        return e.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS and not e.name.startswith(".")

    if any(image(e) for e in entries) or any(
            image(f) for e in entries[:50] if e.is_dir() and not e.name.startswith(".")
            for f in itertools.islice(e.iterdir(), 200)):
        return "images"
    return "folder"


def _file_kind(f: Path) -> str:
    if f.name == CONFIG_NAME:
        return "config-file"
    if f.suffix.lower() == ".safetensors":

        try:
            from safetensors import safe_open

            with safe_open(str(f), framework="pt") as h:
                meta = h.metadata() or {}
        except Exception:  # noqa: BLE001 - a damaged file is still a file
            return "file"
        return "token-file" if meta.get("format") == TOKEN_FORMAT else "safetensors"
    return "file"


def _json_object(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def describe_path(path: PathLike) -> str:
    """What ``path`` is, in words (:data:`PATH_KINDS`); a ``config.json`` or safetensors file in a
    folder of a known kind says whose it is (``"the config.json of a generator folder"``);
    ``"nothing (it does not exist)"`` for a missing path."""
    p = Path(path)
    kind = path_kind(p)
    if kind is None:
        return "nothing (it does not exist)"
    if kind in ("config-file", "safetensors", "file") and p.parent != p:
        owner = folder_kind(p.parent)
        if owner not in (None, "unknown"):
            return f"the {p.name} of {FOLDER_KINDS[owner]}"
    if kind == "unknown":
        return "a folder whose config.json flowmo does not know (not a generator folder, tokenizer folder or run)"
    return PATH_KINDS[kind]


def kind_note(path: PathLike) -> str:
    """``" ('<path>' is <what it is>)"`` for a folder of a kind flowmo writes (a model folder, a
    run, a token set, ...), ``""`` for any other: what a reader of image folders adds to its "no
    images found" error."""
    kind = path_kind(path)
    if kind in (None, "images", "empty", "folder", "file"):
        return ""
    return f" ({str(path)!r} is {describe_path(path)})"


# what to do instead, by (the kind wanted, the kind found)
_EXPORT = "export it first (flowmo export {path} --output DIR) and load the exported folder"
_HINTS = {
    ("tokenizer", "generator"): "it is loaded with flowmo.generators.load_generator (flowmo generate --generator)",
    ("tokenizer", "tokenizer-run"): _EXPORT,
    ("tokenizer", "tokenizer-checkpoint"): _EXPORT,
    ("tokenizer", "generator-run"): "it trains a generator; " + _EXPORT + " with flowmo.generators.load_generator",
    ("tokenizer", "generator-checkpoint"): "it holds a generator; " + _EXPORT + " with flowmo.generators.load_generator",
    ("generator", "tokenizer"): "it is loaded with flowmo.FlowMo.from_pretrained (flowmo generate --tokenizer)",
    ("generator", "generator-run"): _EXPORT,
    ("generator", "generator-checkpoint"): _EXPORT,
    ("generator", "tokenizer-run"): "it trains a tokenizer, not a generator",
    ("generator", "tokenizer-checkpoint"): "it holds a tokenizer, not a generator",
    ("token-file", "token-set"): "a token set is read with flowmo.data.token_set_reader.read_token_set",
    ("token-set", "partial-token-set"): "write it again with flowmo tokenize --classes",
    ("run", "tokenizer"): "it is a model folder already",
    ("run", "generator"): "it is a model folder already",
}


def wrong_kind(path: PathLike, argument: str, expected: str, want: str = "") -> ValueError:
    """The error of a reader given the wrong kind of path: ``<argument> '<path>' is <what it is>,
    not <expected>[; <what to do instead>]`` (the hint for the kind ``want`` given this kind,
    when there is one; for a file of a ``want`` folder, to pass the folder). ``argument`` names
    what the caller was given ("directory", "--model"; "" for none)."""
    p = Path(path)
    hint = _HINTS.get((want, path_kind(p) or ""), "").format(path=repr(str(p)))
    if want and p.is_file() and folder_kind(p.parent) == want:  # one of the files of the right folder
        hint = f"pass the folder {str(p.parent)!r}"
    named = f"{argument} {str(p)!r}" if argument else repr(str(p))
    return ValueError(f"{named} is {describe_path(p)}, not {expected}" + (f"; {hint}" if hint else ""))


_RESUMED_BY = {"tokenizer-run": "flowmo train", "generator-run": "flowmo train-generator"}


def check_folder_kind(directory: PathLike, want: str, argument: str = "directory") -> None:
    """Refuse to write a ``want`` folder (``"generator"``, ``"tokenizer"``, or a training run:
    ``"tokenizer-run"``, ``"generator-run"``) into ``directory`` when its ``config.json`` says it
    is another kind of folder; a folder without one, or of the same kind (re-export, resume),
    passes.

    Raises:
        ValueError: naming ``argument``, the folder and what it holds (:data:`FOLDER_KINDS`);
            for the other command's run, which command resumes it.
        ValueError: ``directory`` is an existing file.
    """
    if want not in ("generator", "tokenizer", "tokenizer-run", "generator-run"):
        raise ValueError(f"want must be 'generator', 'tokenizer', 'tokenizer-run' or 'generator-run', got {want!r}")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{argument} {str(d)!r} is a file, not a folder")
    kind = folder_kind(d)
    if kind is None:  # no config.json: still refuse flowmo's other folders, whose files would be overwritten
        kind = path_kind(d) if d.is_dir() else None
        if kind in _NOT_WRITABLE_INTO:  # writing there would overwrite or mix with its files
            raise ValueError(f"{argument} {str(d)!r} is {PATH_KINDS[kind]}; use a new or empty folder")
        if not want.endswith("-run") and (d / "checkpoints").is_dir():
            raise ValueError(f"{argument} {str(d)!r} holds a training run's checkpoints/; use a new or empty folder")
        return
    if kind == want:
        return
    other = f", which {_RESUMED_BY[kind]} resumes" if want.endswith("-run") and kind in _RESUMED_BY else ""
    raise ValueError(f"{argument} {str(d)!r} holds {FOLDER_KINDS[kind]}{other}, whose {CONFIG_NAME} would be "
                     f"overwritten by {FOLDER_KINDS[want]}'s; use a new or empty folder")


_NOT_WRITABLE_INTO = frozenset({"tokenizer-checkpoint", "generator-checkpoint", "checkpoints", "token-set",
                                "partial-token-set", "images"})
"""Folder kinds without a config.json that :func:`check_folder_kind` refuses to write into."""


def _is_within(path: Path, folder: Path) -> bool:
    p, f = path.expanduser().resolve(), folder.expanduser().resolve()
    return p == f or f in p.parents


def check_outside_run(export: PathLike, run: PathLike, export_argument: str = "--export",
                      run_argument: str = "--out") -> None:
    """Refuse an export folder ``export`` that would overwrite a training run's own files: the
    run folder ``run`` itself (the exported ``config.json`` would replace the run's, which
    resuming and exporting read) or a folder in its ``checkpoints/`` (a checkpoint's
    ``model.safetensors`` would be replaced). Symbolic links and relative paths are resolved.
    Another sub-folder of the run (``RUN/model``, as ``scripts/demo.sh`` writes) is allowed.

    Raises:
        ValueError: naming both arguments and folders.
    """
    e, r = Path(export), Path(run)
    same = e.expanduser().resolve() == r.expanduser().resolve()
    if same or _is_within(e, r / "checkpoints"):  # its config.json or a checkpoint's weights
        where = "is the training run folder" if same else "is inside the checkpoints of the training run folder"
        raise ValueError(f"{export_argument} {str(e)!r} {where} {run_argument} {str(r)!r}, whose files an export would "
                         f"overwrite; give {export_argument} another folder (outside the run, or RUN/model)")
