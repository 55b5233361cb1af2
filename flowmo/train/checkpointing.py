"""What a resumed run may change in its config (:data:`RESUMABLE`), the refusal of any other
change (:func:`resume_changes`), and the run's record of the changes it accepted
(:data:`CONFIG_CHANGES`, :func:`config_at_step`). The trainers save and restore their
checkpoints in :class:`flowmo.train.loop.TrainerBase`; the file format is
:mod:`flowmo.folders.checkpoints`'s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from flowmo.folders.checkpoints import CheckpointError

from .config import ABSENT, config_differences, describe_differences

__all__ = ["RESUMABLE", "CONFIG_CHANGES", "resume_changes", "read_history", "config_at_step"]

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
    "train.compile": "whether the loss runs compiled: the same computation in one fused graph, which rounds "
                     "differently, so as for train.device the steps after the change equal an uninterrupted run's "
                     "up to rounding",
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


def resume_changes(run: Path, old: dict, new: dict, step: int) -> list[dict[str, Any]]:
    """The changes of a run resumed at ``step``: this run's config ``new`` against the one the run
    in folder ``run`` recorded, ``old`` (both as JSON data, ``model_dump(mode="json")``), compared
    field by field, as :data:`CONFIG_CHANGES` entries ``{step, field, old, new}``.

    Raises CheckpointError naming every change :data:`RESUMABLE` does not allow (with its old and
    new value, and why when a condition refuses it) and the fix."""
    accepted, refused, notes = [], [], []
    for field, a, b in config_differences(old, new):
        why = _resume_refusal(field, a, b, step, new)
        if why is None:
            accepted.append({"step": step, "field": field, "old": a, "new": b})
        else:
            refused.append((field, a, b))
            if why:
                notes.append(f"{field}: {why}")
    if refused:
        raise CheckpointError(
            f"{run} was trained to step {step} with other settings than this config's: "
            f"{describe_differences(refused)}{' (' + '; '.join(notes) + ')' if notes else ''}; a resumed run "
            f"keeps the settings its steps were trained with (what may change: "
            f"flowmo.train.checkpointing.RESUMABLE): resume "
            f"with the run's own config ({Path(run) / 'config.json'}) or start a new run in another output folder")
    return accepted


def read_history(path: Path) -> list:
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
    doc = json.loads(json.dumps(config))
    for change in reversed(read_history(Path(run) / CONFIG_CHANGES)):
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


