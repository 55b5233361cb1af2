"""The trainers' checkpoints: what a checkpoint of a run holds (model, optimizer, EMA, counters,
RNG, and what a trainer adds), restoring a run from one, and what a resumed run's config may
change (:data:`RESUMABLE`). The file format is :mod:`flowmo.folders.checkpoints`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor

from ..data.files import atomic_write_text
from ..state_dicts import check_finite, check_state_dict
from flowmo.folders.checkpoints import (
    PREFIX,
    CheckpointError,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prune_checkpoints,
    save_checkpoint,
)
from .config import config_differences, describe_differences
from .counters import Counters

__all__ = ["CheckpointingMixin", "RESUMABLE", "CONFIG_CHANGES"]

CONFIG_CHANGES = "config_changes.json"
"""The run folder's record of the config changes its resumptions accepted: a JSON list of
``{"step": k, "field": "train.steps", "old": 4, "new": 8}``, oldest first; the steps after ``k``
ran with ``new``. ``config.json`` holds the config in force, so the config of any step is
``config.json`` with the later changes undone."""

RESUMABLE: dict[str, str] = {
    "train.steps": "the run's length: with train.optim.decay constant no step's learning rate depends on it, so the "
                   "steps trained are those of a run of the new length (a finished run extended: the EMA's last "
                   "update, at the old end, stood for the steps since the one before it)",
    "train.freeze_encoder_at": "when the encoder stops training, while the run's freeze is still ahead of the "
                               "checkpoint and the new one at or after it (a freeze already applied is part of the "
                               "checkpoint's state)",
    "train.device": "where the run computes; another device's kernels round differently, so the steps after "
                    "the change equal an uninterrupted run's up to rounding, not bitwise",
    "train.threads": "the CPU threads: the same numbers on some CPUs (AMD EPYC here), rounding-level differences on "
                     "others (an Intel Xeon), so as for train.device the steps after the change may equal an "
                     "uninterrupted run's up to rounding only (docs/reliability.md, section 6)",
    "train.max_nonfinite": "when the run gives up on non-finite losses, not what a step computes",
    "train.dist_timeout_s": "how long a collective waits for a dead rank",
    "train.data.workers": "the loader's processes: each item's crop and flip are drawn from (seed, epoch, index) "
                          "whichever process reads it",
    "train.checkpoint": "which checkpoints are saved and kept",
    "train.log": "what is recorded and shown (metrics, images, TensorBoard, progress bar)",
    "train.eval": "the held-out evaluation, which reads the weights and changes none",
    "model.sampler": "how the model decodes (evaluations, the exported folder's default), not its weights or loss",
    "model.sampler_presets": "the model's named samplers, as model.sampler",
    "model.encoder.gradient_checkpointing": "recomputation in the backward pass: the same numbers, less memory",
    "model.decoder.gradient_checkpointing": "recomputation in the backward pass: the same numbers, less memory",
    "imports": "the modules that register components; the components the config names are compared themselves",
}
"""The fields of a run's config (dotted paths; a section stands for all its fields) that a
resumed run may change, each with why the steps already trained stay what they were: every other
change (the optimizer, batch, seed, data, EMA, stage, objective, architecture, ...) is refused,
since the resumed run would match neither the run it continues nor an uninterrupted run of the new
config. Both trainers use it (a field one config lacks never differs)."""


def _resume_refusal(field: str, old: Any, new: Any, step: int, config: dict) -> Optional[str]:
    """None when a resumed run at ``step`` may change ``field`` from ``old`` to ``new``
    (:data:`RESUMABLE` and its conditions); else why not ("" when it is not resumable at all)."""
    key = next((k for k in RESUMABLE if field == k or field.startswith(k + ".")), None)
    if key is None:
        return ""
    if key == "train.steps" and config["train"]["optim"]["decay"] != "constant":
        return (f"with train.optim.decay {config['train']['optim']['decay']!r} every step's learning rate depends on "
                "train.steps, so such a run cannot be extended: train a new run with the longer schedule")
    if key == "train.freeze_encoder_at":
        if old is not None and old <= step:  # applied: the checkpoint holds a frozen encoder (and its optimizer)
            return (f"the encoder was frozen at step {old} of the {step} steps trained, and a checkpoint's frozen "
                    "encoder is not unfrozen; only a freeze at or after the checkpoint's step may move")
        trained = [step if v is None else min(v, step) for v in (old, new)]
        if trained[0] != trained[1]:
            return (f"the {step} steps trained trained the encoder for {trained[0]} of them, not "
                    f"{trained[1]}")
    return None


def _read_history(path: Path) -> list:
    """The run's :data:`CONFIG_CHANGES` record ([] when absent); CheckpointError naming the file
    when it is not a JSON list of {step, field, old, new}."""
    if not path.is_file():
        return []
    try:
        history = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} (the run's record of its config changes) is not valid JSON ({e}); restore it "
                              "or move it away to resume") from None
    if not isinstance(history, list) or not all(
            isinstance(c, dict) and set(c) == {"step", "field", "old", "new"} for c in history):
        raise CheckpointError(f"{path} does not hold a JSON list of {{step, field, old, new}} (the run's record of "
                              "its config changes); restore it or move it away to resume")
    return history


def config_at_step(run: Path, config: dict, step: int) -> dict:
    """The run's config (``config``: its ``config.json`` as JSON data) as it was for the steps up
    to ``step``: the changes :data:`CONFIG_CHANGES` records from resumptions at ``step`` or later
    undone, newest first (a field a change added is removed again)."""
    from .config import ABSENT

    doc = json.loads(json.dumps(config))
    for change in reversed(_read_history(Path(run) / CONFIG_CHANGES)):
        if change["step"] < step:
            continue
        *parents, leaf = change["field"].split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if change["old"] == ABSENT:
            node.pop(leaf, None)
        else:
            node[leaf] = change["old"]
    return doc


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

    # ---------------------------------------------------------------- the config of a resumed run
    def _read_run_config(self, path: Path) -> Any:
        """The config a run recorded (its ``config.json``), as the trainer's config class
        (CheckpointError naming the file when it is not one)."""
        try:
            return type(self.config).model_validate_json(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path} is not this kind of run's config ({str(e).splitlines()[0]}); "
                                  "use another output folder") from None

    def _check_resume_config(self, ckpt: Path) -> None:
        """Resuming from ``ckpt``: compare this run's config with the one the run recorded
        (``config.json``) field by field. The changes :data:`RESUMABLE` allows are kept for
        :meth:`_record_config_changes`; any other change raises CheckpointError naming every
        such field with its old and new value, and the fix. Called on every rank (the run
        folder is shared, as the checkpoints are), so all ranks refuse together."""
        path = self.out / "config.json"
        self._config_changes: Optional[list[dict[str, Any]]] = []
        if not path.is_file():
            if self.ctx.main:
                self._log(f"note: {path} is missing, so this config cannot be compared with the one the run's "
                          "steps were trained with; it is recorded as the run's config from here on")
            return
        old = self._read_run_config(path).model_dump(mode="json")
        new = self.config.model_dump(mode="json")
        step = int(ckpt.name[len(PREFIX):])
        refused, notes = [], []
        for field, a, b in config_differences(old, new):
            why = _resume_refusal(field, a, b, step, new)
            if why is None:
                self._config_changes.append({"step": step, "field": field, "old": a, "new": b})
            else:
                refused.append((field, a, b))
                if why:
                    notes.append(f"{field}: {why}")
        if refused:
            raise CheckpointError(
                f"{self.out} was trained to step {step} with other settings than this config's: "
                f"{describe_differences(refused)}{' (' + '; '.join(notes) + ')' if notes else ''}; a resumed run "
                f"keeps the settings its steps were trained with (what may change: "
                f"flowmo.train.checkpointing.RESUMABLE): resume "
                f"with the run's own config ({path}) or start a new run in another output folder")
        if self._config_changes:  # read before config.json is rewritten: a damaged history loses nothing
            self._config_history = _read_history(self.out / CONFIG_CHANGES)

    def _record_config_changes(self) -> None:
        """(Rank 0, after ``config.json`` was written.) Say the changes a resumed run accepted
        and append them to :data:`CONFIG_CHANGES`; a run that starts at step 0 has no history
        (a stale file is removed)."""
        path = self.out / CONFIG_CHANGES
        changes = getattr(self, "_config_changes", None)
        if changes is None:
            path.unlink(missing_ok=True)
            return
        if not changes:
            return
        atomic_write_text(path, json.dumps(self._config_history + changes, indent=1) + "\n")
        self._log(f"resumed at step {changes[0]['step']} with changed settings (recorded in {path}): "
                  + describe_differences((c["field"], c["old"], c["new"]) for c in changes))

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
