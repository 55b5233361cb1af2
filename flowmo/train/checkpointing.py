"""The trainer's checkpoints: what a checkpoint of a run holds (model, optimizer, EMA,
renormalisation targets, counters, RNG), restoring a run from one, and Stage 1B's starting point.
The file format is :mod:`flowmo.train.checkpoint`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from ..model import CONFIG_NAME, WEIGHTS_NAME
from ..state_dicts import check_finite, check_state_dict
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prune_checkpoints,
    save_checkpoint,
)
from .counters import Counters

__all__ = ["CheckpointingMixin"]


class CheckpointingMixin:
    """:class:`~flowmo.train.Trainer`'s checkpoint methods (they use its model, optimizer, EMA,
    targets, counters, config and output folder)."""

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0) and prune old ones."""
        if not self.ctx.main:
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer, self._opt_names)
        parts = {
            "model": {k: v for k, v in self.model.state_dict().items()},
            "optimizer": opt_tensors,
            "renorm": self.targets,
        }
        if self.ema:
            parts["ema"] = self.ema
        state = {
            "step": self.step,
            "stage": self.tc.stage,
            "optimizer": opt_meta,
            "encoder_frozen": self.encoder_frozen,
            "ema_step": self.ema_step,
            "data_position": self.step * self.ctx.world * self.tc.optim.grad_accum * self.tc.optim.batch_size,
            "counters": {"nonfinite_total": self.counters.nonfinite_total,
                         "nonfinite_streak": self.counters.nonfinite_streak,
                         "skipped_images": self.counters.skipped_images,
                         "images_seen": self.counters.images_seen},
            "world_size": self.ctx.world,
            "torch_rng": torch.get_rng_state().tolist(),
            "model_fingerprint": self.config.model.fingerprint(),
        }
        path = save_checkpoint(self.ckpt_dir, self.step, parts, state)
        ck = self.tc.checkpoint
        prune_checkpoints(self.ckpt_dir, ck.keep_last, ck.keep_every)
        return path

    def _restore(self, path: Path) -> None:
        try:
            self._restore_from(path)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            # a complete-looking folder with damaged contents: name it, never resume from it
            raise CheckpointError(
                f"{path} is damaged ({type(e).__name__}: {e}); move it away to resume from the previous checkpoint"
            ) from e

    def _restore_from(self, path: Path) -> None:
        ema = self.tc.ema.enabled or (path / "ema.safetensors").is_file()
        required = ["model", "optimizer", "renorm"] + (["ema"] if ema else [])
        parts, state = load_checkpoint(path, required)
        check_finite(parts["model"], str(path / "model.safetensors"))
        if state.get("model_fingerprint") not in (None, self.config.model.fingerprint()):
            raise CheckpointError(f"{path} was written for a different model architecture")
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, parts["model"], str(path))
        self.model.load_state_dict(parts["model"])
        self.step = int(state["step"])
        if "ema" in parts:
            self.ema = {k: v.to(self.device) for k, v in parts["ema"].items()}
        # checkpoints written before ema_step was recorded: the last multiple of ema.every
        self.ema_step = int(state.get("ema_step", self.step - self.step % self.tc.ema.every))
        self.targets = parts.get("renorm", self.targets)
        if state.get("encoder_frozen"):
            self._freeze_encoder()
            self.optimizer = self._make_optimizer()
        optimizer_from_tensors(self.optimizer, self._opt_names, parts["optimizer"], state["optimizer"])
        c = state.get("counters", {})
        self.counters = Counters(c.get("nonfinite_total", 0), c.get("nonfinite_streak", 0),
                                 list(c.get("skipped_images", [])), c.get("images_seen", 0))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if self.ctx.main:
            self._log(f"resumed from {path} at step {self.step}")

    def _load_init(self, path: Path) -> None:
        """Stage 1B's starting point: a run folder, a checkpoint folder or a model folder."""
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
