"""``flowmo generate``: images from a token generator folder and the tokenizer it was trained on.

    flowmo generate --generator DIR --tokenizer DIR --classes NAMES_OR_INDICES --per-class N --out DIR
                    [--cfg S] [--steps N] [--temperature T] [--top-k K] [--seed S] [--batch-size B] [--num-tokens K]
                    [--sampler PRESET_OR_JSON] [--decoder-steps N] [--device D] [--import MODULE] [--overwrite]

Writes one PNG per image (``<class index>_<class name>_<k>.png``; ``sample_<k>.png`` for an
unconditional generator), ``grid.png`` (one row per class, :func:`flowmo.data.grids.save_image_rows`)
and ``generate.json`` (the settings, the generator's forward passes, the files). A tokenizer other
than the one the generator's folder records is refused with the reason. An ``--out`` that already
holds a ``generate.json`` or any image file is refused (old and new images would be mixed, and
``flowmo eval-gen`` would read both) unless ``--overwrite`` is given, which deletes the files the
old ``generate.json`` lists, its grid and itself before the new ones are written (image files it
does not list are refused even then: they are not generate's to delete).
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any, Optional

from .command import Context, add_subcommand
from .errors import CLIError
from .options import DEVICE_HELP, add_common_arguments, positive_int

__all__ = ["NAME", "add_parser", "run"]

NAME = "generate"

RECORD_NAME = "generate.json"
GRID_NAME = "grid.png"


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def _non_negative_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``generate`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="images from a token generator and its tokenizer",
                       description="Sample token sequences with a generator folder (flowmo train-generator / "
                                   "TokenGenerator.save_pretrained) and decode them with the tokenizer its tokens "
                                   "came from (refused, with the reason, for any other tokenizer). Writes one PNG "
                                   f"per image, {GRID_NAME} (one row per class) and {RECORD_NAME} (the settings and "
                                   "forward passes). An --out holding a generate.json or any image file is refused "
                                   "unless --overwrite is given.")
    p.add_argument("--generator", required=True, metavar="DIR", help="the generator folder")
    p.add_argument("--tokenizer", required=True, metavar="DIR_OR_PTH",
                   help="the tokenizer: a model folder (or a released .pth checkpoint) whose tokens the generator "
                        "learned")
    p.add_argument("--classes", nargs="+", default=None, metavar="NAME_OR_INDEX",
                   help="the classes to generate: names the generator records, or indices (a name that is also a "
                        "number means the class of that name), separated by spaces or commas, or 'all'; omit for "
                        "an unconditional generator")
    p.add_argument("--per-class", type=positive_int, default=4, metavar="N", help="images per class (default 4)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help=f"output folder: new, empty, or (with --overwrite) a previous generate's; one holding a "
                        f"{RECORD_NAME} or any image file is refused, so that old and new images are not mixed "
                        "(flowmo eval-gen --generated reads every image of the folder)")
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace a previous generate's output in --out: the files its {RECORD_NAME} lists, "
                        f"{GRID_NAME} and {RECORD_NAME} are deleted before the new ones are written (after "
                        "generating); image files it does not list are refused, not deleted")
    g = p.add_argument_group("generator sampling")
    g.add_argument("--cfg", type=_non_negative_float, default=1.0, metavar="S",
                   help="classifier-free guidance scale of the generator (default 1 = none)")
    g.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="the generator's decoding steps (default: its own; MaskGiT 8, autoregressive: the "
                        "sequence length)")
    g.add_argument("--temperature", type=_non_negative_float, default=1.0, metavar="T",
                   help="sampling temperature (default 1; 0 = argmax)")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="keep the K most likely tokens")
    g.add_argument("--seed", type=_non_negative_int, default=0, metavar="S",
                   help="seed of the token draws and of the decoding noise (image i: flowmo.samplers.noise.image_noise(S, "
                        "[i])) (default 0)")
    g.add_argument("--batch-size", type=positive_int, default=16, metavar="B",
                   help="images per batch (default 16; the token draws depend on it)")
    g.add_argument("--num-tokens", type=positive_int, default=None, metavar="K",
                   help="generate only the first K tokens of each image and decode them with the rest absent (an "
                        "autoregressive generator stops early; ordered tokens: a tokenizer trained with nested "
                        "dropout)")
    d = p.add_argument_group("tokenizer decoding (default: the tokenizer's sampler)")
    d.add_argument("--sampler", default=None, metavar="PRESET_OR_JSON",
                   help="a sampler preset name (release, fast, or one of the tokenizer's own, e.g. distillation-4) "
                        "or sampler fields as JSON (or @file.json)")
    d.add_argument("--decoder-steps", type=positive_int, default=None, metavar="N", help="decoder ODE steps")
    d.add_argument("--decoder-cfg", type=float, default=None, metavar="S",
                   help="the decoder's classifier-free guidance scale (1 = off)")
    add_common_arguments(p, device=DEVICE_HELP)
    return p


def _safe(name: str) -> str:
    """A class name as a file-name part: letters, digits, '.', '-' and '_' (others -> '_')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"


