"""``flowmo export``: a training run's weights -> a ``from_pretrained`` folder: a tokenizer model
folder for a ``flowmo train`` run (:func:`flowmo.train.export.export_checkpoint`, also ``flowmo train --export``), a
generator folder for a ``flowmo train-generator`` run
(:func:`flowmo.train.generator_trainer.export_generator`).

    flowmo export RUN_OR_CHECKPOINT --output DIR [--raw] [--step N]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from .command import add_subcommand
from .options import add_common_arguments

__all__ = ["NAME", "add_parser", "run"]

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
    from flowmo.data.folder_kinds import check_outside_run, folder_kind
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
        from flowmo.train.export import export_checkpoint

        path = export_checkpoint(Path(args.run), Path(args.output), weights=weights, step=args.step)
    if not args.quiet:
        print(f"wrote the {WEIGHT_WORDS[weights]} of {args.run} to {path}")
    return 0
