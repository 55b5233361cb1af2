"""``flowmo export``: a training run's weights -> a ``from_pretrained`` folder: a tokenizer model
folder for a ``flowmo train`` run (:func:`export_checkpoint`, also ``flowmo train --export``), a
generator folder for a ``flowmo train-generator`` run
(:func:`flowmo.train.generator_trainer.export_generator`).

    flowmo export RUN_OR_CHECKPOINT --output DIR [--raw] [--step N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional

from .command import add_subcommand
from .options import add_common_arguments

__all__ = ["NAME", "add_parser", "run", "export_checkpoint"]

NAME = "export"


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``export`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="write a training run's weights as a model folder",
                       description="Write a run's weights as a from_pretrained folder: a tokenizer model folder for "
                                   "a `flowmo train` run, a generator folder for a `flowmo train-generator` run.")
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="the model folder to write (config.json + model.safetensors; created if missing; not the "
                        "run folder itself nor its checkpoints/; a tokenizer folder there is overwritten, any other "
                        "kind refused), loadable with FlowMo.from_pretrained and every flowmo command's --model")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--step", type=int, help="a specific checkpoint step")
    add_common_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo export``; returns 0."""
    from flowmo.folders.imports import import_modules
    from flowmo.folders.kinds import check_outside_run, folder_kind
    from flowmo.train.evaluation import WEIGHT_WORDS

    import_modules(args.imports)
    run_dir = Path(args.run)
    if (run_dir / "state.json").is_file() and not (run_dir / "checkpoints").is_dir():  # a checkpoint folder
        run_dir = run_dir.parent.parent
    check_outside_run(args.output, run_dir, "--output", "the run folder")
    weights = "raw" if args.raw else "ema"
    if folder_kind(run_dir) == "generator-run":  # a `flowmo train-generator` run: its generator folder
        from flowmo.train.generator_trainer import export_generator

        path = export_generator(Path(args.run), Path(args.output), weights=weights, step=args.step)
    else:
        path = export_checkpoint(Path(args.run), Path(args.output), weights=weights, step=args.step)
    if not args.quiet:
        print(f"wrote the {WEIGHT_WORDS[weights]} of {args.run} to {path}")
    return 0


def export_checkpoint(source: Path, out: Path, *, weights: str = "ema", step: Optional[int] = None) -> Path:
    """A run folder (newest or given step) or a checkpoint folder -> a ``from_pretrained`` folder
    holding the ``weights`` (``"ema"``: the EMA, ``"raw"``: the trained weights); its model card
    names them and gives the held-out figures the run recorded of those weights at that step.

    Raises ValueError for an ``out`` that is the run folder or inside its ``checkpoints/`` (the
    run's files would be replaced: :func:`flowmo.folders.kinds.check_outside_run`) or holding
    another kind of folder
    (:meth:`flowmo.FlowMo.save_pretrained`); FileNotFoundError for a missing run, checkpoint or
    record; CheckpointError for EMA weights asked of a run without them.
    """
    from flowmo.folders.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
    from flowmo.folders.kinds import check_outside_run
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
    parts, state = load_checkpoint(ckpt, [part])
    # the config of the exported step (a later --resume may have changed the evaluation or sampler)
    config = type(config).model_validate(config_at_step(run, config.model_dump(mode="json"), int(state.get("step", 0))))
    model = FlowMo(config.model)
    sd = model.state_dict()
    model.load_state_dict({k: parts[part][k].to(v.dtype) for k, v in sd.items()})
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
