"""The ``flowmo`` command's argument parser: the subcommands it runs itself (reconstruct,
tokenize, detokenize, generate (its options in :mod:`flowmo.cli.generate`), convert), their options, and the names of the delegated ones (train,
eval, export), whose own parsers live with them."""

from __future__ import annotations

import argparse

from flowmo.cli.options import add_common_arguments, add_sampler_arguments, positive_int
from .generate import add_generate_parser

__all__ = ["PROG", "build_parser"]


PROG = "flowmo"

_DELEGATED_HELP = {
    "train": "train a tokenizer (Stage 1A/1B); see 'flowmo train --help'",
    "eval": "evaluate a tokenizer; see 'flowmo eval --help'",
    "export": "write a training run's weights as a model folder; see 'flowmo export --help'",
    "train-generator": "train a token generator on a token set; see 'flowmo train-generator --help'",
    "eval-gen": "generation metrics (gFID, sFID, IS, precision/recall); see 'flowmo eval-gen --help'",
}


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


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
    p.add_argument("--model", required=True, metavar="DIR_OR_NAME",
                   help="a model folder (config.json + model.safetensors), a released .pth checkpoint, a released "
                        "name (flowmo_lo, flowmo_hi) or a Hugging Face Hub repository id user/repo (pip install "
                        "'flowmo[hub]')")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="B", help="images per batch (default 8)")
    g = p.add_argument_group("released .pth checkpoints only (not stored in those files)")
    g.add_argument("--code-length", type=_positive_int, default=256, metavar="T", help="tokens per image (256)")
    g.add_argument("--image-size", type=_positive_int, default=256, metavar="S", help="image size (256)")


def _sampling_args(p: argparse.ArgumentParser, item: str = "input image i (inputs in the order given, a "
                   "folder's files sorted by relative name)") -> None:
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help=f"seed of the decoding noise (default 0): {item} is decoded from "
                        "the noise flowmo eval --seed S gives image i (flowmo.samplers.noise.image_noise)")
    add_sampler_arguments(p)


_positive_int = positive_int


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="FlowMo image tokenizers: reconstruct, tokenize, detokenize, "
                                            "generate, convert, train, evaluate.")
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

    p = sub.add_parser("tokenize", help="images -> a token file (or, with --classes, a labelled token set)",
                       description="Tokenize images into a safetensors file (tokens + model fingerprint, spec, "
                                   "sources). With --classes: tokenize a class-folder tree (the ImageNet layout, one "
                                   "sub-folder of images per class) into a labelled token SET folder (shards + "
                                   "index.json; flowmo/data/token_shards.py), the data of 'flowmo train-generator'. "
                                   "Inputs: " + _RESIZE_HELP + ".")
    _model_args(p)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (recursive), or tar shards of images (.tar files or brace "
                        "patterns such as 'train-{000..009}.tar', items in shard order); resized and centre-cropped "
                        "to the model's image size. With --classes: ONE folder whose sub-folders are the classes")
    p.add_argument("--output", required=True, metavar="FILE",
                   help="output .safetensors file; with --classes: the token set folder")
    p.add_argument("--groups", action="store_true", help="write entropy-group indices (N, T, G) instead of (N, T) "
                                                         "(single files; with --classes use --layout group)")
    g = p.add_argument_group("labelled token sets (--classes)")
    g.add_argument("--classes", action="store_true",
                   help="--input is a class-folder tree: class i is the i-th sub-folder holding images (sorted by "
                        "name), every image below it gets label i; --output becomes a token set folder")
    g.add_argument("--layout", choices=("auto", "token", "group"), default=None,
                   help="the generator's view of the tokens: token (one index per latent token), group (LFQ "
                        "entropy-group sub-tokens, token-major) or auto (token when the codebook has at most 2**20 "
                        "entries, else group); default auto")
    g.add_argument("--shard-size", type=_positive_int, default=None, metavar="N",
                   help="rows per shard file (default 10000)")
    g.add_argument("--hflip", action="store_true",
                   help="also tokenize each image mirrored left-right (its row follows the original's; its source "
                        "name ends in '#hflip'; the set records augment: [hflip])")
    g.add_argument("--overwrite", action="store_true", help="replace a token set already in --output")
    _common(p, device=True)

    p = sub.add_parser("detokenize", help="a token file -> images",
                       description="Decode a token file written by 'flowmo tokenize' with the same model.")
    _model_args(p)
    p.add_argument("--tokens", required=True, metavar="FILE", help="token file (.safetensors)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    _sampling_args(p, "row i of the token file")
    _common(p, device=True)

    add_generate_parser(sub)

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
