"""The trainers' checkpoints: what a checkpoint of a run holds (model, optimizer, EMA, counters,
RNG, and what a trainer adds) and restoring a run from one. The file format is
:mod:`flowmo.train.checkpoint`'s."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..state_dicts import check_finite, check_state_dict
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prune_checkpoints,
    save_checkpoint,
)
from .counters import Counters

__all__ = ["CheckpointingMixin"]


class CheckpointingMixin:
    """A trainer's checkpoint methods (they use its model, optimizer, EMA, counters, ``tc`` and
    output folder).

    Every checkpoint holds the parts ``model``, ``optimizer`` and (when EMA is on) ``ema``, and
    the state fields ``step``, ``optimizer``, ``ema_step``, ``data_position``, ``counters``,
    ``world_size``, ``torch_rng`` and ``model_fingerprint``. A trainer adds its own through
    the hooks :meth:`_model_fingerprint`, :meth:`_checkpoint_parts`, :meth:`_checkpoint_state`,
    :meth:`_required_parts` and :meth:`_restore_extra`."""

    # ---------------------------------------------------------------- hooks
    def _model_fingerprint(self) -> str:
        """A fingerprint of the trained architecture: a checkpoint of another one is refused."""
        raise NotImplementedError

    def _checkpoint_parts(self) -> dict[str, dict[str, Tensor]]:
        """Extra named tensor dicts to save beside model, optimizer and EMA."""
        return {}

    def _checkpoint_state(self) -> dict[str, Any]:
        """Extra JSON fields of ``state.json``."""
        return {}

    def _required_parts(self) -> list[str]:
        """The extra parts a checkpoint of this trainer must hold."""
        return []

    def _restore_extra(self, parts: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        """Restore the trainer's own parts and state; runs after the model, step and EMA and before
        the optimizer's state is loaded (so it may rebuild the optimizer)."""

    # ---------------------------------------------------------------- save / restore
    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0) and prune old ones."""
        if not self.ctx.main:
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer, self._opt_names)
        parts = {
            "model": {k: v for k, v in self.model.state_dict().items()},
            "optimizer": opt_tensors,
            **self._checkpoint_parts(),
        }
        if self.ema:
            parts["ema"] = self.ema
        state = {
            "step": self.step,
            **self._checkpoint_state(),
            "optimizer": opt_meta,
            "ema_step": self.ema_step,
            "data_position": self.step * self.ctx.world * self.tc.optim.grad_accum * self.tc.optim.batch_size,
            "counters": {"nonfinite_total": self.counters.nonfinite_total,
                         "nonfinite_streak": self.counters.nonfinite_streak,
                         "skipped_images": self.counters.skipped_images,
                         "images_seen": self.counters.images_seen},
            "world_size": self.ctx.world,
            "torch_rng": torch.get_rng_state().tolist(),
            "model_fingerprint": self._model_fingerprint(),
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
        required = ["model", "optimizer"] + self._required_parts() + (["ema"] if ema else [])
        parts, state = load_checkpoint(path, required)
        check_finite(parts["model"], str(path / "model.safetensors"))
        if state.get("model_fingerprint") not in (None, self._model_fingerprint()):
            raise CheckpointError(f"{path} was written for a different model architecture")
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, parts["model"], str(path))
        self.model.load_state_dict(parts["model"])
        self.step = int(state["step"])
        if "ema" in parts:
            self.ema = {k: v.to(self.device) for k, v in parts["ema"].items()}
        # checkpoints written before ema_step was recorded: the last multiple of ema.every
        self.ema_step = int(state.get("ema_step", self.step - self.step % self.tc.ema.every))
        self._restore_extra(parts, state)
        optimizer_from_tensors(self.optimizer, self._opt_names, parts["optimizer"], state["optimizer"])
        c = state.get("counters", {})
        self.counters = Counters(c.get("nonfinite_total", 0), c.get("nonfinite_streak", 0),
                                 list(c.get("skipped_images", [])), c.get("images_seen", 0))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if self.ctx.main:
            self._log(f"resumed from {path} at step {self.step}")
