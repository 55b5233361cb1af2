"""``flowmo eval``: reconstruction metrics of a tokenizer on an image folder, tar shards or the
built-in photos (:func:`flowmo.metrics.evaluator.evaluate_model`).

For several processes, ``torchrun --nproc_per_node N -m flowmo eval ...`` (each rank reconstructs
every N-th image; the metrics are gathered and equal those of one process). See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from .command import add_subcommand
from .options import add_common_arguments, add_num_tokens_argument, add_sampler_arguments, check_num_tokens

__all__ = ["NAME", "add_parser", "run", "main", "load_model", "sampler_from_args"]

NAME = "eval"

SUMMARY_KEYS = ("psnr", "ssim", "lpips_vgg", "lpips_alex", "rfid")


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``eval`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(
        sub, NAME, help="evaluate a tokenizer",
        description="Reconstruction metrics (PSNR, SSIM, LPIPS, rFID, bits per pixel, codebook usage) of a "
                    "FlowMo tokenizer. Writes metrics.json (metrics + protocol), best_worst.png and per_image.csv.")
    p.add_argument("--model", required=True, metavar="DIR_OR_NAME",
                   help="a from_pretrained folder (config.json + model.safetensors), a released .pth checkpoint, a "
                        "released name (flowmo_lo, flowmo_hi) or a Hub repository id user/repo")
    p.add_argument("--raw", action="store_true", help="for a released .pth: the raw instead of the EMA weights")
    p.add_argument("--data", required=True, metavar="FOLDER|SHARDS|builtin",
                   help="an image folder (searched recursively; short side resized to the model's image size, "
                        "centre crop), tar shards of images ('shards/val-{000..009}.tar', or one .tar; items in "
                        "shard order, as training reads them) or 'builtin' (the held-out built-in photos)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted order)")
    p.add_argument("--batch-size", type=int, default=16, help="images per batch and rank (default 16)")
    p.add_argument("--workers", type=int, default=2, help="data-loading processes per rank for a folder (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the decoding noise (default 0): image i (its index in the folder listing, as "
                        "flowmo reconstruct lists a folder) decodes from flowmo.samplers.noise.image_noise(seed, [i]), "
                        "the noise flowmo reconstruct --seed S gives it")
    p.add_argument("--output", default="flowmo_eval", metavar="DIR", help="output folder (default ./flowmo_eval)")
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder with the LPIPS/Inception weight files (default: $FLOWMO_WEIGHTS_DIR, torch hub cache)")
    p.add_argument("--lpips", default="vgg,alex", help="LPIPS heads: 'vgg,alex' (default), 'vgg', 'alex' or 'none'")
    p.add_argument("--no-fid", action="store_true", help="skip rFID")
    p.add_argument("--protocol", choices=("standard", "release"), default="standard",
                   help="standard (default): 8 bits by rounding, Gaussian-window SSIM, PSNR averaged over images, "
                        "bicubic resize; release: as the released FlowMo evaluation (paper Table 1): 8 bits by "
                        "float32 truncation, scikit-image's default SSIM (7x7 uniform window), PSNR over batches of "
                        "5, LPIPS/Inception on the float images, torchvision-style bilinear resize + centre crop "
                        "for a folder. See docs/evaluation.md")
    p.add_argument("--tiled", action="store_true",
                   help="an image folder of any sizes (each at least the model's image size): every image "
                        "reconstructed at its own size in tiles decoded jointly (FlowMo.reconstruct_tiled), one "
                        "image per batch; metrics at the images' sizes (rFID's InceptionV3 resizes to 299 x 299); "
                        "no bits per pixel, codebook usage or best_worst.png (the sizes differ)")
    p.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="with --tiled: pixels shared by neighbouring tiles, at least (default image size / 4)")
    p.add_argument("--tile-batch", type=int, default=None, metavar="N",
                   help="with --tiled: at most N tiles per decoder call (default: all of an image's tiles at once)")
    add_num_tokens_argument(p, "decode from")
    p.add_argument("--examples", type=int, default=8, metavar="N",
                   help="best and worst N in best_worst.png (default 8)")
    p.add_argument("--rank-by", choices=("auto", "lpips_vgg", "lpips_alex", "psnr", "ssim"), default="auto",
                   help="metric ordering best_worst.png (auto: LPIPS-VGG, else LPIPS-Alex, else PSNR)")
    p.add_argument("--bf16", action="store_true", help="reconstruct under bfloat16 autocast (metrics stay float32/64)")
    add_sampler_arguments(p)
    add_common_arguments(p, device="auto (cuda:LOCAL_RANK if available, else cpu), cpu, cuda, ...")
    return p


# ---------------------------------------------------------------------------------------------- pieces
def _hash(path: Path) -> str:
    from flowmo.metrics.evaluator import file_sha256

    return file_sha256(path)


def load_model(path: str, *, raw: bool = False) -> tuple[Any, dict]:
    """A FlowMo (loaded by the library's one loader, :func:`flowmo.cli.io.load_model`: a
    from_pretrained folder or its files, or a released ``.pth``/``.pt``/``.ckpt``/``.bin``) and a
    description of its files, with ``weights``: which weights were loaded (``"ema"`` or ``"raw"``;
    for a folder, what its model card says, :func:`flowmo.folders.card.card_weights`; None when it
    does not say). ``raw``: the released checkpoint's raw weights instead of the EMA ones
    (ValueError for a folder)."""
    from flowmo.cli.io import load_model as _load
    from flowmo.folders.model_folder import CONFIG_NAME, WEIGHTS_NAME
    from flowmo.folders.card import CARD_NAME, card_weights

    p = Path(path).expanduser()
    released = False
    if not p.exists():
        from flowmo.folders.hub import RELEASED, is_repo_id, resolve_model_source

        if path in RELEASED or is_repo_id(path):  # a released name or Hub repository: its local folder
            if raw:
                raise ValueError("--raw applies to a released .pth checkpoint file; a released name loads the EMA "
                                 "weights (download the .pth and give its path for the raw ones)")
            released = path in RELEASED
            p = resolve_model_source(path)
    if p.is_file() and p.name in (WEIGHTS_NAME, CONFIG_NAME):
        p = p.parent
    if p.is_dir() and raw:
        raise ValueError("--raw applies to a released .pth checkpoint, not to a model folder")
    model = _load(p, weights="raw" if raw else "ema")
    if p.is_dir():
        card = p / CARD_NAME
        weights = "ema" if released else card_weights(card.read_text(errors="replace")) if card.is_file() else None
        said = {"ema": "EMA weights", "raw": "raw weights", None: "its model card does not say which weights"}[weights]
        return model, {"path": str(p), "kind": f"from_pretrained folder ({said})", "weights": weights,
                       "files": [p / CONFIG_NAME, p / WEIGHTS_NAME]}
    weights = "raw" if raw else "ema"
    return model, {"path": str(p), "kind": f"released checkpoint ({'raw' if raw else 'EMA'} weights)",
                   "weights": weights, "files": [p]}


def sampler_from_args(model: Any, args: argparse.Namespace):
    """The model's sampler with the command line's edits, validated (the same helper as
    ``flowmo reconstruct`` / ``detokenize``: :func:`flowmo.cli.options.sampler_from_args`).

    ``--sampler`` is a sampler preset name (the model's own, ``spec.sampler_presets``, or a
    global one such as ``fast``: a preset is a complete sampler and
    replaces the model's whole sampler, a custom grid, solver or guidance included) or JSON
    (or @file.json) of changes merged as :meth:`flowmo.FlowMoSpec.replace` merges
    (``{"guidance": {"scale": 2}}`` keeps the interval); then ``--steps``, ``--solver``,
    ``--grid`` and ``--cfg-scale`` edit the result the same way (a new ``--grid`` name takes
    that grid's defaults; the same name keeps its fields)."""
    from .options import sampler_from_args as edited_sampler

    return edited_sampler(model.spec.sampler, args, model.spec.sampler_presets)


def _dist_setup(device_arg: str) -> tuple[int, int, Any, bool]:
    """(world, rank, device, whether the process group was started here), by the library's one
    device rule and process-group set-up (:mod:`flowmo.devices`)."""
    import torch
    import torch.distributed as dist

    from flowmo.devices import DistContext, init_process_group, resolve_device

    ctx = DistContext.from_env()
    device = resolve_device(device_arg, "--device", ctx)  # ValueError naming it: malformed or not here
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = init_process_group(device, ctx)
    world, rank = ctx.world, ctx.rank
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    return world, rank, device, started


def _write_json(path: Path, obj: Any) -> None:
    from flowmo.data.files import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _png(examples: dict, path: Path) -> Optional[Path]:
    import torch

    from flowmo.data.grids import save_image_rows

    best, worst = examples["best"], examples["worst"]
    if not best:
        return None
    as_float = (lambda xs: torch.stack(xs).float() / 127.5 - 1.0)
    rows = [as_float([e["original"] for e in best]), as_float([e["reconstruction"] for e in best]),
            as_float([e["original"] for e in worst]), as_float([e["reconstruction"] for e in worst])]
    return save_image_rows(rows, path)


def _check_native_sizes(folder: Any, ids: list, size: int, skipped: list) -> list:
    """The ids whose files' headers are readable (the others go to ``skipped``, as a folder's
    unreadable images do), all checked before any model work: ValueError naming a file smaller
    than ``size`` in a dimension."""
    from .io import check_image_header

    kept = []
    for i in ids:
        try:
            w, h = check_image_header(folder.files[i])
        except ValueError:
            skipped.append(str(folder.files[i]))
            continue
        if min(w, h) < size:
            raise ValueError(f"--tiled: {str(folder.files[i])!r} is {w} x {h} pixels, smaller than the model's image "
                             f"size ({size}) in a dimension; tiles cannot cover it (resize it up, or leave out "
                             "--tiled to resize every image to the model's size)")
        kept.append(i)
    return kept


def _native_size_images(folder: Any, ids: list, skipped: list) -> Any:
    """(image (1, 3, H, W) at its own size, id tensor (1,)) for every id of the folder listing;
    a file that cannot be decoded goes to ``skipped``."""
    import torch

    from .io import load_image

    for i in ids:
        try:
            x = load_image(folder.files[i], None)
        except ValueError:
            skipped.append(str(folder.files[i]))
            continue
        yield x[None], torch.tensor([i])


def _fmt(v: Any, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if isinstance(v, float) else "unavailable"


# ---------------------------------------------------------------------------------------------- run
def main(argv: Optional[Sequence[str]] = None) -> int:
    """``flowmo eval`` in this process: ``argv`` are the arguments after ``eval``; a failure
    raises (``flowmo eval`` reports it as one line)."""
    return run(add_parser().parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo eval``; returns 0. Writes metrics.json, best_worst.png and per_image.csv in
    ``--output`` (rank 0)."""
    import torch

    from flowmo.data.eval_images import folder_batches, open_images
    from flowmo.data.shards import is_shard_pattern
    from flowmo.folders.imports import import_modules
    from flowmo.metrics.collectives import gather_objects

    import_modules(args.imports)
    t_start = time.time()
    if args.limit is not None and args.limit <= 0:
        raise ValueError(f"--limit must be a positive number of images, got {args.limit}")
    if args.batch_size <= 0:
        raise ValueError(f"--batch-size must be positive, got {args.batch_size}")
    if args.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {args.workers}")
    if args.examples < 0:
        raise ValueError(f"--examples must be >= 0, got {args.examples}")
    heads: tuple[str, ...] = () if args.lpips.strip().lower() == "none" else tuple(
        h.strip() for h in args.lpips.split(",") if h.strip())
    for h in heads:
        if h not in ("vgg", "alex"):
            raise ValueError(f"--lpips takes 'vgg', 'alex', 'vgg,alex' or 'none', got {args.lpips!r}")
    if args.weights_dir is not None and not Path(args.weights_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--weights-dir {args.weights_dir!r} is not a folder")
    data_arg = args.data
    if data_arg != "builtin" and not is_shard_pattern(data_arg) and not Path(data_arg).expanduser().exists():
        raise FileNotFoundError(f"--data {data_arg!r} does not exist (give an image folder, tar shards or 'builtin')")

    from flowmo import __version__
    from flowmo.metrics.conventions import CONVENTIONS, QUANTISATION
    from flowmo.metrics.evaluator import Evaluator
    from flowmo.metrics.run import evaluate_model

    for flag, value in (("--overlap", args.overlap), ("--tile-batch", args.tile_batch)):
        if value is not None and not args.tiled:
            raise ValueError(f"{flag} applies only with --tiled")
    if args.num_tokens is not None and args.tiled:
        raise ValueError("--num-tokens decodes a prefix of whole images' tokens: not with --tiled")
    if args.tile_batch is not None and args.tile_batch < 1:
        raise ValueError(f"--tile-batch must be a positive number of tiles, got {args.tile_batch}")
    if args.tiled and (data_arg == "builtin" or is_shard_pattern(data_arg) or args.protocol == "release"):
        raise ValueError("--tiled evaluates an image folder with the standard protocol (not builtin, tar shards or "
                         "--protocol release)")
    model, model_info = load_model(args.model, raw=args.raw)
    sampler = sampler_from_args(model, args)
    size = model.spec.image_size
    check_num_tokens(args, model)
    if args.overlap is not None and not 0 <= args.overlap < size:
        raise ValueError(f"--overlap must be in [0, {size - 1}] (below the model's image size), got {args.overlap}")

    # the data: every image gets a global id (its index in sorted order)
    source = open_images(data_arg, size, args.protocol)
    names, data_info, crop = source.names, source.info, source.crop
    n_total = len(names) if args.limit is None else min(args.limit, len(names))
    data_info["limit"] = args.limit

    world, rank, device, started = _dist_setup(args.device)
    try:
        model.to(device)
        local_ids = list(range(n_total))[rank::world]
        skipped: list[str] = []
        if args.tiled:
            local_ids = _check_native_sizes(source.folder, local_ids, size, skipped)
            data = _native_size_images(source.folder, local_ids, skipped)
        elif source.folder is None:
            sel = torch.tensor(local_ids, dtype=torch.long)
            data = [(source.images[sel[s:s + args.batch_size]], sel[s:s + args.batch_size])
                    for s in range(0, len(local_ids), args.batch_size)]
        else:
            data = folder_batches(source.folder, local_ids, args.batch_size, args.workers, skipped)
        k = min(args.examples, max(1, n_total // 2)) if args.examples else 0
        evaluator = Evaluator(lpips=heads, fid=not args.no_fid, weights_dir=args.weights_dir, device=device,
                              keep_examples=k, rank_by=None if args.rank_by == "auto" else args.rank_by,
                              protocol=args.protocol)
        autocast = torch.bfloat16 if args.bf16 else None
        metrics = evaluate_model(model, data, evaluator=evaluator, sampler=sampler, seed=args.seed, device=device,
                                 batch_size=args.batch_size, autocast_dtype=autocast,
                                 progress=not args.quiet and sys.stderr.isatty(),
                                 total=len(local_ids), tiled=args.tiled, overlap=args.overlap,
                                 tile_batch=args.tile_batch, num_tokens=args.num_tokens)
        per_image = evaluator.per_image()
        examples = evaluator.examples()
        if world > 1:
            skipped = sorted(s for part in gather_objects(skipped, world) for s in part)
        if rank != 0:
            return 0

        out = Path(args.output).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        png = None if args.tiled else _png(examples, out / "best_worst.png")
        csv_path = out / "per_image.csv"
        cols = [c for c in ("psnr", "ssim", "lpips_vgg", "lpips_alex", "mse") if c in per_image]
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "image"] + cols)
            for j, i in enumerate(per_image["id"].tolist()):
                w.writerow([i, names[i]] + [repr(float(per_image[c][j])) for c in cols])

        data_info["skipped_unreadable"] = skipped
        describe = (lambda e: {"id": e["id"], "image": names[e["id"]], examples["ranked_by"]: e["value"]})
        protocol = {
            "n_images": metrics["n_images"],
            "data": data_info,
            "crop": {"image_size": None, "method": "none (--tiled): each image at its own size, RGB (EXIF orientation "
                                                  "applied, transparency on white)"} if args.tiled else crop,
            "metric_protocol": {
                "name": args.protocol,
                "description": ("the released FlowMo evaluation's conventions (flowmo/evaluate.py of the release, "
                                "the paper's Table 1)" if args.protocol == "release" else
                                "this library's standard conventions"),
                "quantisation": QUANTISATION[args.protocol],
                "conventions": dict(CONVENTIONS[args.protocol]),
            },
            "quantisation": QUANTISATION[args.protocol],
            "sampler": sampler.model_dump(mode="json"),
            "tiled": {"overlap": size // 4 if args.overlap is None else args.overlap,
                      "decode": "joint (FlowMo.reconstruct_tiled)"} if args.tiled else None,
            "seed": args.seed,
            "num_tokens": args.num_tokens,
            "noise": f"image i decodes from torch.randn({'3, H, W (its size)' if args.tiled else '3, S, S'}) of a CPU torch.Generator seeded from "
                     "numpy SeedSequence([seed, i]) (flowmo.metrics.image_noise)",
            "weights": evaluator.weight_files(hashes=True),
            "model": {
                "path": model_info["path"], "kind": model_info["kind"], "weights": model_info["weights"],
                "fingerprint": model.spec.fingerprint(),
                "parameters": sum(p.numel() for p in model.parameters()),
                "files": [{"path": str(f), "sha256": _hash(f)} for f in model_info["files"]],
                "spec": model.spec.model_dump(mode="json"),
            },
            "device": str(device), "world_size": world, "batch_size_per_rank": 1 if args.tiled else args.batch_size,
            "autocast": "bfloat16" if args.bf16 else None,
            "versions": {"flowmo": __version__, "torch": torch.__version__, "python": platform.python_version()},
            "command": args.command_line,
            "wall_seconds": time.time() - t_start,
        }
        result = {
            "metrics": metrics,
            "protocol": protocol,
            "best_worst": {"ranked_by": examples["ranked_by"],
                           "png_rows": None if png is None else
                           "best originals, best reconstructions, worst originals, worst reconstructions",
                           "best": [describe(e) for e in examples["best"]],
                           "worst": [describe(e) for e in examples["worst"]]},
            "outputs": {"metrics": str(out / "metrics.json"), "best_worst_png": None if png is None else str(png),
                        "per_image_csv": str(csv_path)},
        }
        _write_json(out / "metrics.json", result)
        if not args.quiet:
            line = ", ".join(f"{k.upper().replace('_', '-')} {_fmt(metrics.get(k), 3 if k in ('psnr', 'rfid') else 4)}"
                             for k in SUMMARY_KEYS if k in metrics)
            bpp = metrics["bits_per_pixel"]
            code = ("tiled: no bits per pixel" if args.tiled else  # a continuous bottleneck has no bits
                    "continuous" if bpp is None else f"{bpp:.4f} bpp")
            print(f"{model_info['path']}, {model_info['kind']}; {metrics['n_images']} images, "
                  f"{code}, {args.protocol} protocol: {line}")
            for k in SUMMARY_KEYS:
                v = metrics.get(k)
                if isinstance(v, dict) and v.get("missing"):
                    print(f"  {k} unavailable: missing {', '.join(v['missing'])}")
            print(f"wrote {out / 'metrics.json'}" + (f", {png}" if png else "") + f", {csv_path}")
        return 0
    finally:
        if started:
            import torch.distributed as dist

            dist.destroy_process_group()
