"""What a folder's ``config.json`` says the folder is, so that saving one kind of folder never
overwrites another kind's (a generator exported over a tokenizer folder, a model folder over a
training run's records, which could then no longer resume).

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

__all__ = ["CONFIG_NAME", "FOLDER_KINDS", "folder_kind", "check_folder_kind", "check_outside_run"]

CONFIG_NAME = "config.json"

FOLDER_KINDS = {
    "generator": "a generator folder",
    "tokenizer": "a tokenizer model folder",
    "tokenizer-run": "a tokenizer training run (flowmo train --out)",
    "generator-run": "a generator training run (flowmo train-generator --out)",
    "unknown": "a config.json flowmo does not know (not a generator folder, tokenizer folder or training run)",
}

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


def check_folder_kind(directory: PathLike, want: str, argument: str = "directory") -> None:
    """Refuse to write a ``want`` folder (``"generator"`` or ``"tokenizer"``) into ``directory``
    when its ``config.json`` says it is another kind of folder; a folder without one, or of the
    same kind (re-export), passes.

    Raises:
        ValueError: naming ``argument``, the folder and what it holds (:data:`FOLDER_KINDS`).
        ValueError: ``directory`` is an existing file.
    """
    if want not in ("generator", "tokenizer"):
        raise ValueError(f"want must be 'generator' or 'tokenizer', got {want!r}")
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise ValueError(f"{argument} {str(d)!r} is a file, not a folder")
    kind = folder_kind(d)
    if kind is None or kind == want:
        return
    raise ValueError(f"{argument} {str(d)!r} holds {FOLDER_KINDS[kind]}: its {CONFIG_NAME} would be overwritten by "
                     f"{FOLDER_KINDS[want]}'s; write the {want} folder into another (new or empty) folder")


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
    if same or _is_within(e, r / "checkpoints"):
        where = "is the training run folder" if same else "is inside the checkpoints of the training run folder"
        what = (f"its {CONFIG_NAME}, which resuming reads" if same
                else "a checkpoint's model.safetensors")
        raise ValueError(f"{export_argument} {str(e)!r} {where} {run_argument} {str(r)!r}: exporting there would "
                         f"overwrite the run's files ({what}); give {export_argument} another folder (outside the "
                         "run, or a sub-folder of it such as RUN/model)")
