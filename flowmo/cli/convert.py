"""``flowmo convert``: a released FlowMo ``.pth`` checkpoint -> a model folder
(:func:`flowmo.folders.convert.convert_release_checkpoint`).

    flowmo convert --checkpoint flowmo_lo.pth --output DIR [--raw] [--code-length T] [--image-size S]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from .command import Context, add_subcommand
from .errors import CLIError
from .options import add_common_arguments, positive_int

__all__ = ["NAME", "add_parser", "run"]

NAME = "convert"


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``convert`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="a released .pth checkpoint -> a model folder",
                       description="Convert a released FlowMo checkpoint to a from_pretrained folder.")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="the released checkpoint (e.g. flowmo_lo.pth)")
    p.add_argument("--output", required=True, metavar="DIR", help="output model folder")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA weights")
    p.add_argument("--code-length", type=positive_int, default=256, metavar="T", help="tokens per image (256)")
    p.add_argument("--image-size", type=positive_int, default=256, metavar="S", help="image size (256)")
    add_common_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo convert``; returns 0. A missing checkpoint is refused by
    :func:`flowmo.folders.release.load_release_state_dict` (FileNotFoundError)."""
    from flowmo.folders.convert import convert_release_checkpoint
    from flowmo.folders.imports import import_modules

    ctx = Context(args)
    import_modules(args.imports)
    ckpt = Path(args.checkpoint).expanduser()
    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():  # refused before the checkpoint is read
        raise CLIError(f"output {str(out)!r} exists and is not a folder")
    path = convert_release_checkpoint(ckpt, out, weights="raw" if args.raw else "ema",
                                      code_length=args.code_length, image_size=args.image_size)
    ctx.say(f"wrote the {'raw' if args.raw else 'EMA'} weights of {ckpt} to {path}")
    return 0
