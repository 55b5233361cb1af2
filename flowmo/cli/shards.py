"""``flowmo shards``: an image folder -> tar shards (webdataset's layout) that ``train.data.shards``,
``flowmo eval --data`` and ``flowmo tokenize --input`` read in the folder's order
(:func:`flowmo.data.shard_writer.write_shards`).

    flowmo shards --input FOLDER --output "out/train-%06d.tar" [--max-count N] [--max-size BYTES] [--classes]

Each image becomes one sample holding the file's bytes unchanged; with ``--classes`` a ``.cls``
member holds the index of its top-level folder. An existing shard is never overwritten.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from .command import Context, add_subcommand
from .options import add_common_arguments

__all__ = ["NAME", "add_parser", "run"]

NAME = "shards"


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``shards`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="an image folder -> tar shards",
                       description="Write an image folder into tar shards (webdataset layout) that "
                                   "train.data.shards reads in the folder's order.")
    p.add_argument("--input", required=True, help="the image folder (recursive)")
    p.add_argument("--output", required=True, help="shard path pattern, e.g. 'out/train-%%06d.tar'")
    p.add_argument("--max-count", type=int, default=100_000, help="images per shard (default 100000)")
    p.add_argument("--max-size", type=int, default=3_000_000_000, help="bytes per shard (default 3e9)")
    p.add_argument("--classes", action="store_true", help="write KEY.cls: the index of the top-level class folder")
    add_common_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo shards``; returns 0. :func:`~flowmo.data.shard_writer.write_shards` checks
    the arguments (its messages name ``max_count`` / ``max_size``, said here as the options)."""
    from flowmo.data.shard_writer import write_shards
    from flowmo.folders.imports import import_modules

    ctx = Context(args)
    import_modules(args.imports)
    try:
        paths = write_shards(args.input, args.output, args.max_count, args.max_size, args.classes)
    except ValueError as e:
        raise ValueError(str(e).replace("max_count", "--max-count").replace("max_size", "--max-size")) from None
    ctx.say(f"wrote {len(paths)} shards: {paths[0]} .. {paths[-1]}")
    return 0
