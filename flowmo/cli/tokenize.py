"""``flowmo tokenize``: images -> a token file; with ``--classes``, a class-folder tree -> a
labelled token set.

    flowmo tokenize --model M --input PATHS... --output FILE.safetensors [--groups]
    flowmo tokenize --model M --input TREE --output DIR --classes [--layout L] [--shard-size N] [--hflip] [--overwrite]

``--num-tokens K`` keeps the first K tokens of each image (a file or set of prefixes: ordered
tokens of a model trained with nested dropout).

A token file (:mod:`flowmo.data.tokens`) holds the tokens of image files, folders (recursive)
or tar shards (``.tar`` files or brace patterns, items in shard order, each source named
``"<shard>/<member>"``; an unreadable item is refused, naming it, since a row per readable item
would shift the rows against the sources), with the model's fingerprint and token weights digest.

With ``--classes``, ``--input`` is a class-folder tree (the ImageNet layout: one sub-folder of
images per class), listed by :func:`~flowmo.data.token_shards.class_folder_images` (classes
sorted by folder name, label i = classes[i]; images sorted by class then relative path), and
``--output`` a token SET folder (:mod:`flowmo.data.token_shards`), the data of ``flowmo
train-generator``: tokens in the layout ``--layout`` (:func:`~flowmo.data.token_layout.layout_for`),
shards of ``--shard-size`` rows. With ``--hflip`` every image is tokenized twice, as it is and
mirrored left-right; the mirrored row follows its original, its source name ends in ``#hflip``
and the set's ``augment`` records ``hflip``. The set records the tokenizer's token weights
digest, which a generator trained on it carries. An existing set is replaced only with
``--overwrite`` and stays complete and readable until the new one is
(:class:`~flowmo.data.token_shards.TokenShardWriter`): a failure midway leaves it as it was.

Every input is resized (short side) to the model's image size and centre-cropped, as ``flowmo
eval`` and training do.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from .command import Context, add_subcommand
from .errors import CLIError
from .options import (DEVICE_HELP, RESIZE_HELP, add_common_arguments, add_model_arguments, add_num_tokens_argument,
                      add_tiling_arguments, positive_int)

__all__ = ["NAME", "add_parser", "run", "DEFAULT_SHARD_SIZE"]

NAME = "tokenize"

DEFAULT_SHARD_SIZE = 10_000
_SET_ONLY_OPTIONS = ("layout", "shard_size", "hflip", "overwrite")  # argparse dests


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``tokenize`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="images -> a token file (or, with --classes, a labelled token set)",
                       description="Tokenize images into a safetensors file (tokens + model fingerprint, spec, "
                                   "sources). With --classes: tokenize a class-folder tree (the ImageNet layout, one "
                                   "sub-folder of images per class) into a labelled token SET folder (shards + "
                                   "index.json; flowmo/data/token_shards.py), the data of 'flowmo train-generator'. "
                                   "Inputs: " + RESIZE_HELP + ".")
    add_model_arguments(p)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (recursive), or tar shards of images (.tar files or brace "
                        "patterns such as 'train-{000..009}.tar', items in shard order); resized and centre-cropped "
                        "to the model's image size (unless --tiled). With --classes: ONE folder whose sub-folders are the "
                        "classes")
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
    g.add_argument("--shard-size", type=positive_int, default=None, metavar="N",
                   help=f"rows per shard file (default {DEFAULT_SHARD_SIZE})")
    g.add_argument("--hflip", action="store_true",
                   help="also tokenize each image mirrored left-right (its row follows the original's; its source "
                        "name ends in '#hflip'; the set records augment: [hflip])")
    g.add_argument("--overwrite", action="store_true", help="replace a token set already in --output")
    add_num_tokens_argument(p, "write")
    add_tiling_arguments(p, "a token row per tile, the tile grids recorded in the token file (which flowmo "
                            "detokenize decodes back at each image's size)", decodes=False)
    add_common_arguments(p, device=DEVICE_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo tokenize``; returns 0."""
    from flowmo.data.shards import is_shard_pattern
    from flowmo.folders.imports import import_modules

    ctx = Context(args)
    import_modules(args.imports)
    if args.tiled and (args.classes or args.groups):
        raise CLIError(f"--tiled writes single token files of plain tokens: not with {'--classes' if args.classes else '--groups'}")
    if args.overlap is not None and not args.tiled:
        raise CLIError("--overlap applies only with --tiled")
    if args.num_tokens is not None and args.tiled:
        raise CLIError("--num-tokens writes prefixes of whole images' tokens: not with --tiled")
    if args.classes:
        return _tokenize_class_folders(args, ctx)
    for dest in _SET_ONLY_OPTIONS:
        if getattr(args, dest) not in (None, False):
            raise CLIError(f"--{dest.replace('_', '-')} applies only with --classes (a class-folder tree into a "
                           "token set)")
    shards = [is_shard_pattern(p) for p in args.input]
    if any(shards):
        if not all(shards):
            raise CLIError("--input mixes tar shards with other paths; give shards (.tar files or patterns) or images")
        if args.tiled:
            raise CLIError("--tiled reads image files and folders, not tar shards")
        return _tokenize_shards(args, ctx)
    return _tokenize_images(args, ctx)