def _class_items(values: list[str]) -> list[str]:
    items = [v.strip() for text in values for v in text.split(",")]
    if any(not v for v in items):
        raise CLIError(f"--classes has an empty entry: {' '.join(values)!r}")
    return items


def _previous_output(out: Path, overwrite: bool) -> list[Path]:
    """The files of a previous ``flowmo generate`` in ``out`` to delete before writing (the
    images its ``generate.json`` lists, then ``grid.png``, then ``generate.json``; [] for a new or
    empty folder). Raises CLIError for an ``out`` holding a record or images without ``overwrite``,
    and, with it, for an unreadable record or image files the record does not list."""
    from flowmo.data.listing import list_folder_images

    if not out.exists():
        return []
    if not out.is_dir():
        raise CLIError(f"--out {str(out)!r} exists and is not a folder")
    record = out / RECORD_NAME
    has_record = record.exists() or record.is_symlink()
    images, not_regular = list_folder_images(out)
    found = [rel for rel, _ in images] + [rel for rel, _, _ in not_regular]
    if not has_record and not found:
        return []
    if not overwrite:
        what = ([RECORD_NAME] if has_record else []) + (
            [f"{len(found)} image file{'s' if len(found) != 1 else ''} ({', '.join(found[:3])}"
             f"{', ...' if len(found) > 3 else ''})"] if found else [])
        raise CLIError(f"--out {str(out)!r} holds {' and '.join(what)}: the new images would be mixed with them "
                       f"(and flowmo eval-gen would read both); give --overwrite to replace a previous generate's "
                       "output, or another folder")
    listed: list[str] = []
    if has_record:
        try:
            doc = json.loads(record.read_text(encoding="utf-8"))
            listed = [entry["file"] for entry in doc["images"]] + [doc.get("grid", GRID_NAME)]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise CLIError(f"--overwrite: {record} is not a readable {RECORD_NAME} ({type(e).__name__}: {e}); "
                           "delete the folder's files yourself or use another folder") from None
        for name in listed:  # plain file names in --out only: a record cannot point elsewhere
            if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
                raise CLIError(f"--overwrite: {record} lists {name!r}, not a file name in --out; delete the "
                               "folder's files yourself or use another folder")
    ours = set(listed) | {GRID_NAME}
    stray = [rel for rel in found if rel not in ours]
    if stray:
        raise CLIError(f"--out {str(out)!r} holds {len(stray)} image file{'s' if len(stray) != 1 else ''} that "
                       f"{'its ' + RECORD_NAME + ' does not list' if has_record else 'no ' + RECORD_NAME + ' lists'} "
                       f"({', '.join(stray[:3])}{', ...' if len(stray) > 3 else ''}); --overwrite deletes only a "
                       "previous generate's files: remove them or use another folder")
    order = [n for n in dict.fromkeys(listed) if n != GRID_NAME] + [GRID_NAME]
    return [p for p in (out / n for n in order) if p.is_file() or p.is_symlink()] + ([record] if has_record else [])


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo generate``; returns 0."""
    import torch

    from flowmo.data.files import atomic_write
    from flowmo.data.grids import save_image_rows
    from flowmo.devices import DistContext
    from flowmo.folders.imports import import_modules
    from flowmo.generators import class_names, generate_images, load_generator, recorded_layout, resolve_classes

    from .io import load_model, require_tokens, resolve_device, save_image
    from .options import sampler_from_args

    ctx = Context(args)
    import_modules(args.imports)
    out = Path(args.out).expanduser()
    previous = _previous_output(out, args.overwrite)  # refused before anything is loaded or generated
    device = resolve_device(args.device, argument="--device", ctx=DistContext())  # one process
    generator = load_generator(args.generator, device=device)
    names = class_names(generator)
    if generator.num_classes:
        if not args.classes:
            listed = f" ({', '.join(names)})" if names else ""
            raise CLIError(f"--classes is required: the generator is class-conditional with {generator.num_classes} "
                           f"classes{listed}")
        try:
            indices = resolve_classes(_class_items(args.classes), generator)
        except ValueError as e:
            raise CLIError(f"--classes: {e}") from None
        rows = [(i, names[i] if names else f"class{i}") for i in indices]
    else:
        if args.classes:
            raise CLIError("--classes: this generator is unconditional (num_classes = 0); omit --classes")
        if args.cfg != 1.0:
            raise CLIError("--cfg must be 1 for an unconditional generator (guidance contrasts a class with none)")
        rows = [(None, "sample")]
    tokenizer = load_model(args.tokenizer, device=device)
    require_tokens(tokenizer, "flowmo generate", "--tokenizer")
    sampler = sampler_from_args(tokenizer.spec.sampler, argparse.Namespace(
        sampler=args.sampler, steps=args.decoder_steps, solver=None, grid=None, cfg_scale=args.decoder_cfg), tokenizer.spec.sampler_presets)
    recorded = recorded_layout(generator.metadata)  # generate_images checks it against the tokenizer
    modelled = None if recorded is None else recorded.tokens  # tokens per image the generator models
    if args.num_tokens is not None and modelled is not None:
        if args.num_tokens > modelled:
            raise CLIError(f"--num-tokens ({args.num_tokens}) must be at most the {modelled} tokens per image the "
                           "generator models")
        if args.num_tokens < modelled and not generator.samples_prefixes:
            raise CLIError(f"--num-tokens: a {type(generator).name} generator samples all its {modelled} tokens at once "
                           "and cannot stop early (an autoregressive one can); for fewer, train one on a token set of "
                           "that many (flowmo tokenize --classes --num-tokens K)")
    n = args.per_class
    labels = None if generator.num_classes == 0 else [i for i, _ in rows for _ in range(n)]
    with ctx.progress(n * len(rows), "generate") as bar:
        result = generate_images(generator, tokenizer, labels, num_images=n if labels is None else None,
                                 steps=args.steps, temperature=args.temperature, cfg_scale=args.cfg, top_k=args.top_k,
                                 seed=args.seed, batch_size=args.batch_size, sampler=sampler,
                                 num_tokens=args.num_tokens, progress=bar.update)
    for path in previous:  # the previous generate's images, grid, then its record (last: a crash keeps it)
        path.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    files, grid_rows = [], []
    for r, (index, name) in enumerate(rows):
        block = result.images[r * n:(r + 1) * n]
        grid_rows.append(block)
        for k in range(n):
            fname = f"sample_{k:03d}.png" if index is None else f"{index}_{_safe(name)}_{k:03d}.png"
            save_image(block[k], out / fname)
            files.append({"file": fname, "class": None if index is None else name, "label": index,
                          "image_id": r * n + k})
    size = tokenizer.spec.image_size
    save_image_rows(grid_rows, out / GRID_NAME, scale=max(1, 64 // size))
    record = {
        "generator": str(Path(args.generator).expanduser()), "generator_name": type(generator).name,
        "generator_weights": generator.metadata.get("weights"),  # "ema (...)" / "raw (...)"; None: not recorded
        "tokenizer": str(Path(args.tokenizer).expanduser()), "tokenizer_fingerprint": tokenizer.spec.fingerprint(),
        "layout": generator.metadata.get("layout"),
        "classes": [{"label": i, "name": name} for i, name in rows],
        "per_class": n,
        "settings": {"cfg": args.cfg, "steps": args.steps, "temperature": args.temperature, "top_k": args.top_k,
                     "seed": args.seed, "batch_size": args.batch_size, "num_tokens": args.num_tokens,
                     "tokens_per_image": args.num_tokens or modelled, "tokenizer_tokens": tokenizer.spec.code_length,
                     "device": str(device),
                     "decoder_sampler": sampler.model_dump(mode="json")},
        "generator_steps": result.steps, "forward_passes": result.forward_passes, "nfe_per_image": result.nfe,
        "decoder_calls_per_image": result.decoder_calls,
        "grid": GRID_NAME, "images": files,
        "torch": torch.__version__, "argv": args.command_line[1:],
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(out / RECORD_NAME, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    ctx.say(f"wrote {len(files)} image{'s' if len(files) != 1 else ''}, {GRID_NAME} and {RECORD_NAME} to {out} "
            f"({result.forward_passes} generator forward passes)")
    return 0
