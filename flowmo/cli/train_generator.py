"""``flowmo train-generator``: train a token generator (MaskGiT, autoregressive) on a token set
written by ``flowmo tokenize --classes`` (:class:`flowmo.train.generator_trainer.GeneratorTrainer`).

    flowmo train-generator [--config FILE] --out RUN [--set KEY=VALUE ...] [--resume] [--export DIR] [--device D]

Several processes: ``torchrun --nproc_per_node N -m flowmo train-generator ...``. Ctrl-C stops the
run without a checkpoint (exit status 130); SIGTERM saves one and stops (143).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from .command import TRAINING_INTERRUPTED, add_subcommand
from .options import RESUME_HELP, add_common_arguments, fit, run_overrides

__all__ = ["NAME", "add_parser", "run", "main"]

NAME = "train-generator"

_EPILOG = (
    "The config has a 'generator' section ({name: maskgit | autoregressive, width, depth, heads, "
    "label_dropout, ...}; vocab_size, seq_len and num_classes come from the token set) and a 'train' section "
    "(tokens: the token set folder, steps, seed, device, threads, optim, ema, checkpoint, log; "
    "flowmo/train/config/schema.py). Without --config the --set overrides make the whole config, e.g. "
    "'flowmo train-generator --set generator.name=maskgit --set train.tokens=runs/tokens --set train.steps=500 "
    "--out runs/gen'. See configs/generators/example.yaml.")


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``train-generator`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="train a token generator on a token set", interrupted=TRAINING_INTERRUPTED,
                       description="Train a token generator (MaskGiT, ...) on a labelled token set.", epilog=_EPILOG)
    p.add_argument("--config", help="YAML/JSON file with 'generator' and 'train' sections")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, config.json, token_set.json)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.optim.lr=3e-4 (repeatable, applied in order; a mapping "
                        "value merges: --set generator={depth: 2})")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--export", metavar="DIR",
                   help="after training, write the EMA weights (train.ema; the raw weights when it is disabled: "
                        "the folder's metadata says which) as a generator folder here (config.json + "
                        "model.safetensors, with the token layout, tokenizer fingerprint and spec, and classes); "
                        "not --out itself nor its checkpoints/ (e.g. OUT/model), and not a folder of another kind (a "
                        "tokenizer folder, a run): refused before training")
    add_common_arguments(p, device="torch device of the run, short for --set train.device=D (default: the "
                                   "config's train.device)", device_default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``flowmo train-generator`` in this process: ``argv`` are the arguments after
    ``train-generator``; a failure raises (``flowmo train-generator`` reports it as one line)."""
    return run(add_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo train-generator``; returns 0, or :data:`flowmo.train.loop.INTERRUPTED_STATUS`
    (143) when SIGTERM stopped the run after saving a checkpoint."""
    from flowmo.folders.imports import import_modules
    from flowmo.data.folder_kinds import check_folder_kind, check_outside_run
    from flowmo.train.config import load_generator_config
    from flowmo.train.generator_trainer import GeneratorTrainer, export_generator
    from flowmo.train.loop import INTERRUPTED_STATUS

    check_folder_kind(args.out, "generator-run", "--out")  # not a tokenizer run, model folder, ...
    if args.config is None and args.resume and (Path(args.out) / "config.json").is_file():
        args.config = str(Path(args.out) / "config.json")  # resuming: the run's own resolved config
    if args.config is None and not args.overrides:
        raise ValueError("give --config FILE (see configs/generators/example.yaml) and/or --set overrides "
                         "(with --resume, the run's own config.json is used when --config is not given)")
    import_modules(args.imports)
    overrides = run_overrides(args)
    if args.export:  # refused before training, not after it
        check_outside_run(args.export, args.out, "--export", "--out")
        check_folder_kind(args.export, "generator", "--export")
    config = load_generator_config(args.config, overrides)
    trainer = GeneratorTrainer(config, args.out, resume=args.resume, log=(lambda s: None) if args.quiet else None)
    summary = fit(trainer)
    if summary.get("interrupted"):
        return INTERRUPTED_STATUS  # not finished: `flowmo train ... && next` must not go on
    if trainer.ctx.main:
        if args.export:
            weights = "ema" if config.train.ema.enabled else "raw"
            path = export_generator(Path(args.out), Path(args.export), weights=weights)
            if not args.quiet:
                print(f"exported the {'EMA' if weights == 'ema' else 'raw'} weights of step {trainer.step} to {path}")
        if not args.quiet and summary.get("last_terms"):
            print(f"step {summary['end_step']}: loss {summary['last_terms']['total']:.4f}")
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return 0
