"""The ``flowmo`` command (also ``python -m flowmo``).

Subcommands::

    flowmo reconstruct --model M --input PATHS... --output DIR [sampler options] [--seed S] [--batch-size B]
    flowmo tokenize    --model M --input PATHS... --output FILE.safetensors [--groups]
    flowmo detokenize  --model M --tokens FILE.safetensors --output DIR [sampler options] [--seed S]
    flowmo generate    --generator DIR --tokenizer M --classes NAMES... --per-class N --out DIR [--cfg S]
                       [--steps N] [--temperature T] [--top-k K] [--seed S]   (flowmo.cli.generate)
    flowmo convert     --checkpoint flowmo_lo.pth --output DIR [--raw] [--code-length T] [--image-size S]
    flowmo train ...   (flowmo.cli.train.main)
    flowmo eval ...    (flowmo.cli.eval.main)
    flowmo export ...  (flowmo.cli.train.export_main)
    flowmo train-generator ...  (flowmo.cli.train_generator.main)
    flowmo eval-gen ...  (flowmo.cli.eval_gen.main)

``M`` is a model folder (``FlowMo.save_pretrained``/``flowmo convert``) or a released
``.pth`` checkpoint. Every command takes the same common options (:mod:`flowmo.cli.options`),
listed in its ``--help``: ``--import MODULE`` (repeatable): modules to import first, so that
the components they register (a quantizer, a time grid, ...) are known (found installed, on
PYTHONPATH or in the current folder, for the ``flowmo`` script as for ``python -m flowmo``);
a model folder whose ``config.json`` names an unknown component says which module to import.
``--debug`` shows full tracebacks, ``-q/--quiet`` hides progress bars, summaries and notes
(both also accepted before the subcommand); ``--device`` where a model runs (reconstruct,
tokenize, detokenize, eval, train). The commands that decode (reconstruct, detokenize,
eval) take the same sampler options: ``--sampler PRESET_OR_JSON``, ``--steps``,
``--solver``, ``--grid``, ``--cfg-scale``. Progress bars are shown only on a terminal.

``reconstruct`` and ``tokenize`` resize each input's short side to the model's image size
(bicubic, antialiased) and centre-crop it square, as ``flowmo eval`` and training do; a note
says so once per run when an input was not already of that size.

Errors are reported as one line, ``flowmo <cmd>: error: <message>``, with exit status 2 for
bad input (usage, missing or unreadable files, invalid values) and 1 otherwise.

The code: :mod:`flowmo.cli.parser` (the argument parser), :mod:`flowmo.cli.commands` (the
subcommands run here), :mod:`flowmo.cli.errors` (one-line errors and exit statuses); this
module runs them and hands ``train``, ``eval`` and ``export`` to their own modules.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import traceback
from typing import Any, Optional, Sequence

from flowmo.folders.imports import import_modules
from .commands import _COMMANDS, _Ctx
from .errors import CLIError, _describe, _exit_code, _one_line
from .parser import PROG, build_parser

__all__ = ["main", "CLIError"]

# subcommand -> (module, function); the function takes the remaining argv
DELEGATED: dict[str, tuple[str, str]] = {
    "train": ("flowmo.cli.train", "main"),
    "eval": ("flowmo.cli.eval", "main"),
    "eval-gen": ("flowmo.cli.eval_gen", "main"),
    "export": ("flowmo.cli.train", "export_main"),
    "train-generator": ("flowmo.cli.train_generator", "main"),
}
_GLOBAL_FLAGS = {"--debug", "--quiet", "-q", "--version", "-h", "--help"}


# ----------------------------------------------------------------------------- delegation
def _split_delegated(argv: list[str]) -> Optional[tuple[list[str], str, list[str]]]:
    """(global args, command, rest) when the first non-flag argument is a delegated command."""
    for i, a in enumerate(argv):
        if a in _GLOBAL_FLAGS:
            continue
        if a in DELEGATED:
            return argv[:i], a, argv[i + 1:]
        return None
    return None


def _run_delegated(command: str, rest: list[str], debug: bool) -> int:
    module_name, func_name = DELEGATED[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        parents = {module_name.rsplit(".", k)[0] for k in range(module_name.count(".") + 1)}
        if e.name in parents:
            raise CLIError(f"'flowmo {command}' is unavailable in this installation ({module_name} does not exist)",
                           code=1) from None
        raise CLIError(f"'flowmo {command}' needs the Python package {e.name!r}, which is not installed", code=1) from None
    func = getattr(module, func_name, None)
    if func is None:
        raise CLIError(f"'flowmo {command}' is unavailable in this installation ({module_name}.{func_name} does not exist)",
                       code=1)
    importlib.import_module("flowmo.nets")  # specs naming network distances (lpips_vgg, ...) validate
    kwargs: dict[str, Any] = {}
    try:
        if "debug" in inspect.signature(func).parameters:
            kwargs["debug"] = debug
    except (TypeError, ValueError):
        pass
    result = func(rest, **kwargs)
    return int(result) if isinstance(result, int) else 0


# ----------------------------------------------------------------------------- main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``flowmo`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = None
    debug = "--debug" in argv  # known before parsing, so even parse failures of delegates honour it
    try:
        split = _split_delegated(argv)
        if split is not None:
            globals_, command, rest = split
            build_parser().parse_args([*globals_])  # --help / --version / unknown global flags
            debug = "--debug" in globals_ or "--debug" in rest
            rest = [a for a in rest if a != "--debug"]
            if ("--quiet" in globals_ or "-q" in globals_) and "--" not in rest:
                rest = [*rest, "--quiet"]  # a global --quiet reaches the delegate too
            return _run_delegated(command, rest, debug)
        args = build_parser().parse_args(argv)
        debug = bool(getattr(args, "debug", False))
        command = args.command
        if command is None:
            build_parser().print_help(sys.stderr)
            return 2
        import_modules(args.imports)
        return _COMMANDS[command](args, _Ctx(command, bool(getattr(args, "quiet", False))))
    except SystemExit as e:  # argparse (usage errors: 2, --help: 0) or a delegate's sys.exit
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(f"{PROG}{' ' + command if command else ''}: error: {_one_line(str(e.code))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        hint = (" (no checkpoint was written now: --resume continues from the newest one written before, "
                "every train.checkpoint.every steps; SIGTERM instead saves one and stops)"
                if command in ("train", "train-generator") else "")
        print(f"{PROG}{' ' + command if command else ''}: interrupted{hint}", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"{PROG}{' ' + command if command else ''}: error: {_describe(e)}", file=sys.stderr)
        return _exit_code(e)
