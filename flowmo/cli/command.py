"""What a ``flowmo`` subcommand is, and what every subcommand shares.

A subcommand is a module of :mod:`flowmo.cli` listed in :data:`flowmo.cli.SUBCOMMANDS`, with

- ``NAME``: its name (``flowmo NAME ...``);
- ``add_parser(sub=None)``: its argument parser, made by :func:`add_subcommand`: added to the
  ``flowmo`` parser's subparsers ``sub``, or (``sub`` None) alone, to run it in this process;
- ``run(args)``: runs it with the parsed arguments; returns the exit status and raises on
  failure (:func:`flowmo.cli.main` reports the exception as one line, :mod:`flowmo.cli.errors`).

Heavy imports (training, metrics, data sets) stay inside ``run``: ``flowmo --help`` builds every
subcommand's parser and imports no more than ``import flowmo`` does.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional, Sequence

__all__ = ["PROG", "Parser", "Context", "add_subcommand", "TRAINING_INTERRUPTED"]

PROG = "flowmo"

TRAINING_INTERRUPTED = ("no checkpoint was written now: --resume continues from the newest one written before, "
                        "every train.checkpoint.every steps; SIGTERM instead saves one and stops")
"""What ``flowmo train`` / ``train-generator`` say after ``interrupted`` (Ctrl-C, exit status 130)."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``flowmo <cmd>: error: <message> (see '--help')``,
    exit 2) that records the command line parsed as ``args.command_line`` (``["flowmo", "eval",
    ...]``, for the records commands write)."""

    def parse_known_args(self, args: Optional[Sequence[str]] = None, namespace: Any = None):  # type: ignore[override]
        argv = list(sys.argv[1:] if args is None else args)
        namespace, extras = super().parse_known_args(argv, namespace)
        namespace.command_line = [*self.prog.split(), *argv]
        return namespace, extras

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_subcommand(sub: Optional[Any], name: str, *, help: str, interrupted: str = "", **kwargs: Any) -> Parser:
    """The parser of the subcommand ``name``.

    Args:
        sub: the ``flowmo`` parser's subparsers (``add_subparsers()``); None: a parser of the
            subcommand alone (prog ``flowmo NAME``, the arguments after ``NAME``), whose
            ``--debug`` / ``--quiet`` default to False as the ``flowmo`` parser's do.
        name: the subcommand's name.
        help: its one line in ``flowmo --help``.
        interrupted: what ``flowmo NAME`` says after ``interrupted`` when Ctrl-C stops it
            (``args.interrupted``; "" says nothing more).
        kwargs: ``description``, ``epilog``, ... of the parser.
    """
    if sub is None:
        parser = Parser(prog=f"{PROG} {name}", **kwargs)
        parser.set_defaults(command=name, debug=False, quiet=False)
    else:
        parser = sub.add_parser(name, help=help, **kwargs)
    parser.set_defaults(interrupted=interrupted)
    return parser


class Context:
    """What a subcommand shows besides its output files: progress bars (on a terminal only),
    summaries and notes; ``--quiet`` hides them all (errors are still reported)."""

    def __init__(self, args: argparse.Namespace):
        self.command = args.command
        self.quiet = args.quiet

    def progress(self, total: int, desc: str):
        """A tqdm bar of ``total`` images on stderr (disabled when quiet, off a terminal or for one image)."""
        from tqdm.auto import tqdm

        disable = self.quiet or not sys.stderr.isatty() or total <= 1
        return tqdm(total=total, desc=desc, unit="img", disable=disable, leave=False, file=sys.stderr)

    def say(self, msg: str) -> None:
        """A summary line on stdout."""
        if not self.quiet:
            print(msg)

    def note(self, msg: str) -> None:
        """A note about the run on stderr: ``flowmo <cmd>: note: <msg>``."""
        if not self.quiet:
            print(f"{PROG} {self.command}: note: {msg}", file=sys.stderr)
