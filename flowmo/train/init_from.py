"""Stage 1B's starting point (``train.init_from``): a Stage 1A run folder, one of its checkpoint
folders, or a model folder."""

from __future__ import annotations

from pathlib import Path

from ..model import CONFIG_NAME, WEIGHTS_NAME
from ..state_dicts import check_state_dict
from .checkpoint import latest_checkpoint, load_checkpoint

__all__ = ["InitFromMixin"]


class InitFromMixin:
    """:class:`~flowmo.train.Trainer`'s Stage 1B initialisation (it uses its model, EMA,
    renormalisation targets, config and device)."""

    def _load_init(self, path: Path) -> None:
        """Stage 1B's starting point: a run folder, a checkpoint folder or a model folder."""
        from ..folder_kinds import path_kind, wrong_kind

        if path_kind(path) not in (None, "tokenizer-run", "tokenizer-checkpoint", "tokenizer"):
            raise wrong_kind(path, "train.init_from", "a flowmo train run, one of its checkpoints or a tokenizer "
                             "model folder")  # a generator's, a token set, ...: the kind found, named
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
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, weights, str(path))
        self.model.load_state_dict(weights)
