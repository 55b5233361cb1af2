"""Model folders: ``config.json`` (the spec, plus the modules that registered its non-built-in
components) and ``model.safetensors``, written by :meth:`flowmo.FlowMo.save_pretrained` and read
by :meth:`flowmo.FlowMo.from_pretrained` (methods :class:`flowmo.FlowMo` inherits from here)."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

import torch

from .data.files import atomic_write
from .folder_kinds import check_folder_kind, describe_path, path_kind, wrong_kind
from .imports import (IMPORTS_KEY, check_module_names, check_recorded_modules, component_modules,
                      unknown_component_message, unknown_components)
from .spec import FlowMoSpec
from .state_dicts import check_finite, check_state_dict

if TYPE_CHECKING:  # pragma: no cover
    from .model import FlowMo

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "PretrainedMixin", "config_json", "read_config"]

CONFIG_NAME = "config.json"
# fields added after folders were first written: a folder without them takes the default
OPTIONAL_FIELDS = frozenset({"sampler_presets"})
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FOLDER = f"a tokenizer model folder ({CONFIG_NAME} + {WEIGHTS_NAME})"


class PretrainedMixin:
    """Saving to and loading from a model folder (:class:`flowmo.FlowMo`'s ``save_pretrained`` and
    ``from_pretrained``)."""

    def save_pretrained(self, directory: Union[str, os.PathLike], *, card: Optional[dict] = None) -> Path:
        """Write ``config.json`` (the spec), ``model.safetensors`` and the model card ``README.md``
        (:func:`flowmo.model_card.model_card`: the Hub's metadata header and the model in words;
        ``card`` passes its keyword arguments, e.g. ``{"license": "mit", "training": {...},
        "evaluation": {...}, "name": "user/repo"}``), each atomically, into ``directory``.

        When the spec names components registered outside flowmo, ``config.json`` also lists
        the modules that registered them (key ``"imports"``; see :mod:`flowmo.imports`), so that
        loading it elsewhere can say what to import. A component defined in ``__main__`` (a
        script or notebook) cannot be imported elsewhere: a warning says so.

        Raises ValueError when ``directory`` holds another kind of folder's ``config.json`` (a
        generator folder, a training run, a file flowmo does not know;
        :func:`flowmo.folder_kinds.check_folder_kind`); a tokenizer folder is overwritten.
        """
        from safetensors.torch import save_file

        from .model_card import CARD_KEYS, CARD_NAME, model_card

        if card is not None and not isinstance(card, dict):
            raise TypeError(f"card must be a dict of model card fields ({', '.join(CARD_KEYS)}) or None, "
                            f"got {type(card).__name__}")
        unknown = sorted(set(card or {}) - set(CARD_KEYS))
        if unknown:
            raise ValueError(f"card has unknown field(s) {unknown}; the fields are {', '.join(CARD_KEYS)}")
        card_text = model_card(self.spec, parameters=sum(p.numel() for p in self.parameters()), **(card or {}))
        text = config_json(self.spec)  # everything that can fail before anything is written
        d = Path(directory)
        check_folder_kind(d, "tokenizer")
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(d / WEIGHTS_NAME, lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "flowmo"}))
        atomic_write(d / CONFIG_NAME, lambda p: Path(p).write_text(text + "\n"))
        atomic_write(d / CARD_NAME, lambda p: Path(p).write_text(card_text))
        return d

    @classmethod
    def from_pretrained(cls, directory: Union[str, os.PathLike], *, device: Union[str, torch.device, None] = None,
                        dtype: Optional[torch.dtype] = None, revision: Optional[str] = None,
                        subfolder: Optional[str] = None, token: Union[str, bool, None] = None,
                        cache_dir: Union[str, os.PathLike, None] = None) -> "FlowMo":
        """Load a folder written by :meth:`save_pretrained` (or ``flowmo convert``), a released
        model by name, or a model folder in a Hugging Face Hub repository.

        ``directory``: the model folder (str or os.PathLike) holding ``config.json`` and
        ``model.safetensors``; or, when no such local path exists, a released name
        (``"flowmo_lo"``, ``"flowmo_hi"``: downloaded through ``huggingface_hub`` and converted
        once into flowmo's cache, :mod:`flowmo.hub`) or a Hub repository id ``"user/repo"``
        holding a model folder (at ``revision``, in ``subfolder``; ``token`` and ``cache_dir`` go
        to the Hub client; its offline mode ``HF_HUB_OFFLINE=1`` is honoured). These need the
        optional ``huggingface_hub`` (``pip install 'flowmo[hub]'``: ImportError saying so).
        ``device``: where to put the model (a device name such as
        ``"cpu"``, ``"cuda:0"``, a ``torch.device``; None: the CPU); ``dtype``: a floating
        ``torch.dtype`` (None: float32). Returns the model in eval mode.

        Raises TypeError for a ``directory`` of another type, ValueError naming the argument
        for a ``directory`` that is one of the folder's files (it says to pass the folder),
        for another kind of folder or file (a generator folder, a training run or checkpoint, a
        token set, ...: the message names the kind found, :func:`flowmo.folder_kinds.wrong_kind`)
        and for a malformed or unavailable ``device``, FileNotFoundError for a missing folder
        or file, ValueError for a damaged config or weights file, and ValueError when
        ``config.json`` names a component that is not registered (a quantizer, time grid, ...
        registered in your own module): the message names the component and the module(s) the
        file's ``"imports"`` lists, to import first (``import my_pkg.vq``; on the command line
        ``--import my_pkg.vq``). Loading never imports a module by itself. Also ValueError naming
        the module when the components are not registered by the modules ``"imports"`` records
        (:func:`flowmo.imports.check_recorded_modules`): a recorded module that is not imported
        (it may have replaced a built-in name, which would otherwise load silently as the
        built-in), or a component registered now by a module the file does not record.
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from .devices import check_device

        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory must be a model folder path (str or os.PathLike), got "
                            f"{type(directory).__name__} {directory!r}")
        if device is not None:
            device = check_device(device, "device")
        if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
            raise TypeError(f"dtype must be a floating-point torch.dtype (e.g. torch.bfloat16) or None, got {dtype!r}")
        d = Path(directory).expanduser()
        if not d.exists():
            from .hub import RELEASED, is_repo_id, resolve_model_source

            if str(directory) in RELEASED or is_repo_id(str(directory)):
                d = resolve_model_source(str(directory), revision=revision, subfolder=subfolder, token=token,
                                         cache_dir=cache_dir)
        elif subfolder:
            d = d / subfolder
        argument = "directory" if d == Path(directory).expanduser() else f"{str(directory)!r}: the folder"
        if d.is_file():  # one of the folder's files (the message says to pass the folder), or another kind
            raise wrong_kind(d, argument, TOKENIZER_FOLDER, "tokenizer")
        if not d.is_dir():
            raise FileNotFoundError(f"directory {str(d)!r} does not exist (expected {CONFIG_NAME} and {WEIGHTS_NAME})")
        kind = path_kind(d)
        # another kind of folder: say which ("unknown": a damaged config, whose reading names the fields)
        if kind not in ("tokenizer", "unknown", "folder", "empty"):
            raise wrong_kind(d, argument, TOKENIZER_FOLDER, "tokenizer")
        cfg, weights = d / CONFIG_NAME, d / WEIGHTS_NAME
        for f in (cfg, weights):
            if not f.is_file():
                raise FileNotFoundError(f"{str(f)!r} is missing; a FlowMo folder holds {CONFIG_NAME} and {WEIGHTS_NAME}"
                                        + ("" if kind in ("tokenizer", "unknown") else f" ({str(d)!r} is {describe_path(d)})"))
        spec, raw = read_config(cfg)
        # save_pretrained writes every field; a missing one would silently take its default
        # (image_size, code_length, the sampler, ... are not visible in the weights)
        missing = [k for k in FlowMoSpec.model_fields if k not in raw and k not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError(f"{cfg} is missing the field(s) {', '.join(missing)} (save_pretrained writes every "
                             "field of the spec; the file was edited or damaged)")
        model = cls(spec)
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{weights} is not a readable safetensors file: {e}") from None
        except Exception as e:  # safetensors raises plain exceptions for some malformed headers
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
    registered by the modules it records (:func:`flowmo.imports.check_recorded_modules`).
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
