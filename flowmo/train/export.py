"""Exporting a tokenizer training run: :func:`export_checkpoint` writes a run's weights (EMA or raw,
newest or given step) as a ``from_pretrained`` model folder whose card names them
(``flowmo export``, ``flowmo train --export``). A generator run: :func:`flowmo.train.generator_trainer.export_generator`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

__all__ = ["export_checkpoint"]


def export_checkpoint(source: Path, out: Path, *, weights: str = "ema", step: Optional[int] = None) -> Path:
    """A run folder (newest or given step) or a checkpoint folder -> a ``from_pretrained`` folder
    holding the ``weights`` (``"ema"``: the EMA, ``"raw"``: the trained weights); its model card
    names them and gives the held-out figures the run recorded of those weights at that step.

    Raises ValueError for an ``out`` that is the run folder or inside its ``checkpoints/`` (the
    run's files would be replaced: :func:`flowmo.data.folder_kinds.check_outside_run`) or holding
    another kind of folder
    (:meth:`flowmo.FlowMo.save_pretrained`); FileNotFoundError for a missing run, checkpoint or
    record; CheckpointError for EMA weights asked of a run without them.
    """
    from flowmo.folders.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
    from flowmo.data.folder_kinds import check_outside_run
    from flowmo.model import FlowMo
    from flowmo.train.checkpointing import config_at_step
    from flowmo.train.config import read_train_config

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt, run = resolve_checkpoint(source, step)
    check_outside_run(out, run, "out", "run")
    cfg_file = run / "config.json"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{cfg_file} is missing (the run's config)")
    config = read_train_config(cfg_file)
    part = "ema" if weights == "ema" and (ckpt / "ema.safetensors").is_file() else "model"
    if weights == "ema" and part == "model":
        raise CheckpointError(f"{ckpt} has no EMA weights (EMA was disabled); use --raw")
    parts, state = load_checkpoint(ckpt, sorted({part, "model"}))
    # the config of the exported step (a later --resume may have changed the evaluation or sampler)
    config = type(config).model_validate(config_at_step(run, config.model_dump(mode="json"), int(state.get("step", 0))))
    model = FlowMo(config.model)
    sd = model.state_dict()
    # the EMA holds the parameters; the buffers (a quantizer's EMA codebook) are the trained model's
    model.load_state_dict({k: parts[part].get(k, parts["model"][k]).to(v.dtype) for k, v in sd.items()})
    return model.save_pretrained(out, card=_card_facts(config, run, int(state.get("step", 0)), weights))


def _card_facts(config: Any, run: Path, step: int, weights: str) -> dict:
    """What the model card says of a run's training and evaluation: the stage, steps, data,
    batch, objective and which weights (``weights``) from its config; the held-out figures
    metrics.jsonl holds of those weights at that step (``eval/<weights>/psnr``, ...; none: "not
    recorded"), so every figure on the card is of the weights in the folder."""
    from flowmo.train.ema import weights_words
    from flowmo.train.evaluation import WEIGHT_WORDS

    tc = config.train
    if tc.data.shards is not None:
        data = f"tar shards {tc.data.shards if isinstance(tc.data.shards, str) else list(tc.data.shards)}"
        held_out = f"the first {tc.eval.images} items of the training shards (trained on: not held out)"
    elif tc.data.folder is not None:
        data, held_out = tc.data.folder, f"the first {tc.eval.images} images of the training folder (trained on: not held out)"
    else:
        data = "the built-in photos (scikit-image, scikit-learn, matplotlib; chelsea and coffee held out)"
        held_out = f"{tc.eval.images} crops of the held-out built-in photos (chelsea, coffee)"
    training = {"stage": tc.stage, "steps": step, "data": data,
                "global batch": tc.optim.batch_size * tc.optim.grad_accum, "weights": weights_words(weights, tc.ema)}
    if tc.stage == "1b":
        training["post-training objective"] = json.dumps(config.model.posttrain.model_dump(mode="json"))
        training["init_from"] = tc.init_from
    evaluation = None
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            mine = {k: v for k, v in rec.items() if k.startswith(f"eval/{weights}/") and isinstance(v, (int, float))}
            if rec.get("step") == step and mine:
                evaluation = mine
    if evaluation:
        n = tc.eval.steps
        sampler = f"sampler at {n} step{'s' if n != 1 else ''} (train.eval.steps)" if n else "sampler"
        evaluation = {**evaluation, "measured on": held_out,
                      "with": f"the {WEIGHT_WORDS[weights]} of step {step} (this folder's weights) and the model's "
                              f"{sampler}"}
    return {"training": training, "evaluation": evaluation}
