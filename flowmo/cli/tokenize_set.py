"""``flowmo tokenize --classes``: a class-folder tree (the ImageNet layout: one sub-folder of
images per class) -> a labelled token SET folder (:mod:`flowmo.data.token_shards`), the data of a
class-conditional token generator.

Images are listed by :func:`~flowmo.data.token_shards.class_folder_images` (classes sorted by
folder name, label i = classes[i]; images sorted by class then relative path), each resized and
centre-cropped to the model's image size as the single-file ``tokenize`` does, tokenized in
batches of ``--batch-size`` in the layout ``--layout`` (:func:`~flowmo.data.token_layout.layout_for`)
and written in shards of ``--shard-size`` rows. With ``--hflip`` every image is tokenized twice,
as it is and mirrored left-right; the mirrored row follows its original, its source name ends in
``#hflip`` and the set's ``augment`` records ``hflip``. The set records the tokenizer's
token weights digest (:func:`flowmo.state_dicts.token_weights_digest`, ``tokenizer_weights``),
which a generator trained on it carries, so that it is not decoded by a tokenizer of the same
spec but another encoder.

An existing set is replaced only with ``--overwrite``, and stays complete and readable until the
new one is: the new shards are staged in a hidden folder and moved in, the index written last,
only after every image was tokenized (:class:`~flowmo.data.token_shards.TokenShardWriter`). A
failure midway (an unreadable image) leaves the old set, or nothing, as it was.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .commands import _batches, _Ctx, _load, _resize_note
from .errors import CLIError

__all__ = ["DEFAULT_SHARD_SIZE", "SET_ONLY_OPTIONS", "tokenize_class_folders"]

DEFAULT_SHARD_SIZE = 10_000
SET_ONLY_OPTIONS = ("layout", "shard_size", "hflip", "overwrite")
"""The tokenize options that apply only with --classes (argparse dests)."""


def tokenize_class_folders(args: argparse.Namespace, ctx: _Ctx) -> int:
    import torch

    from flowmo.data.token_layout import layout_for
    from ..data.token_shards import INDEX_NAME, TokenShardWriter, class_folder_images
    from flowmo.cli.io import check_image_header, load_image
    from ..state_dicts import token_weights_digest

    if len(args.input) != 1:
        raise CLIError(f"--classes takes one --input, the class-folder tree (one sub-folder per class); "
                       f"got {len(args.input)} paths")
    if args.groups:
        raise CLIError("--groups is for single token files; with --classes choose the layout with --layout group")
    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():
        raise CLIError(f"output {str(out)!r} exists and is not a folder (with --classes, --output is the token "
                       "set folder)")
    if out.is_dir() and not args.overwrite and ((out / INDEX_NAME).exists() or any(out.glob("shard-*.safetensors"))):
        raise CLIError(f"{str(out)!r} already holds a token set; pass --overwrite to replace it")
    root = Path(args.input[0]).expanduser()
    classes, items = class_folder_images(root, argument="--input")
    _note_suspicious_classes(root, classes, items, ctx)
    args._sizes = [check_image_header(p) for p, _ in items]  # every header checked before any model work
    model, device = _load(args)
    layout = layout_for(model, args.layout or "auto")
    groups = layout.kind == "group"
    hflip = bool(args.hflip)
    size = model.spec.image_size
    names = [p.relative_to(root).as_posix() for p, _ in items]
    writer = TokenShardWriter(out, spec=model.spec, layout=layout, classes=classes,
                              shard_size=args.shard_size or DEFAULT_SHARD_SIZE, augment=("hflip",) if hflip else (),
                              overwrite=bool(args.overwrite), tokenizer_weights=token_weights_digest(model))
    with torch.no_grad(), ctx.progress(len(items), "tokenize") as bar, writer:
        for a, b in _batches(len(items), args.batch_size):
            x = torch.stack([load_image(p, size) for p, _ in items[a:b]]).to(device=device, dtype=model.dtype)
            labels = torch.tensor([label for _, label in items[a:b]], dtype=torch.int64)
            sources = names[a:b]
            if hflip:
                x = torch.cat([x, x.flip(-1)])
            tokens = model.tokenize(x, groups=groups).to("cpu", torch.int64)
            if hflip:  # each original followed by its mirror
                n = b - a
                tokens = torch.stack([tokens[:n], tokens[n:]], dim=1).reshape(2 * n, *tokens.shape[1:])
                labels = labels.repeat_interleave(2)
                sources = [s for name in sources for s in (name, f"{name}#hflip")]
            writer.add(tokens, labels, sources)
            bar.update(b - a)
    _resize_note(args, ctx, size)
    rows = len(items) * (2 if hflip else 1)
    ctx.say(f"wrote a token set of {rows} rows ({len(items)} image{'s' if len(items) != 1 else ''}"
            f"{' and their mirrors' if hflip else ''}, {len(classes)} class{'es' if len(classes) != 1 else ''}, "
            f"layout {layout.kind!r}: {layout.seq_len} tokens of vocabulary {layout.vocab_size}) to {out} "
            f"(model fingerprint {model.spec.fingerprint()})")
    return 0


def _note_suspicious_classes(root: Path, classes: list, items: list, ctx) -> None:
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
