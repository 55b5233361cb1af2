"""The ``flowmo`` command (also ``python -m flowmo``).

Subcommands::

    flowmo reconstruct --model M --input PATHS... --output DIR [sampler options] [--seed S] [--batch-size B]
    flowmo tokenize    --model M --input PATHS... --output FILE.safetensors [--groups]
    flowmo detokenize  --model M --tokens FILE.safetensors --output DIR [sampler options] [--seed S]
    flowmo convert     --checkpoint flowmo_lo.pth --output DIR [--raw] [--code-length T] [--image-size S]
    flowmo train ...   (flowmo.train.cli.main)
    flowmo eval ...    (flowmo.eval.cli.main)
    flowmo export ...  (flowmo.train.cli.export_main)

``M`` is a model folder (``FlowMo.save_pretrained``/``flowmo convert``) or a released
``.pth`` checkpoint. Every command takes the same common options (:mod:`flowmo.cli_common`),
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
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from .cli_common import add_common_arguments, add_sampler_arguments, positive_int, sampler_from_args
from .imports import import_modules

__all__ = ["main", "CLIError"]

PROG = "flowmo"

# subcommand -> (module, function); the function takes the remaining argv
DELEGATED: dict[str, tuple[str, str]] = {
    "train": ("flowmo.train.cli", "main"),
    "eval": ("flowmo.eval.cli", "main"),
    "export": ("flowmo.train.cli", "export_main"),
}
_DELEGATED_HELP = {
    "train": "train a tokenizer (Stage 1A/1B); see 'flowmo train --help'",
    "eval": "evaluate a tokenizer; see 'flowmo eval --help'",
    "export": "write a training run's weights as a model folder; see 'flowmo export --help'",
}
_GLOBAL_FLAGS = {"--debug", "--quiet", "-q", "--version", "-h", "--help"}


class CLIError(Exception):
    """A failure reported as one line; ``code`` is the exit status (2: bad input)."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------- errors
_INPUT_ERRORS: tuple[type[BaseException], ...] = (
    CLIError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError,
    ValueError, TypeError, KeyError,
)


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _describe(e: BaseException) -> str:
    """A one-line description of an exception."""
    try:
        from pydantic import ValidationError
    except ImportError:  # pragma: no cover
        ValidationError = ()  # type: ignore[assignment]
    if isinstance(e, ValidationError):
        parts = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{loc}: {err.get('msg', '')}" if loc else str(err.get("msg", "")))
        return f"invalid {e.title}: " + "; ".join(parts)
    if isinstance(e, KeyError) and e.args:
        msg = str(e.args[0])
    else:
        msg = str(e)
    if isinstance(e, CLIError):
        return _one_line(msg)
    if not isinstance(e, _INPUT_ERRORS) or not msg:
        msg = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
    return _one_line(msg)


def _exit_code(e: BaseException) -> int:
    if isinstance(e, CLIError):
        return e.code
    return 2 if isinstance(e, _INPUT_ERRORS) else 1


# ----------------------------------------------------------------------------- parser
_DEVICE_HELP = "torch device (default: auto = cuda, mps or cpu)"
_RESIZE_HELP = ("each image's short side is resized to the model's image size (bicubic, antialiased) and the "
                "centre square cropped, as flowmo eval and training do; a note says so when an input was not "
                "already of that size")


def _common(p: argparse.ArgumentParser, device: bool) -> None:
    """The common options; ``--debug``/``--quiet`` may also come before the subcommand
    (default SUPPRESS here: the global value stays)."""
    add_common_arguments(p, device=_DEVICE_HELP if device else None, keep_global=True)


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR_OR_PTH",
                   help="a model folder (config.json + model.safetensors) or a released .pth checkpoint")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B", help="images per batch (default 8)")
    g = p.add_argument_group("released .pth checkpoints only (not stored in those files)")
    g.add_argument("--code-length", type=_positive_int, default=256, metavar="T", help="tokens per image (256)")
    g.add_argument("--image-size", type=_positive_int, default=256, metavar="S", help="image size (256)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the decoding noise (default 0): input image i (in the order listed) is decoded from "
                        "the noise flowmo eval --seed S gives image i (flowmo.data.noise.image_noise)")
    add_sampler_arguments(p)


