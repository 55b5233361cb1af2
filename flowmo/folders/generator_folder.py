"""A generator folder: ``config.json`` (``{"format": "flowmo-generator", "version": 1, "generator":
<name>, "config": <constructor arguments>, "metadata": {...}}``, plus ``"imports"`` for a generator
registered outside flowmo) and ``model.safetensors``; written atomically, read as JSON and
safetensors only. :meth:`flowmo.generators.TokenGenerator.save_pretrained` / ``from_pretrained``
use these functions."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

import torch

from flowmo.data.files import atomic_write
from flowmo.data.folder_kinds import check_folder_kind, describe_path, path_kind, wrong_kind
from flowmo.folders.imports import IMPORTS_KEY, check_module_names, check_recorded_modules, unknown_component_message
from flowmo.registry import GENERATORS, UnknownComponentError
from flowmo.state_dicts import StateDictMismatchError, check_finite, check_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from flowmo.generators.base import TokenGenerator

__all__ = ["GENERATOR_FORMAT", "GENERATOR_CONFIG_NAME", "GENERATOR_WEIGHTS_NAME", "read_generator_config",
           "generator_modules", "save_generator_folder", "load_generator_folder", "load_generator"]

GENERATOR_FORMAT = "flowmo-generator"
GENERATOR_CONFIG_NAME = "config.json"
GENERATOR_WEIGHTS_NAME = "model.safetensors"
_VERSION = 1
GENERATOR_FOLDER = f"a generator folder ({GENERATOR_CONFIG_NAME} + {GENERATOR_WEIGHTS_NAME})"

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
                      "load the folder anywhere (with --import MODULE)", stacklevel=_caller_stacklevel())
        modules = [m for m in modules if m != "__main__"]
    if modules:
        doc[IMPORTS_KEY] = modules
    try:
        text = json.dumps(doc, indent=2, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-able: {e}") from None
    d = Path(directory)
    check_folder_kind(d, "generator")
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
    atomic_write(d / GENERATOR_WEIGHTS_NAME,
                 lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "flowmo"}))
    atomic_write(d / GENERATOR_CONFIG_NAME, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))
    return d


def _caller_stacklevel() -> int:
    """The ``warnings.warn`` stacklevel, from the function calling this one, of the first frame
    outside the flowmo package: the user's line (``g.save_pretrained(...)``,
    ``save_generator_folder(...)`` or ``export_generator(...)``), however deep flowmo's calls run."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
    frame, level = sys._getframe(2), 2  # level 1: the function that warns
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def load_generator_folder(cls: type, directory: PathLike, device: Union[str, torch.device, None] = None) -> Any:
    """:meth:`TokenGenerator.from_pretrained`'s work for the generator class ``cls`` (see there).

    The sizes in ``config.json`` are not trusted: the generator is first built on the ``"meta"``
    device (no memory) and every parameter and buffer's shape and dtype compared with the
    safetensors header of ``model.safetensors`` (read without reading a tensor), so a config that
    does not match its weights (e.g. a tampered ``vocab_size``) is refused before anything is
    allocated; the real generator is built only then. A generator whose constructor cannot run
    on the meta device (it computes with tensor values) is refused with the reason.
    """
    from safetensors.torch import load_file

    d = Path(directory)
    doc = read_generator_config(d)
    if doc["generator"] != cls.name:
        raise ValueError(f"{d / GENERATOR_CONFIG_NAME} holds a {doc['generator']!r} generator, not {cls.name!r}")
    weights = d / GENERATOR_WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{str(weights)!r} is missing; a generator folder holds it beside config.json")
    header = _weights_header(weights)
    skeleton = _build(cls, doc["config"], d, meta=True)
    _check_header(skeleton.state_dict(), header, str(weights))
    del skeleton
    model = _build(cls, doc["config"], d, meta=False)
    try:
        state = load_file(str(weights))  # the keys, shapes and dtypes of its header, checked above
    except Exception as e:  # safetensors raises several types for damaged files
        raise ValueError(f"{weights} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    check_finite(state, str(weights))
    model.load_state_dict(state, strict=True)
    model.metadata = doc["metadata"]
    if device is not None:
        model.to(device)
    return model.eval()


def _build(cls: type, config: dict, d: Path, *, meta: bool) -> Any:
    """``cls(**config)``, on the meta device when ``meta``. A constructor's error becomes a
    ValueError naming the config file (on the meta device any error: a size too large to
    describe, or a constructor that computes with tensor values, which cannot be checked
    against the weights before allocating and is therefore not loaded)."""
    meta_errors = (NotImplementedError, RuntimeError) if meta else ()  # built for real, these propagate
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{d / GENERATOR_CONFIG_NAME}: its config does not build a {cls.name}: {e}") from None
    except meta_errors as e:
        raise ValueError(f"{d / GENERATOR_CONFIG_NAME}: its config does not build a {cls.name} on the meta device "
                         f"({type(e).__name__}: {e}); its constructor must not compute with tensor values") from None


# safetensors' dtype names (``get_slice(k).get_dtype()``) -> torch dtypes
_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
                       "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2"}


