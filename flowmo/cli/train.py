"""``flowmo train``: train a FlowMo tokenizer (Stage 1A or 1B) with :class:`flowmo.train.Trainer`.

    flowmo train [--config FILE] --out RUN [--set KEY=VALUE ...] [--resume] [--export DIR] [--device D]

Several processes: ``torchrun --nproc_per_node N -m flowmo train ...``. Ctrl-C stops the run
without a checkpoint (exit status 130); SIGTERM saves one and stops (143).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from .command import TRAINING_INTERRUPTED, add_subcommand
from .options import RESUME_HELP, add_common_arguments, fit, run_overrides

__all__ = ["NAME", "add_parser", "run", "main"]

NAME = "train"

_EPILOG = (
    "Without --config, the --set overrides make the whole config: the model (--set model=PRESET: {presets}) "
    "and train.steps, the one training field without a default, are needed, e.g. "
    "'flowmo train --set model=tiny --set train.steps=200 --out runs/tiny --export runs/tiny/model'; every other "
    "train.* field has a default (flowmo/train/config/schema.py; the EMA --export writes warms up, train.ema.warmup, "
    "so a short run exports an average of its late weights). With --config, the --set overrides edit the file's "
    "config.")


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``train`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    from flowmo.presets import PRESETS

    p = add_subcommand(sub, NAME, help="train a tokenizer (Stage 1A/1B)", interrupted=TRAINING_INTERRUPTED,
                       description="Train a FlowMo tokenizer (Stage 1A or 1B).",
                       epilog=_EPILOG.format(presets=", ".join(PRESETS)))
    p.add_argument("--config", help="YAML/JSON file with 'model' (a FlowMoSpec or preset name) and 'train' sections "
                                    "(and optionally 'imports'); without it, give --set model=PRESET "
                                    "--set train.steps=N")
    p.add_argument("--out", required=True, help="output folder (checkpoints, metrics.jsonl, images, eval)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. --set train.optim.lr=5e-5 (repeatable, applied in order with the "
                        "semantics of FlowMoSpec.replace: --set model.quantizer.name=fsq takes FSQ's defaults)")
    p.add_argument("--resume", action="store_true", help=RESUME_HELP)
    p.add_argument("--export", metavar="DIR",
                   help="after training, write the EMA weights (train.ema; the raw weights when it is disabled: "
                        "the model card says which) as a model folder here (not --out itself nor its "
                        "checkpoints/, e.g. OUT/model; refused before training when it is, or when it holds "
                        "another kind of folder)")
    add_common_arguments(p, device="torch device of the run, short for --set train.device=D (auto: cuda when "
                                   "available, else cpu; default: the config's train.device)", device_default=None)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``flowmo train`` in this process: ``argv`` are the arguments after ``train``; a failure
    raises (``flowmo train`` reports it as one line)."""
    return run(add_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo train``; returns 0, or :data:`flowmo.train.loop.INTERRUPTED_STATUS` (143) when
    SIGTERM stopped the run after saving a checkpoint. The ``--import`` modules are imported by
    :func:`flowmo.train.config.load_config`, which records them in the run's config."""
    from flowmo.data.folder_kinds import check_folder_kind, check_outside_run
    from flowmo.train.config import load_config
    from flowmo.train.evaluation import WEIGHT_WORDS, eval_set_words
    from flowmo.train.loop import INTERRUPTED_STATUS
    from flowmo.train.trainer import Trainer

    from flowmo.train.export import export_checkpoint

    if args.config is None and args.resume and (Path(args.out) / "config.json").is_file():
        args.config = str(Path(args.out) / "config.json")  # resuming: the run's own resolved config
    if args.config is None and not args.overrides:
        raise ValueError("give --config FILE (see configs/) and/or --set overrides (without --config: "
                         "--set model=PRESET --set train.steps=N; with --resume, the run's own config.json is "
                         "used when --config is not given)")
    overrides = run_overrides(args)
    check_folder_kind(args.out, "tokenizer-run", "--out")  # not a generator run, model folder, ...
    if args.export:  # refused before training, not after it
        check_outside_run(args.export, args.out, "--export", "--out")
        check_folder_kind(args.export, "tokenizer", "--export")
    config = load_config(args.config, overrides, imports=args.imports)
    trainer = Trainer(config, args.out, resume=args.resume, log=(lambda s: None) if args.quiet else None)
    summary = fit(trainer)
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