def _tokenize(model: Any, device: Any, n: int, read: Any, emit: Any, ctx: Context, *, batch_size: int,
              groups: bool, hflip: bool = False) -> None:
    """Tokenize ``n`` images by batches: ``read(a, b)`` gives images a..b-1 (float (b - a, 3, S,
    S) in [-1, 1]), ``emit(a, b, tokens)`` takes their int64 CPU tokens; with ``hflip`` each
    image's row is followed by its mirror's."""
    import torch

    from .io import batches

    with torch.no_grad(), ctx.progress(n, "tokenize") as bar:
        for a, b in batches(n, batch_size):
            x = read(a, b).to(device=device, dtype=model.dtype)
            if hflip:
                x = torch.cat([x, x.flip(-1)])
            tokens = model.tokenize(x, groups=groups).to("cpu", torch.int64)
            if hflip:  # each original followed by its mirror
                tokens = torch.stack([tokens[:b - a], tokens[b - a:]], dim=1).reshape(2 * (b - a), *tokens.shape[1:])
            emit(a, b, tokens)
            bar.update(b - a)


def _tokenize_images(args: argparse.Namespace, ctx: Context) -> int:
    """Image files and folders -> one token file."""
    import torch

    from flowmo.data.tokens import write_tokens
    from flowmo.state_dicts import token_weights_digest

    from .io import input_images, load_image, model_from_args, require_tokens, resize_note
    from .options import check_num_tokens

    model, device = model_from_args(args)
    require_tokens(model, "flowmo tokenize")  # before the inputs: no fixing them for a model without tokens
    check_num_tokens(args, model, ctx)
    files, sizes = input_images(args.input)
    size = model.spec.image_size
    if args.tiled:
        return _tokenize_tiled(args, ctx, model, device, files, sizes)
    read = (lambda a, b: torch.stack([load_image(f.path, size) for f in files[a:b]]))
    parts: list = []
    _tokenize(model, device, len(files), read, lambda a, b, t: parts.append(t), ctx, batch_size=args.batch_size,
              groups=args.groups)
    tokens = torch.cat(parts)[:, :args.num_tokens]  # --num-tokens: the prefixes
    resize_note(ctx, sizes, size)
    path = write_tokens(args.output, tokens, spec=model.spec, sources=[f.name for f in files], groups=args.groups,
                        tokenizer_weights=token_weights_digest(model))
    ctx.say(f"wrote tokens {tuple(tokens.shape)} of {len(files)} image{'s' if len(files) != 1 else ''} to {path} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _tokenize_tiled(args: argparse.Namespace, ctx: Context, model: Any, device: Any, files: list, sizes: list) -> int:
    """Images of any size -> one tiled token file (a row per tile, the grids in its metadata)."""
    import torch

    from flowmo.data.tokens import write_tokens
    from flowmo.state_dicts import token_weights_digest

    from .io import load_image
    from .options import check_tiling_arguments

    check_tiling_arguments(args, model.spec.image_size, sizes, files)
    rows, grids = [], []
    with torch.no_grad(), ctx.progress(len(files), "tokenize") as bar:
        for f in files:
            x = load_image(f.path, None)[None].to(device=device, dtype=model.dtype)
            tiled = model.tokenize_tiled(x, overlap=args.overlap)
            rows.append(tiled.tokens[0].flatten(0, 1).to("cpu", torch.int64))
            grids.append(tiled.grid)
            bar.update(1)
    tokens = torch.cat(rows)
    path = write_tokens(args.output, tokens, spec=model.spec, sources=[f.name for f in files], groups=False,
                        tokenizer_weights=token_weights_digest(model), tiles=grids)
    ctx.say(f"wrote tokens of {len(files)} image{'s' if len(files) != 1 else ''} in {tokens.shape[0]} tiles to {path} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _tokenize_shards(args: argparse.Namespace, ctx: Context) -> int:
    """Tar shards (:class:`flowmo.data.shards.TarShardDataset`, items in shard order, centre crop
    as a folder's) -> one token file, each source named ``"<shard>/<member>"``."""
    import torch

    from flowmo.data.shards import TarShardDataset
    from flowmo.data.tokens import write_tokens
    from flowmo.state_dicts import token_weights_digest

    from .io import model_from_args, require_tokens
    from .options import check_num_tokens

    model, device = model_from_args(args)
    require_tokens(model, "flowmo tokenize")
    check_num_tokens(args, model, ctx)
    ds = TarShardDataset(list(args.input), model.spec.image_size, train=False)
    read = (lambda a, b: torch.stack([ds[i] for i in range(a, b)]))
    parts: list = []
    _tokenize(model, device, len(ds), read, lambda a, b, t: parts.append(t), ctx, batch_size=args.batch_size,
              groups=args.groups)
    tokens = torch.cat(parts)[:, :args.num_tokens]  # --num-tokens: the prefixes
    if ds.bad_paths:
        bad = sorted(ds.bad_paths)
        raise CLIError(f"{len(bad)} item(s) of the shards cannot be read as images: {', '.join(bad[:5])}"
                       f"{' ...' if len(bad) > 5 else ''}; remove them from the shards")
    path = write_tokens(args.output, tokens, spec=model.spec, sources=[ds.name(i) for i in range(len(ds))],
                        groups=args.groups, tokenizer_weights=token_weights_digest(model))
    ctx.say(f"wrote tokens {tuple(tokens.shape)} of {len(ds)} image{'s' if len(ds) != 1 else ''} from "
            f"{len(ds.shards)} shard{'s' if len(ds.shards) != 1 else ''} to {path}")
    return 0


def _tokenize_class_folders(args: argparse.Namespace, ctx: Context) -> int:
    """A class-folder tree -> a labelled token set folder (module docstring)."""
    import torch

    from flowmo.data.token_shards import TokenShardWriter, class_folder_images
    from flowmo.data.token_layout import layout_for
    from flowmo.state_dicts import token_weights_digest

    from .io import check_image_header, load_image, model_from_args, require_tokens, resize_note
    from .options import check_num_tokens

    if len(args.input) != 1:
        raise CLIError(f"--classes takes one --input, the class-folder tree (one sub-folder per class); "
                       f"got {len(args.input)} paths")
    if args.groups:
        raise CLIError("--groups is for single token files; with --classes choose the layout with --layout group")
    model, device = model_from_args(args)
    require_tokens(model, "flowmo tokenize")  # before the inputs: no fixing them for a model without tokens
    root = Path(args.input[0]).expanduser()
    classes, items = class_folder_images(root, argument="--input")
    _note_suspicious_classes(root, classes, items, ctx)
    sizes = [check_image_header(p) for p, _ in items]  # every header checked before tokenizing
    check_num_tokens(args, model, ctx)
    layout = layout_for(model, args.layout or "auto", args.num_tokens)  # --num-tokens: a token set of prefixes
    size = model.spec.image_size
    names = [p.relative_to(root).as_posix() for p, _ in items]
    out = Path(args.output).expanduser()
    writer = TokenShardWriter(out, spec=model.spec, layout=layout, classes=classes,
                              shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
                              augment=("hflip",) if args.hflip else (), overwrite=args.overwrite,
                              tokenizer_weights=token_weights_digest(model))
    read = (lambda a, b: torch.stack([load_image(p, size) for p, _ in items[a:b]]))

    def add(a: int, b: int, tokens: Any) -> None:
        labels = torch.tensor([label for _, label in items[a:b]], dtype=torch.int64)
        sources = names[a:b]
        if args.hflip:
            labels = labels.repeat_interleave(2)
            sources = [s for name in sources for s in (name, f"{name}#hflip")]
        writer.add(tokens[:, :layout.tokens], labels, sources)

    with writer:
        _tokenize(model, device, len(items), read, add, ctx, batch_size=args.batch_size,
                  groups=layout.kind == "group", hflip=args.hflip)
    resize_note(ctx, sizes, size)
    rows = len(items) * (2 if args.hflip else 1)
    ctx.say(f"wrote a token set of {rows} rows ({len(items)} image{'s' if len(items) != 1 else ''}"
            f"{' and their mirrors' if args.hflip else ''}, {len(classes)} class{'es' if len(classes) != 1 else ''}, "
            f"layout {layout.kind!r}: {layout.seq_len} tokens of vocabulary {layout.vocab_size}) to {out} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _note_suspicious_classes(root: Path, classes: list, items: list, ctx: Context) -> None:
    """Notes (not errors) for two easy mistakes: sub-folders left out for holding no image (the
    class indices of the others shift), and classes whose images sit in sub-folders of their own
    (e.g. --input the parent of train/ and test/: the classes would be "train" and "test")."""
    empty = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name not in classes)
    if empty:
        ctx.note(f"{len(empty)} sub-folder(s) of --input hold no image and are not classes: {', '.join(empty[:5])}"
                 f"{', ...' if len(empty) > 5 else ''}")
    nested = sorted({classes[y] for p, y in items if p.parent.name != classes[y] and p.parent.parent.name == classes[y]})
    if nested and len(nested) == len(classes):
        ctx.note(f"every class's images are in sub-folders of it (e.g. {nested[0]}/...): if --input is the parent of "
                 "the class folders (such as the folder holding train/ and test/), give the class folders' parent "
                 "instead")
