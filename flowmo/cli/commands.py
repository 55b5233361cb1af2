"""The subcommands the ``flowmo`` command runs itself: ``reconstruct``, ``tokenize``,
``detokenize``, ``generate`` (:mod:`flowmo.cli.generate`) and ``convert``, each a function of the parsed arguments and a :class:`_Ctx`
(progress bars, summaries and notes, hidden by ``--quiet``), found by name in :data:`_COMMANDS`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from flowmo.cli.options import sampler_from_args
from .errors import CLIError
from .generate import run_generate
from .parser import PROG


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
    from ..devices import DistContext
    from flowmo.cli.io import load_model, resolve_device

    device = resolve_device(args.device, argument="--device", ctx=DistContext())  # one process
    model = load_model(args.model, device=device, code_length=args.code_length, image_size=args.image_size)
    return model, device


def _sampler(args: argparse.Namespace, model: Any) -> Any:
    """The sampler of a decoding command: the model's, edited by the sampler options."""
    return sampler_from_args(model.spec.sampler, args, model.spec.sampler_presets)


def _batches(n: int, size: int):
    for i in range(0, n, size):
        yield i, min(i + size, n)


def _images(args: argparse.Namespace):
    """The input images, each header checked before any model work; ``args._sizes`` gets
    their (width, height) for :func:`_resize_note`."""
    from flowmo.cli.io import check_image_header, list_images

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


def _refuse_overwriting_inputs(output: str, names: list[str], inputs: list[Path]) -> None:
    """CLIError, before any work, when an output file would replace one of the input images
    (e.g. ``--output`` the input folder itself and a PNG input)."""
    import os

    out = Path(os.path.realpath(Path(output).expanduser()))
    sources = {os.path.realpath(p): p for p in inputs}
    for name in names:
        target = os.path.realpath(out / name)
        if target in sources:
            raise CLIError(f"--output {output!r}: writing {name} would overwrite the input image "
                           f"{str(sources[target])!r}; choose another output folder")


# ----------------------------------------------------------------------------- commands
def _cmd_reconstruct(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from flowmo.samplers.noise import image_noise
    from flowmo.cli.io import load_image, output_names, save_image

    files = _images(args)
    names = output_names([f.name for f in files])
    _refuse_overwriting_inputs(args.output, names, [f.path for f in files])
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

    from flowmo.cli.io import load_image
    from flowmo.data.tokens import write_tokens
    from ..state_dicts import token_weights_digest

    if getattr(args, "classes", False):
        from .tokenize_set import tokenize_class_folders

        return tokenize_class_folders(args, ctx)
    for dest in ("layout", "shard_size", "hflip", "overwrite"):
        if getattr(args, dest, None) not in (None, False):
            raise CLIError(f"--{dest.replace('_', '-')} applies only with --classes (a class-folder tree into a "
                           "token set)")
    from ..data.shards import is_shard_pattern

    if any(is_shard_pattern(p) for p in args.input):
        return _tokenize_shards(args, ctx)
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
    path = write_tokens(args.output, tokens, spec=model.spec, sources=[f.name for f in files], groups=args.groups,
                        tokenizer_weights=token_weights_digest(model))
    ctx.say(f"wrote tokens {tuple(tokens.shape)} of {len(files)} image{'s' if len(files) != 1 else ''} to {path} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _tokenize_shards(args: argparse.Namespace, ctx: _Ctx) -> int:
    """``flowmo tokenize --input SHARDS...``: every image item of the tar shards (a ``.tar`` file or
    brace pattern each; :class:`flowmo.data.shards.TarShardDataset`, items in shard order, centre
    crop as a folder's), its source named ``"<shard>/<member>"``. Unreadable items are refused,
    naming them (a token row per readable item would shift the rows against the sources)."""
    import torch

    from ..data.shards import TarShardDataset, is_shard_pattern
    from flowmo.data.tokens import write_tokens
    from ..state_dicts import token_weights_digest

    if not all(is_shard_pattern(p) for p in args.input):
        raise CLIError("--input mixes tar shards with other paths; give shards (.tar files or patterns) or images")
    model, device = _load(args)
    if args.groups and not model.quantizer.has_groups:
        raise CLIError(f"--groups needs a quantizer with entropy groups; this model's {model.spec.quantizer.name!r} has none")
    ds = TarShardDataset(list(args.input), model.spec.image_size, train=False)
    parts = []
    with torch.no_grad(), ctx.progress(len(ds), "tokenize") as bar:
        for a, b in _batches(len(ds), args.batch_size):
            x = torch.stack([ds[i] for i in range(a, b)]).to(device=device, dtype=model.dtype)
            parts.append(model.tokenize(x, groups=args.groups).to("cpu", torch.int64))
            bar.update(b - a)
    if ds.bad_paths:
        bad = sorted(ds.bad_paths)
        raise CLIError(f"{len(bad)} item(s) of the shards cannot be read as images: {', '.join(bad[:5])}"
                       f"{' ...' if len(bad) > 5 else ''}; remove them from the shards")
    tokens = torch.cat(parts)
    names = [ds.name(i) for i in range(len(ds))]
    path = write_tokens(args.output, tokens, spec=model.spec, sources=names, groups=args.groups,
                        tokenizer_weights=token_weights_digest(model))
    ctx.say(f"wrote tokens {tuple(tokens.shape)} of {len(ds)} image{'s' if len(ds) != 1 else ''} from "
            f"{len(ds.shards)} shard{'s' if len(ds.shards) != 1 else ''} to {path}")
    return 0


def _cmd_detokenize(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from flowmo.samplers.noise import image_noise
    from flowmo.cli.io import output_names, save_image
    from flowmo.data.tokens import read_tokens

    tf = read_tokens(args.tokens)
    names = output_names(tf.sources)
    model, device = _load(args)
    fp = model.spec.fingerprint()
    if tf.fingerprint != fp:
        raise CLIError(
            f"tokens in {args.tokens!r} were made by a model with spec fingerprint {tf.fingerprint}, "
            f"but {args.model!r} has fingerprint {fp}; decode them with the model that made them"
        )
    if tf.tokenizer_weights is not None:  # recorded by 'flowmo tokenize' since the weights digest exists
        from ..state_dicts import makes_the_same_tokens, token_weights_digest

        if not makes_the_same_tokens(tf.tokenizer_weights, model):
            raise CLIError(f"tokens in {args.tokens!r} were made by a model of the same spec but other encoder or "
                           f"quantizer weights (digest {tf.tokenizer_weights[:16]}..., {args.model!r} has "
                           f"{token_weights_digest(model)[:16]}...): same architecture, other weights; decode them "
                           "with the model that made them (or one post-trained from it with the encoder frozen; a file written "
                           "before flowmo recorded the token digest names the whole model's weights, which only that "
                           "exact model matches: re-tokenize the images to use it with a fine-tuned model)")
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
    from flowmo.folders.convert import convert_release_checkpoint

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
    "generate": run_generate,
    "convert": _cmd_convert,
}
