"""The ``flowmo`` command (also ``python -m flowmo`` and ``python -m flowmo.cli``).

Subcommands, one module each (:data:`SUBCOMMANDS`; what a subcommand module provides:
:mod:`flowmo.cli.command`)::

    flowmo reconstruct     --model M --input PATHS... --output DIR [sampler options] [--seed S]
    flowmo tokenize        --model M --input PATHS... --output FILE.safetensors [--groups] | --classes ...
    flowmo detokenize      --model M --tokens FILE.safetensors --output DIR [sampler options] [--seed S]
    flowmo generate        --generator DIR --tokenizer M --classes NAMES... --per-class N --out DIR [...]
    flowmo convert         --checkpoint flowmo_lo.pth --output DIR [--raw] [--code-length T] [--image-size S]
    flowmo train           [--config FILE] --out RUN [--set KEY=VALUE ...] [--resume] [--export DIR]
    flowmo eval            --model M --data FOLDER|SHARDS|builtin [--output DIR] [...]
    flowmo export          RUN --output DIR [--raw] [--step N]
    flowmo train-generator [--config FILE] --out RUN [--set KEY=VALUE ...] [--resume] [--export DIR]
    flowmo eval-gen        --generated DIR | --generator DIR ... --reference DIR|STATS [...]
    flowmo shards          --input FOLDER --output "out/train-%06d.tar" [--max-count N] [--classes]

``M`` is a model folder (``FlowMo.save_pretrained``/``flowmo convert``), a released ``.pth``
checkpoint, a released name or a Hub repository id. Every command takes the same common options
(:mod:`flowmo.cli.options`), listed in its ``--help``: ``--import MODULE`` (repeatable): modules
to import first, so that the components they register (a quantizer, a time grid, ...) are known
(found installed, on PYTHONPATH or in the current folder, for the ``flowmo`` script as for
``python -m flowmo``); a model folder whose ``config.json`` names an unknown component says which
module to import. ``--debug`` shows full tracebacks, ``-q/--quiet`` hides progress bars,
summaries and notes (both also accepted before the subcommand); ``--device`` where a model runs.
The commands that decode (reconstruct, detokenize, eval) take the same sampler options:
``--sampler PRESET_OR_JSON``, ``--steps``, ``--solver``, ``--grid``, ``--cfg-scale``. Progress bars
are shown only on a terminal.

Errors are reported as one line, ``flowmo <cmd>: error: <message>``, with exit status 2 for bad
input (usage, missing or unreadable files, invalid values) and 1 otherwise; Ctrl-C exits with
130, a training stopped by SIGTERM (after saving a checkpoint) with 143.
"""

from __future__ import annotations

import sys
import traceback
from typing import Optional, Sequence

from . import (convert, detokenize, eval, eval_gen, export, generate, reconstruct, shards, tokenize, train,
               train_generator)
from .command import PROG, Parser
from .errors import CLIError, _describe, _exit_code, _one_line

__all__ = ["main", "CLIError"]

SUBCOMMANDS = (reconstruct, tokenize, detokenize, generate, convert, train, eval, export, train_generator, eval_gen,
               shards)
"""The subcommand modules, in the order ``flowmo --help`` lists them."""

_BY_NAME = {module.NAME: module for module in SUBCOMMANDS}


def build_parser() -> Parser:
    """The ``flowmo`` parser: the global options and every subcommand's parser."""
    parser = Parser(prog=PROG, description="FlowMo image tokenizers: reconstruct, tokenize, detokenize, generate, "
                                           "convert, train, evaluate.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in SUBCOMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``flowmo`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = None
    debug = "--debug" in argv  # known before parsing: a failure while parsing honours it too
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        debug = args.debug
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return _BY_NAME[args.command].run(args)
    except SystemExit as e:  # argparse (usage errors: 2, --help: 0) or a sys.exit in a command
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(f"{_prefix(args)}: error: {_one_line(str(e.code))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        said = f" ({args.interrupted})" if args is not None and args.command and args.interrupted else ""
        print(f"{_prefix(args)}: interrupted{said}", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"{_prefix(args)}: error: {_describe(e)}", file=sys.stderr)
        return _exit_code(e)


def _prefix(args) -> str:
    """``flowmo <cmd>`` once the arguments were parsed, else ``flowmo``."""
    return f"{PROG} {args.command}" if args is not None and args.command else PROG


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flowmo")
    except Exception:
        return "unknown"
