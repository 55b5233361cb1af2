"""Stage 1B's starting point (``train.init_from``): a Stage 1A run folder, one of its checkpoint
folders, or a model folder (a local one, a released model's name or a Hub id). The architecture is
the starting point's: a config's ``model`` section that differs from it is refused naming the
fields (:func:`check_init_architecture`); without one, the starting point's model is taken
(:func:`flowmo.train.config.load_config`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from flowmo.folders.model_folder import CONFIG_NAME, WEIGHTS_NAME
from ..state_dicts import StateDictMismatchError, check_state_dict
from flowmo.folders.checkpoints import latest_checkpoint, load_checkpoint

__all__ = ["InitFromMixin", "resolve_init_from", "init_from_spec", "check_init_architecture"]

_FORMS = "a Stage 1A run folder, one of its checkpoint folders, a model folder"


def resolve_init_from(source: str) -> Path:
    """The local folder ``train.init_from`` names: an existing path as it is, else a released
    model's name (``flowmo_lo``, ...) or a Hub id ``user/repo``, fetched into the cache
    (:func:`flowmo.folders.hub.resolve_model_source`; a local path always wins over a name).

    Raises FileNotFoundError naming ``train.init_from`` and the forms accepted."""
    path = Path(source).expanduser()
    if path.exists():
        return path
    from flowmo.folders.hub import RELEASED, is_repo_id, resolve_model_source

    if source in RELEASED or is_repo_id(source):
        try:
            return resolve_model_source(source)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"train.init_from: {e}") from None
    raise FileNotFoundError(f"train.init_from: {source} does not exist; give {_FORMS}, a released model's name "
                            f"({', '.join(RELEASED)}) or a Hub id 'user/repo'")


def init_from_spec(folder: Path, *, needed: bool = False) -> Optional[Any]:
    """The FlowMoSpec of Stage 1B's starting point ``folder`` (resolved: :func:`resolve_init_from`):
    a model folder's ``config.json``; a run folder's ``config.json`` ``model``; for a checkpoint
    folder, its run's (``RUN/checkpoints/ckpt-N`` -> ``RUN/config.json``).

    None when a run or checkpoint folder records no config (a checkpoint folder outside its run);
    with ``needed`` that is a FileNotFoundError saying to give the config a ``model`` section.
    FileNotFoundError for a folder of none of these kinds; ValueError for an invalid config or a
    folder of another kind (a generator's, a token set: the kind named)."""
    from flowmo.data.folder_kinds import path_kind, wrong_kind
    from .config import read_train_config

    folder = Path(folder)
    if path_kind(folder) not in (None, "tokenizer-run", "tokenizer-checkpoint", "tokenizer"):
        raise wrong_kind(folder, "train.init_from", "a flowmo train run, one of its checkpoints or a tokenizer "
                         "model folder")  # a generator's, a token set, ...: the kind found, named
    if (folder / "checkpoints").is_dir() or (folder / "state.json").is_file():
        if (folder / "checkpoints").is_dir():
            record: Optional[Path] = folder / "config.json"
        else:  # a checkpoint folder: its run's record, when it is inside its run
            record = folder.parent.parent / "config.json" if folder.parent.name == "checkpoints" else None
        if record is not None and record.is_file():
            return read_train_config(record).model
        if needed:
            raise FileNotFoundError(f"train.init_from: {folder} records no model spec (its run's config.json); give "
                                    "the config a model: section with the architecture of its weights")
        return None
    if (folder / CONFIG_NAME).is_file():
        from flowmo.folders.model_folder import read_config

        return read_config(folder / CONFIG_NAME)[0]
    raise FileNotFoundError(f"train.init_from: {folder} is neither {_FORMS.replace(', a model', ' nor a model')}")


def check_init_architecture(spec: Any, init_spec: Any, source: str) -> None:
    """Refuse a model ``spec`` whose architecture (:meth:`flowmo.FlowMoSpec.architecture`)
    differs from that of Stage 1B's starting point ``init_spec`` (read from ``source``).

    The sampler, its presets, the objectives (time sampler, flow loss, post-training) and
    gradient checkpointing may differ: they change neither the weights' shapes nor what they
    mean, and Stage 1B exists to change the objective (and with a few-step objective, the
    sampler). Raises ValueError naming each differing field, the folder's value and the
    config's, and the fix."""
    from .config import config_differences

    diffs = config_differences(init_spec.architecture(), spec.architecture(), "model")
    if diffs:
        fields = ", ".join(f"{p} (folder: {_show(a)}, config: {_show(b)})" for p, a, b in diffs)
        raise ValueError(f"train.init_from {source} holds a model of another architecture than the config's: "
                         f"{fields}; post-training starts from its weights, so drop these fields from the config's "
                         "model: section (or drop model: altogether) to take the folder's")


def _show(value: Any) -> str:
    import json

    return json.dumps(value)


class InitFromMixin:
    """:class:`~flowmo.train.Trainer`'s Stage 1B initialisation (it uses its model, EMA,
    renormalisation targets, config and device)."""

    def _load_init(self, path: Path) -> None:
        """Stage 1B's starting point: a run folder, a checkpoint folder or a model folder (or a
        released name or Hub id); its architecture must be the config's (ValueError naming the
        differing fields)."""
        source = str(path)
        path = resolve_init_from(source)
        init_spec = init_from_spec(path)
        if init_spec is not None:
            check_init_architecture(self.config.model, init_spec, source)
        if (path / "checkpoints").is_dir():
            found = latest_checkpoint(path / "checkpoints")
            if found is None:
                raise FileNotFoundError(f"train.init_from: {path} has no complete checkpoint")
            path = found
        if (path / "state.json").is_file():
            parts, _ = load_checkpoint(path, ["model"] + (["ema"] if (path / "ema.safetensors").is_file() else []))
            weights = parts["model"]
            if (path / "renorm.safetensors").is_file():
                self.targets = load_checkpoint(path, ["renorm"])[0]["renorm"]
            if "ema" in parts and self.tc.ema.enabled:
                self.ema = {k: v.float().to(self.device) for k, v in parts["ema"].items()}
        elif (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
            from safetensors.torch import load_file

            weights = load_file(str(path / WEIGHTS_NAME))
        else:
            raise FileNotFoundError(
                f"train.init_from: {path} is neither a run folder, a checkpoint folder nor a model folder"
            )
        try:
            check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, weights, str(path))
        except StateDictMismatchError as e:
            if init_spec is not None:  # the folder's spec is the config's: its weights do not fit its spec
                raise
            raise StateDictMismatchError(f"{e}; train.init_from's weights are of another architecture than the "
                                         "config's model: section, and the folder records no spec to take it "
                                         "from: give model: the architecture of these weights") from None
        self.model.load_state_dict(weights)
