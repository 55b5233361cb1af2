"""A generator folder: ``config.json`` (``{"format": "flowmo-generator", "version": 1, "generator":
<name>, "config": <constructor arguments>, "metadata": {...}}``, plus ``"imports"`` for a generator
registered outside flowmo) and ``model.safetensors``; written atomically, read as JSON and
safetensors only. :meth:`flowmo.generators.TokenGenerator.save_pretrained` / ``from_pretrained``
use these functions."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch

from flowmo.data.files import atomic_write
from flowmo.imports import IMPORTS_KEY, check_module_names
from flowmo.state_dicts import check_finite, check_state_dict

__all__ = ["GENERATOR_FORMAT", "GENERATOR_CONFIG_NAME", "GENERATOR_WEIGHTS_NAME", "read_generator_config",
           "generator_modules", "save_generator_folder", "load_generator_folder"]

GENERATOR_FORMAT = "flowmo-generator"
GENERATOR_CONFIG_NAME = "config.json"
GENERATOR_WEIGHTS_NAME = "model.safetensors"
_VERSION = 1

PathLike = Union[str, os.PathLike]


def save_generator_folder(generator: Any, directory: PathLike, metadata: Optional[Mapping[str, Any]] = None) -> Path:
    """:meth:`TokenGenerator.save_pretrained`'s work (see there)."""
    from safetensors.torch import save_file

    self = generator

    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
    doc = {"format": GENERATOR_FORMAT, "version": _VERSION, "generator": type(self).name,
           "config": self.config(), "metadata": dict(self.metadata if metadata is None else metadata)}
    modules = generator_modules(type(self))
    if "__main__" in modules:
        warnings.warn(f"the generator {type(self).name!r} is defined in __main__ (a script or notebook): the saved "
                      "folder loads only where it is registered again; define it in an importable module to "
                      "load the folder anywhere (with --import MODULE)", stacklevel=3)  # the caller of save_pretrained
        modules = [m for m in modules if m != "__main__"]
    if modules:
        doc[IMPORTS_KEY] = modules
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-able: {e}") from None
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
    atomic_write(d / GENERATOR_WEIGHTS_NAME,
                 lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "flowmo"}))
    atomic_write(d / GENERATOR_CONFIG_NAME, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))
    return d


def load_generator_folder(cls: type, directory: PathLike, device: Union[str, torch.device, None] = None) -> Any:
    """:meth:`TokenGenerator.from_pretrained`'s work for the generator class ``cls`` (see there)."""
    from safetensors.torch import load_file

    d = Path(directory)
    doc = read_generator_config(d)
    if doc["generator"] != cls.name:
        raise ValueError(f"{d / GENERATOR_CONFIG_NAME} holds a {doc['generator']!r} generator, not "
                         f"{cls.name!r}: load it with that generator's class")
    try:
        model = cls(**doc["config"])
    except (TypeError, ValueError) as e:
        raise ValueError(f"{d / GENERATOR_CONFIG_NAME}: its config does not build a {cls.name}: {e}") from None
    weights = d / GENERATOR_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(weights)!r} is missing; a generator folder holds "
                                f"{GENERATOR_CONFIG_NAME} and {GENERATOR_WEIGHTS_NAME}")
    try:
        state = load_file(str(weights))
    except Exception as e:  # safetensors raises several types for damaged files
        raise ValueError(f"{weights} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, str(weights))
    check_finite(state, str(weights))
    model.load_state_dict(state, strict=True)
    model.metadata = doc["metadata"]
    if device is not None:
        model.to(device)
    return model.eval()


def read_generator_config(directory: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a generator folder: a dict with keys ``format``,
    ``version``, ``generator`` (the name), ``config`` (constructor arguments) and ``metadata``.

    Raises:
        FileNotFoundError: no folder or no config.json.
        ValueError: not JSON, or not a generator folder's config (the message says what is wrong).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a folder path (str or os.PathLike), got {type(directory).__name__}")
    d = Path(directory)
    if d.is_file():
        raise ValueError(f"directory {str(d)!r} is a file; pass the generator folder holding {GENERATOR_CONFIG_NAME}")
    path = d / GENERATOR_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; a generator folder holds {GENERATOR_CONFIG_NAME} and "
                                f"{GENERATOR_WEIGHTS_NAME}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path} is not a generator folder's config (its \"format\" is not {GENERATOR_FORMAT!r})")
    if doc.get("version") != _VERSION:
        raise ValueError(f"{path} has version {doc.get('version')!r}; this flowmo reads version {_VERSION}")
    if not isinstance(doc.get("generator"), str) or not isinstance(doc.get("config"), dict):
        raise ValueError(f"{path} must hold \"generator\" (a name) and \"config\" (an object)")
    if not isinstance(doc.get("metadata", {}), dict):
        raise ValueError(f"{path}: \"metadata\" must be an object")
    doc.setdefault("metadata", {})
    try:
        doc[IMPORTS_KEY] = check_module_names(doc.get(IMPORTS_KEY, []), f"{path}: {IMPORTS_KEY!r}")
    except (TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
    return doc


def generator_modules(cls: type) -> list[str]:
    """The module that registered the generator class ``cls`` under its ``name`` when that is
    not flowmo itself (``["my_pkg.gen"]``), else ``[]`` (built in, or not registered)."""
    from flowmo.registry import GENERATORS

    name = getattr(cls, "name", "")
    if not isinstance(name, str) or name not in GENERATORS:
        return []
    entry = GENERATORS.get(name)
    if entry.builtin or entry.factory is not cls:
        return []
    return [entry.module]


