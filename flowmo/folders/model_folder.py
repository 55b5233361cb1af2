"""Model folders: ``config.json`` (the spec, plus the modules that registered its non-built-in
components) and ``model.safetensors``, written by :meth:`flowmo.FlowMo.save_pretrained` and read
by :meth:`flowmo.FlowMo.from_pretrained`, which call the functions here (this module never imports
the model: a function that builds one takes its class)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Union

import torch

from flowmo.data.files import atomic_write
from flowmo.data.folder_kinds import check_folder_kind, describe_path, path_kind, wrong_kind
from flowmo.folders.imports import (
    IMPORTS_KEY,
    check_module_names,
    check_recorded_modules,
    component_modules,
    unknown_component_message,
    unknown_components,
)
from flowmo.spec import FlowMoSpec
from flowmo.state_dicts import check_finite, check_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from flowmo.model import FlowMo

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "save_model_folder", "write_model_folder", "load_arguments", "load_model_folder", "config_json",
           "read_config"]

CONFIG_NAME = "config.json"
# fields added after folders were first written: a folder without them takes the default
# fields added after folders were written whose default is what those folders meant
OPTIONAL_FIELDS = frozenset({"sampler_presets", "nested_dropout"})
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FOLDER = f"a tokenizer model folder ({CONFIG_NAME} + {WEIGHTS_NAME})"


def save_model_folder(model: "FlowMo", directory: Union[str, os.PathLike], *, card: Optional[dict] = None) -> Path:
    """Write ``model`` as a model folder: what :meth:`flowmo.FlowMo.save_pretrained` does (its
    docstring gives the files and the errors)."""
    from flowmo.folders.card import CARD_KEYS

    if card is not None and not isinstance(card, dict):
        raise TypeError(f"card must be a dict of model card fields ({', '.join(CARD_KEYS)}) or None, got {card!r:.40}")
    unknown = sorted(set(card or {}) - set(CARD_KEYS))
    if unknown:
        raise ValueError(f"card has unknown field(s) {unknown}; the fields are {', '.join(CARD_KEYS)}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    return write_model_folder(directory, model.spec, state, parameters=sum(p.numel() for p in model.parameters()),
                              card=card)


def write_model_folder(directory: Union[str, os.PathLike], spec: FlowMoSpec, state: Mapping[str, torch.Tensor], *,
                       parameters: int, card: Optional[dict] = None) -> Path:
    """Write ``config.json`` (``spec``), ``model.safetensors`` (``state``: contiguous CPU tensors) and
    the card ``README.md`` (``parameters``: the model's parameter count; ``card``: the card's
    fields), each atomically, into ``directory``; the one writer of model folders."""
    from safetensors.torch import save_file

    from flowmo.folders.card import CARD_NAME, model_card

    card_text = model_card(spec, parameters=parameters, **(card or {}))
    text = config_json(spec)  # everything that can fail before anything is written
    d = Path(directory)
    check_folder_kind(d, "tokenizer")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write(d / WEIGHTS_NAME, lambda p: save_file(dict(state), str(p), metadata={"format": "pt", "library": "flowmo"}))
    atomic_write(d / CONFIG_NAME, lambda p: Path(p).write_text(text + "\n"))
    atomic_write(d / CARD_NAME, lambda p: Path(p).write_text(card_text))
    return d


def load_arguments(directory: Union[str, os.PathLike], device: Union[str, torch.device, None],
                   dtype: Optional[torch.dtype]) -> Optional[torch.device]:
    """The checks of :meth:`flowmo.FlowMo.from_pretrained`'s arguments, made before anything is
    downloaded: TypeError for a ``directory`` that is not a path or name, ValueError for a bad
    ``device``, TypeError for a ``dtype`` that is not floating. Returns the device (or None)."""
    from flowmo.devices import check_device

    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a model folder path (str or os.PathLike), got {directory!r:.60}")
    device = None if device is None else check_device(device, "device")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16) or None, got {dtype!r}")
    return device


def load_model_folder(cls: "type[FlowMo]", directory: Union[str, os.PathLike], d: Path, *,
                      device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> "FlowMo":
    """A ``cls`` (:class:`flowmo.FlowMo`) loaded from the model folder ``d``, which the caller's
    ``directory`` named (a path, a released name or a Hub repository, resolved by
    :func:`flowmo.folders.hub.model_source`); ``device``/``dtype`` checked by :func:`load_arguments`.
    :meth:`flowmo.FlowMo.from_pretrained` gives the errors."""
    from safetensors.torch import load_file

    argument = "directory" if d == Path(directory).expanduser() else f"{str(directory)!r}: the folder"
    kind = path_kind(d)
    # one of the folder's files (the message says to pass the folder), or another kind of folder or file: say which
    # ("unknown": a damaged config, whose reading names the fields)
    if kind not in (None, "tokenizer", "unknown", "folder", "empty"):
        raise wrong_kind(d, argument, TOKENIZER_FOLDER, "tokenizer")
    if kind is None:
        raise FileNotFoundError(f"directory {str(d)!r} does not exist (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
    cfg, weights = d / CONFIG_NAME, d / WEIGHTS_NAME
    missing = [str(f) for f in (cfg, weights) if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]!r} is missing; a FlowMo folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
                                + ("" if kind in ("tokenizer", "unknown") else f" ({str(d)!r} is {describe_path(d)})"))
    spec, raw = read_config(cfg)
    # save_pretrained writes every field; a missing one would silently take its default
    # (image_size, code_length, the sampler, ... are not visible in the weights)
    missing = [k for k in FlowMoSpec.model_fields if k not in raw and k not in OPTIONAL_FIELDS]
    if missing:
        raise ValueError(f"{cfg} is missing the field(s) {', '.join(missing)}; it was edited or damaged")
    model = cls(spec)
    try:
        state = load_file(str(weights))
    except Exception as e:  # SafetensorError, OSError, and plain exceptions for some malformed headers
        raise ValueError(f"{weights} is not a readable safetensors file: {type(e).__name__}: {e}") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, state, str(weights))
    check_finite(state, str(weights))
    model.load_state_dict(state, strict=True)
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model.eval()




def config_json(spec: FlowMoSpec) -> str:
    """The text of a model folder's ``config.json``: the spec's JSON, plus ``"imports"`` (the
    modules that registered its non-built-in components) when there are any."""
    text = spec.to_json()
    modules = component_modules(spec)
    if "__main__" in modules:
        warnings.warn("the spec names a component defined in __main__ (a script or notebook): the saved folder "
                      "loads only where that component is registered again; define it in an importable module "
                      "to load the folder anywhere (with --import MODULE)", stacklevel=3)
        modules = [m for m in modules if m != "__main__"]
    if not modules:
        return text
    return json.dumps({**json.loads(text), IMPORTS_KEY: modules}, indent=2)


def read_config(path: Path) -> tuple[FlowMoSpec, dict]:
    """The spec in a model folder's ``config.json`` and the file's raw mapping (without ``"imports"``).

    Raises ValueError naming the file if it is not a valid spec; when it names components that
    are not registered, the message names the modules its ``"imports"`` lists (import them first:
    this function never imports a module named in a file); and when the components are not
    registered by the modules it records (:func:`flowmo.folders.imports.check_recorded_modules`).
    """
    try:
        text = path.read_text()
        raw = json.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not a valid FlowMo spec: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a valid FlowMo spec: expected a JSON object, got {type(raw).__name__}")
    recorded: list = []
    if IMPORTS_KEY in raw:
        raw = dict(raw)
        try:
            recorded = check_module_names(raw.pop(IMPORTS_KEY), f"{path}: {IMPORTS_KEY!r}")
        except (TypeError, ValueError) as e:
            raise ValueError(str(e)) from None
        text = json.dumps(raw)
    try:
        spec = FlowMoSpec.model_validate_json(text)
    except ValueError as e:
        unknown = unknown_components(e)
        if unknown:
            raise ValueError(unknown_component_message(unknown, recorded, str(path))) from None
        raise ValueError(f"{path} is not a valid FlowMo spec: {e}") from None
    check_recorded_modules(spec, recorded, str(path))
    return spec, raw