def _weights_header(weights: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype name)}`` of a safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:
            out = {}
            for k in f.keys():
                part = f.get_slice(k)
                out[k] = (tuple(int(n) for n in part.get_shape()), str(part.get_dtype()))
    except Exception as e:  # safetensors raises several types for damaged files
        raise ValueError(f"{weights} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    return out


def _check_header(expected: Mapping[str, torch.Tensor], header: Mapping[str, tuple[tuple[int, ...], str]],
                  source: str) -> None:
    """Refuse a header whose keys, shapes or dtypes differ from the model's ``expected`` state
    dict (StateDictMismatchError, a ValueError, naming ``source`` and the keys)."""
    shaped = {k: torch.empty(shape, device="meta") for k, (shape, _) in header.items()}
    check_state_dict({k: tuple(v.shape) for k, v in expected.items()}, shaped, source)
    have = {k: _SAFETENSORS_DTYPES.get(name, name) for k, (_, name) in header.items()}
    want = {k: str(v.dtype).removeprefix("torch.") for k, v in expected.items()}
    bad = [f"{k}: the model's is {want[k]}, the file's {have[k]}" for k in want if want[k] != have[k]]
    if bad:
        raise StateDictMismatchError(f"{source} does not fit the model: {len(bad)} dtype mismatch(es): {'; '.join(bad[:8])}")


def read_generator_config(directory: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a generator folder: a dict with keys ``format``,
    ``version``, ``generator`` (the name), ``config`` (constructor arguments) and ``metadata``.

    Raises:
        FileNotFoundError: no folder or no config.json.
        ValueError: another kind of folder or file (a tokenizer folder, a training run or
            checkpoint, a token set, ...: the message names the kind found); not JSON, or not a
            generator folder's config (the message says what is wrong).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a folder path (str or os.PathLike), got {type(directory).__name__}")
    d = Path(directory)
    kind = path_kind(d)
    # one of the folder's files (the message says to pass the folder), or another kind of folder or file: say which
    if kind not in (None, "generator", "unknown", "folder", "empty"):
        raise wrong_kind(d, "directory", GENERATOR_FOLDER, "generator")
    path = d / GENERATOR_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; a generator folder holds config.json and model.safetensors"
                                + (f" ({str(d)!r} is {describe_path(d)})" if kind else ""))
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path} is not a generator folder's config (no \"format\": {GENERATOR_FORMAT!r}; {str(d)!r} "
                         f"is {describe_path(d)})")
    if type(doc.get("version")) is not int or doc["version"] != _VERSION:  # strict: not true, not 1.0
        raise ValueError(f"{path} has version {doc.get('version')!r}; this flowmo reads version {_VERSION}")
    doc.setdefault("metadata", {})
    if not all(isinstance(doc.get(k), t) for k, t in (("generator", str), ("config", dict), ("metadata", dict))):
        raise ValueError(f"{path} must hold \"generator\" (a name), \"config\" and \"metadata\" (objects)")
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


def load_generator(directory: PathLike, *, device: Union[str, torch.device, None] = None) -> "TokenGenerator":
    """The generator saved in ``directory``, its class found by the folder's recorded name through
    :data:`flowmo.GENERATORS` (eval mode; its :attr:`~TokenGenerator.metadata` holds the folder's).

    Args:
        directory: a folder written by :meth:`flowmo.generators.TokenGenerator.save_pretrained`.
        device: where to put it (None: the CPU, where it is loaded).

    Raises:
        FileNotFoundError: no such folder, or a file of it is missing.
        ValueError: a damaged config; a generator name that is not registered (naming the module
            the folder records under ``"imports"`` to import first: loading never imports a module
            by itself); a recorded module that is not imported, or a name registered now by
            another module; weights that do not fit.
    """
    doc = read_generator_config(directory)
    path = str(Path(directory) / GENERATOR_CONFIG_NAME)
    name, recorded = doc["generator"], doc["imports"]
    if name not in GENERATORS:
        err = UnknownComponentError(f"unknown token generator {name!r}", GENERATORS.kind, name)
        raise ValueError(unknown_component_message([err], recorded, path))
    entry = GENERATORS.get(name)
    cls = entry.factory
    if not (isinstance(cls, type) and issubclass(cls, GENERATORS.interface)):  # only a class loads from a folder
        raise ValueError(f"{path}: the token generator {name!r} is registered as a factory function, not a class")
    fields = {k: v for k, v in doc["config"].items() if k not in GENERATORS.wiring}
    try:
        spec = GENERATORS.spec_base.model_validate({"name": name, **fields})
    except ValueError as e:
        raise ValueError(f"{path}: its config is not a valid {name!r} spec: {e}") from None
    check_recorded_modules(spec, recorded, path)
    return cls.from_pretrained(directory, device=device)