_positive_int = positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="FlowMo image tokenizers: reconstruct, tokenize, detokenize, "
                                            "convert, train, evaluate.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("reconstruct", help="encode and decode images",
                       description="Encode, quantize and decode images; writes PNGs with the inputs' relative names. "
                                   "Inputs: " + _RESIZE_HELP + ".")
    _model_args(p)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (recursive); resized and centre-cropped to the model's image size")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    _sampling_args(p)
    _common(p, device=True)

    p = sub.add_parser("tokenize", help="images -> a token file",
                       description="Tokenize images into a safetensors file (tokens + model fingerprint, spec, "
                                   "sources). Inputs: " + _RESIZE_HELP + ".")
    _model_args(p)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (recursive); resized and centre-cropped to the model's image size")
    p.add_argument("--output", required=True, metavar="FILE", help="output .safetensors file")
    p.add_argument("--groups", action="store_true", help="write entropy-group indices (N, T, G) instead of (N, T)")
    _common(p, device=True)

    p = sub.add_parser("detokenize", help="a token file -> images",
                       description="Decode a token file written by 'flowmo tokenize' with the same model.")
    _model_args(p)
    p.add_argument("--tokens", required=True, metavar="FILE", help="token file (.safetensors)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    _sampling_args(p)
    _common(p, device=True)

    p = sub.add_parser("convert", help="a released .pth checkpoint -> a model folder",
                       description="Convert a released FlowMo checkpoint to a from_pretrained folder.")
    p.add_argument("--checkpoint", required=True, metavar="PTH", help="the released checkpoint (e.g. flowmo_lo.pth)")
    p.add_argument("--output", required=True, metavar="DIR", help="output model folder")
    p.add_argument("--raw", action="store_true", help="the raw weights instead of the EMA weights")
    p.add_argument("--code-length", type=_positive_int, default=256, metavar="T", help="tokens per image (256)")
    p.add_argument("--image-size", type=_positive_int, default=256, metavar="S", help="image size (256)")
    _common(p, device=False)

    for name, help_ in _DELEGATED_HELP.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("flowmo")
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------- helpers
class _Ctx:
    def __init__(self, command: str, quiet: bool):
        self.command = command
        self.quiet = quiet

    def progress(self, total: int, desc: str):
        from tqdm.auto import tqdm

        disable = self.quiet or not sys.stderr.isatty() or total <= 1
        return tqdm(total=total, desc=desc, unit="img", disable=disable, leave=False, file=sys.stderr)

    def say(self, msg: str) -> None:
        if not self.quiet:
            print(msg)

    def note(self, msg: str) -> None:
        """A note about the run, on stderr (hidden by --quiet)."""
        if not self.quiet:
            print(f"{PROG} {self.command}: note: {msg}", file=sys.stderr)


def _load(args: argparse.Namespace):
    from .io import load_model, resolve_device

    device = resolve_device(args.device, argument="--device")
    model = load_model(args.model, device=device, code_length=args.code_length, image_size=args.image_size)
    return model, device


def _sampler(args: argparse.Namespace, model: Any) -> Any:
    """The sampler of a decoding command: the model's, edited by the sampler options."""
    return sampler_from_args(model.spec.sampler, args)


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(i + size, n)


def _images(args: argparse.Namespace):
    """The input images, each header checked before any model work; ``args._sizes`` gets
    their (width, height) for :func:`_resize_note`."""
    from .io import check_image_header, list_images

    files = list_images(args.input)
    args._sizes = [check_image_header(f.path) for f in files]
    return files


def _resize_note(args: argparse.Namespace, ctx: "_Ctx", size: int) -> None:
    """Say once per run (after the images were read: a failed run prints only its error)
    that inputs not of the model's size were resized and centre-cropped."""
    sizes = args._sizes
    other = sum(1 for wh in sizes if wh is not None and tuple(wh) != (size, size))
    if other:
        ctx.note(f"{other} of {len(sizes)} input image{'s' if len(sizes) != 1 else ''} "
                 f"{'were' if other != 1 else 'was'} not {size}x{size}, the model's image size: each was resized "
                 f"(short side to {size} px, bicubic) and centre-cropped to {size}x{size}")


def _output_dir(path: str) -> Path:
    out = Path(path).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


# ----------------------------------------------------------------------------- commands
def _cmd_reconstruct(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from .data.noise import image_noise
    from .io import load_image, output_names, save_image

    files = _images(args)
    names = output_names([f.name for f in files])
    model, device = _load(args)
    sampler = _sampler(args, model)
    out = _output_dir(args.output)
    size = model.spec.image_size
    with torch.no_grad(), ctx.progress(len(files), "reconstruct") as bar:
        for a, b in _batches(len(files), args.batch_size):
            x = torch.stack([load_image(f.path, size) for f in files[a:b]]).to(device=device, dtype=model.dtype)
            noise = image_noise(args.seed, range(a, b), (3, size, size), device=device, dtype=model.dtype)
            y = model.reconstruct(x, noise=noise, sampler=sampler)
            for img, name in zip(y, names[a:b]):
                save_image(img, out / name)
            bar.update(b - a)
    _resize_note(args, ctx, size)
    ctx.say(f"wrote {len(files)} reconstruction{'s' if len(files) != 1 else ''} to {out}")
    return 0


def _cmd_tokenize(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from .io import load_image, write_tokens

    files = _images(args)
    model, device = _load(args)
    if args.groups and not model.quantizer.has_groups:
        raise CLIError(f"--groups needs a quantizer with entropy groups; this model's {model.spec.quantizer.name!r} has none")
    size = model.spec.image_size
    parts = []
    with torch.no_grad(), ctx.progress(len(files), "tokenize") as bar:
        for a, b in _batches(len(files), args.batch_size):
            x = torch.stack([load_image(f.path, size) for f in files[a:b]]).to(device=device, dtype=model.dtype)
            parts.append(model.tokenize(x, groups=args.groups).to("cpu", torch.int64))
            bar.update(b - a)
    tokens = torch.cat(parts)
    _resize_note(args, ctx, size)
    path = write_tokens(args.output, tokens, spec=model.spec, sources=[f.name for f in files], groups=args.groups)
    ctx.say(f"wrote tokens {tuple(tokens.shape)} of {len(files)} image{'s' if len(files) != 1 else ''} to {path} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _cmd_detokenize(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from .data.noise import image_noise
    from .io import output_names, read_tokens, save_image

    tf = read_tokens(args.tokens)
    names = output_names(tf.sources)
    model, device = _load(args)
    fp = model.spec.fingerprint()
    if tf.fingerprint != fp:
        raise CLIError(
            f"tokens in {args.tokens!r} were made by a model with spec fingerprint {tf.fingerprint}, "
            f"but {args.model!r} has fingerprint {fp}; decode them with the model that made them"
        )
    t = model.spec.code_length
    if tf.tokens.shape[1] != t:
        raise CLIError(f"tokens have {tf.tokens.shape[1]} per image but the model expects {t}")
    if tf.groups and not model.quantizer.has_groups:
        raise CLIError(f"the tokens are entropy-group indices but the model's quantizer "
                       f"{model.spec.quantizer.name!r} has no groups")
    sampler = _sampler(args, model)
    out = _output_dir(args.output)
    size = model.spec.image_size
    n = tf.tokens.shape[0]
    with torch.no_grad(), ctx.progress(n, "detokenize") as bar:
        for a, b in _batches(n, args.batch_size):
            tok = tf.tokens[a:b].to(device)
            if tf.groups:
                code = model.quantizer.group_indices_to_codes(tok).to(model.dtype)
            else:
                code = model.tokens_to_code(tok)
            noise = image_noise(args.seed, range(a, b), (3, size, size), device=device, dtype=model.dtype)
            y = model.decode(code, noise=noise, sampler=sampler).images
            for img, name in zip(y, names[a:b]):
                save_image(img, out / name)
            bar.update(b - a)
    ctx.say(f"wrote {n} image{'s' if n != 1 else ''} to {out}")
    return 0


def _cmd_convert(args: argparse.Namespace, ctx: _Ctx) -> int:
    from .compat import convert_release_checkpoint

    ckpt = Path(args.checkpoint).expanduser()
    if not ckpt.is_file():
        raise FileNotFoundError(f"checkpoint {str(ckpt)!r} does not exist")
    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder")
    path = convert_release_checkpoint(ckpt, out, weights="raw" if args.raw else "ema",
                                      code_length=args.code_length, image_size=args.image_size)
    ctx.say(f"wrote the {'raw' if args.raw else 'EMA'} weights of {ckpt} to {path}")
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace, _Ctx], int]] = {
    "reconstruct": _cmd_reconstruct,
    "tokenize": _cmd_tokenize,
    "detokenize": _cmd_detokenize,
    "convert": _cmd_convert,
}


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
    import flowmo.nets  # noqa: F401  specs naming network distances (lpips_vgg, ...) validate
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
        print(f"{PROG}{' ' + command if command else ''}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if debug:
            traceback.print_exc()
        print(f"{PROG}{' ' + command if command else ''}: error: {_describe(e)}", file=sys.stderr)
        return _exit_code(e)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
