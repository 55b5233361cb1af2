"""`flowmo train` and `flowmo export` (also `python -m flowmo.cli.train`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from flowmo.train.loop import INTERRUPTED_STATUS
from flowmo.cli.options import add_common_arguments
from flowmo.data.folder_kinds import check_folder_kind, check_outside_run
from flowmo.folders.imports import import_modules
from flowmo.train.ema import weights_words
from flowmo.train.evaluation import WEIGHT_WORDS, eval_set_words

__all__ = ["main", "export_main", "export_checkpoint"]


_TRAIN_EPILOG = (
    "Without --config, the --set overrides make the whole config: the model (--set model=PRESET: {presets}) "
    "and train.steps, the one training field without a default, are needed, e.g. "
    "'flowmo train --set model=tiny --set train.steps=200 --out runs/tiny --export runs/tiny/model'; every other "
    "train.* field has a default (flowmo/train/train_spec.py; the EMA --export writes warms up, train.ema.warmup, "
    "so a short run exports an average of its late weights). With --config, the --set overrides edit the file's "
    "config.")


def _train_parser() -> argparse.ArgumentParser:
    from flowmo.presets import PRESETS

    p = argparse.ArgumentParser(prog="flowmo train", description="Train a FlowMo tokenizer (Stage 1A or 1B).",
                                epilog=_TRAIN_EPILOG.format(presets=", ".join(PRESETS)))
    p.add_argument("--config", help="YAML/JSON file with 'model' (a FlowMoSpec or preset name) and 'train' sections "
                                    "(and optionally 'imports'); without it, give --set model=PRESET "
                                    "--set train.steps=N")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, images, eval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.optim.lr=5e-5 (repeatable, applied in order with the "
                        "semantics of FlowMoSpec.replace: --set model.quantizer.name=fsq takes FSQ's defaults)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out, with the run's settings (without --config: "
                        "its config.json); a changed setting is refused naming it, except the few that may change "
                        "(train.steps, cadences, device, ...: flowmo.train.checkpointing.RESUMABLE), which are "
                        "said and recorded in --out's config_changes.json")
    p.add_argument("--export", metavar="DIR",
                   help="after training, write the EMA weights (train.ema; the raw weights when it is disabled: "
                        "the model card says which) as a model folder here (not --out itself nor its "
                        "checkpoints/, e.g. OUT/model; refused before training when it is, or when it holds "
                        "another kind of folder)")
    add_common_arguments(p, device="torch device of the run, short for --set train.device=D (auto: cuda when "
                                   "available, else cpu; default: the config's train.device)", device_default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _train_parser().parse_args(argv)
    from flowmo.train.config import load_config
    from flowmo.train.trainer import Trainer

    if args.config is None and args.resume and (Path(args.out) / "config.json").is_file():
        args.config = str(Path(args.out) / "config.json")  # resuming: the run's own resolved config
    if args.config is None and not args.overrides:
        raise ValueError("give --config FILE (see configs/) and/or --set overrides (without --config: "
                         "--set model=PRESET --set train.steps=N; with --resume, the run's own config.json is "
                         "used when --config is not given)")
    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"train.device={json.dumps(args.device)}")
    if args.quiet:
        overrides.append("train.log.progress=false")
    check_folder_kind(args.out, "tokenizer-run", "--out")  # not a generator run, model folder, ...
    if args.export:  # refused before training, not after it
        check_outside_run(args.export, args.out, "--export", "--out")
        check_folder_kind(args.export, "tokenizer", "--export")
    config = load_config(args.config, overrides, imports=args.imports)
    trainer = Trainer(config, args.out, resume=args.resume, log=(lambda s: None) if args.quiet else None)
    try:
        summary = trainer.fit()
    except BaseException:
        trainer.close(barrier=False)
        raise
    trainer.close()
    if summary.get("interrupted"):
        return INTERRUPTED_STATUS  # not finished: `flowmo train ... && next` must not go on
    if trainer.ctx.main:
        weights = "ema" if config.train.ema.enabled else "raw"
        if args.export:
            path = export_checkpoint(Path(args.out), Path(args.export), weights=weights)
            if not args.quiet:
                print(f"exported the {WEIGHT_WORDS[weights]} of step {trainer.step} to {path}")
        s, e = summary.get("eval_start"), summary.get("eval_end")
        if s and e and not args.quiet:
            for w in WEIGHT_WORDS:
                if f"eval/{w}/psnr" in s and f"eval/{w}/psnr" in e:
                    ps, pe, ss, se = s[f"eval/{w}/psnr"], e[f"eval/{w}/psnr"], s[f"eval/{w}/ssim"], e[f"eval/{w}/ssim"]
                    exported = " (exported)" if args.export and w == weights else ""
                    print(f"{eval_set_words(config.train.data)} PSNR of the {WEIGHT_WORDS[w]}{exported}: {ps:.2f} dB -> {pe:.2f} dB "
                          f"({pe - ps:+.2f} dB); SSIM {ss:.4f} -> {se:.4f}")
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0


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
    from flowmo.model import FlowMo
    from flowmo.folders.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
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


def export_main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="flowmo export", description="Write a run's weights as a from_pretrained folder: "
                                "a tokenizer model folder for a `flowmo train` run, a generator folder for a "
                                "`flowmo train-generator` run.")
    p.add_argument("run", help="a run folder (its newest checkpoint) or a checkpoint folder")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="the model folder to write (config.json + model.safetensors; created if missing; not the "
                        "run folder itself nor its checkpoints/; a tokenizer folder there is overwritten, any other "
                        "kind refused), "
                        "loadable with FlowMo.from_pretrained and every flowmo command's --model")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA")
    p.add_argument("--step", type=int, help="a specific checkpoint step")
    add_common_arguments(p)
    a = p.parse_args(argv)
    import_modules(a.imports)
    run = Path(a.run)
    if (run / "state.json").is_file() and not (run / "checkpoints").is_dir():  # a checkpoint folder
        run = run.parent.parent
    check_outside_run(a.output, run, "--output", "the run folder")
    from flowmo.data.folder_kinds import folder_kind

    weights = "raw" if a.raw else "ema"
    if folder_kind(run) == "generator-run":  # a `flowmo train-generator` run: its generator folder
        from flowmo.train.generator_trainer import export_generator

        path = export_generator(Path(a.run), Path(a.output), weights=weights, step=a.step)
    else:
        path = export_checkpoint(Path(a.run), Path(a.output), weights=weights, step=a.step)
    if not a.quiet:
        print(f"wrote the {WEIGHT_WORDS[weights]} of {a.run} to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
