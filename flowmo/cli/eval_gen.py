"""``flowmo eval-gen``: generation metrics (gFID, sFID, Inception Score, precision/recall) of generated
images against a reference set (:func:`flowmo.metrics.generative.evaluate_generation`).

    flowmo eval-gen --generated DIR --reference DIR|STATS.safetensors [--output DIR]
                    [--save-reference-stats FILE] [--batch-size B] [--device D] [--limit N] [--k K]
                    [--splits S] [--image-size S] [--weights-dir DIR]
    flowmo eval-gen --generator DIR --tokenizer M [--classes ...] --per-class N --reference ... [...]
    flowmo eval-gen --reference DIR --save-reference-stats FILE       (measure the reference set only)

Writes ``metrics.json`` (``{"metrics": ..., "protocol": ...}``, as
:func:`flowmo.metrics.generative.evaluate_generation` returns them) in ``--output`` and prints a
short table. Without the Inception weight file every metric is reported unavailable, naming the
file and where to put it, as ``flowmo eval`` reports rFID.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from .command import add_subcommand
from .options import add_common_arguments, positive_int

__all__ = ["NAME", "add_parser", "run", "NOTHING_MEASURED"]

NAME = "eval-gen"

RECORD_NAME = "metrics.json"


def _non_negative_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not v >= 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``eval-gen`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(
        sub, NAME, help="generation metrics (gFID, sFID, IS, precision/recall)",
        description="Generation metrics of generated images against a reference set with the FID InceptionV3 "
                    "(pt_inception-2015-12-05-6726825d.pth): gFID, sFID, Inception Score, precision and recall "
                    "(Kynkaenniemi et al.). Writes metrics.json (figures + protocol).")
    src = p.add_argument_group("generated images (one of)")
    src.add_argument("--generated", default=None, metavar="DIR", help="a folder of generated images (recursive)")
    src.add_argument("--generator", default=None, metavar="DIR",
                     help="a generator folder: generate the images now (with --tokenizer, --per-class)")
    p.add_argument("--reference", required=True, metavar="DIR|STATS",
                   help="a folder of reference images, or reference statistics saved by --save-reference-stats "
                        "(a .safetensors file)")
    p.add_argument("--save-reference-stats", default=None, metavar="FILE",
                   help="save the reference folder's features and statistics (safetensors + JSON record) for "
                        "later runs; alone (without generated images) only measures the reference set")
    p.add_argument("--output", default="flowmo_eval_gen", metavar="DIR", help="output folder (default ./flowmo_eval_gen)")
    p.add_argument("--batch-size", type=positive_int, default=32, metavar="B",
                   help="images per network call (and per generator batch) (default 32)")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="only the first N images of each folder (sorted order)")
    p.add_argument("--k", type=positive_int, default=3, metavar="K",
                   help="nearest neighbours of precision/recall (default 3, Kynkaenniemi et al.)")
    p.add_argument("--splits", type=positive_int, default=1, metavar="S",
                   help="groups of the Inception Score, mean and std over them, cut from the images shuffled "
                        "with the fixed seed 2020 as torch-fidelity (default 1; the reference code uses 10 over "
                        "50,000 images)")
    p.add_argument("--image-size", type=positive_int, default=None, metavar="S",
                   help="resize folder images' short side to S and centre-crop SxS first (default: as they are); "
                        "every image is then resized to 299x299 bilinearly by the network")
    p.add_argument("--weights-dir", default=None, metavar="DIR",
                   help="folder with pt_inception-2015-12-05-6726825d.pth (default: $FLOWMO_WEIGHTS_DIR, "
                        "torch hub cache)")
    g = p.add_argument_group("generating on the fly (with --generator)")
    g.add_argument("--tokenizer", default=None, metavar="DIR_OR_PTH", help="the tokenizer the generator learned")
    g.add_argument("--classes", nargs="+", default=None, metavar="NAME_OR_INDEX",
                   help="classes to generate (names or indices; default: every class)")
    g.add_argument("--per-class", type=positive_int, default=None, metavar="N", help="images per class")
    g.add_argument("--cfg", type=_non_negative_float, default=1.0, metavar="S",
                   help="the generator's guidance scale (default 1)")
    g.add_argument("--steps", type=positive_int, default=None, metavar="N", help="the generator's decoding steps")
    g.add_argument("--temperature", type=_non_negative_float, default=1.0, metavar="T", help="sampling temperature")
    g.add_argument("--top-k", type=positive_int, default=None, metavar="K", help="keep the K most likely tokens")
    g.add_argument("--seed", type=int, default=0, metavar="S", help="seed of the token draws and decoding noise")
    g.add_argument("--decoder-steps", type=positive_int, default=None, metavar="N",
                   help="the tokenizer decoder's ODE steps (default: its sampler's)")
    add_common_arguments(p, device="auto (cuda, mps or cpu), cpu, cuda, ...")
    return p


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else "unavailable"


def _table(metrics: dict) -> list[str]:
    rows = []
    for key, label in (("gfid", "gFID"), ("sfid", "sFID"), ("inception_score", "IS"), ("precision", "precision"),
                       ("recall", "recall")):
        v = metrics[key]
        if isinstance(v, dict) and v.get("available") is False:
            rows.append(f"  {label:<10} unavailable: missing {', '.join(v['missing'])}")
        elif key == "inception_score":
            rows.append(f"  {label:<10} {v['mean']:.4f} +- {v['std']:.4f} ({v['splits']} split"
                        f"{'s' if v['splits'] != 1 else ''})")
        else:
            rows.append(f"  {label:<10} {_fmt(v)}")
    return rows


def _generate(args: argparse.Namespace, device: Any, progress: bool, ready: Any) -> Optional[tuple[Any, dict]]:
    """Images from ``--generator`` and ``--tokenizer`` (both given: :func:`run` checked) (float32
    (N, 3, S, S) in [-1, 1], CPU) and a record of how they were made; None, without generating,
    when ``ready()`` (called once both are loaded and checked) says False."""
    import torch

    from flowmo.folders.generator_folder import load_generator
    from flowmo.generators.pipeline import class_names, generate_images, resolve_classes

    from .io import load_model, require_tokens
    from .options import sampler_from_args

    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}")
    generator = load_generator(args.generator, device=device)
    if generator.num_classes:
        if args.classes:
            items = [v.strip() for text in args.classes for v in text.split(",") if v.strip()]
            try:
                indices = resolve_classes(items, generator)
            except ValueError as e:
                raise ValueError(f"--classes: {e}") from None
        else:
            indices = list(range(generator.num_classes))
        labels: Optional[list] = [i for i in indices for _ in range(args.per_class)]
    else:
        if args.classes:
            raise ValueError("--classes: this generator is unconditional (num_classes = 0); omit --classes")
        indices, labels = [], None
    tokenizer = load_model(args.tokenizer, device=device)
    require_tokens(tokenizer, "flowmo eval-gen", "--tokenizer")
    if not ready():
        return None
    sampler = sampler_from_args(tokenizer.spec.sampler, argparse.Namespace(
        sampler=None, steps=args.decoder_steps, solver=None, grid=None, cfg_scale=None), tokenizer.spec.sampler_presets)
    from tqdm.auto import tqdm

    total = len(labels) if labels is not None else args.per_class
    with tqdm(total=total, unit="img", disable=not progress, desc="generating", dynamic_ncols=True) as bar:
        out = generate_images(generator, tokenizer, labels, num_images=None if labels is not None else args.per_class,
                              steps=args.steps, temperature=args.temperature, cfg_scale=args.cfg, top_k=args.top_k,
                              seed=args.seed, batch_size=args.batch_size, sampler=sampler, progress=bar.update)
    names = class_names(generator)
    record = {"generator": str(Path(args.generator).expanduser()), "tokenizer": str(Path(args.tokenizer).expanduser()),
              "tokenizer_fingerprint": tokenizer.spec.fingerprint(),
              "classes": [{"label": i, "name": names[i] if names else None} for i in indices],
              "per_class": args.per_class, "cfg": args.cfg, "steps": args.steps, "temperature": args.temperature,
              "top_k": args.top_k, "seed": args.seed, "batch_size": args.batch_size,
              "decoder_sampler": sampler.model_dump(mode="json"), "forward_passes": out.forward_passes, "decoder_calls_per_image": out.decoder_calls}
    return out.images.detach().to("cpu", torch.float32), record


NOTHING_MEASURED = 3
"""The exit status when the network's weight file is absent: every figure unavailable (the
record says which file is needed; with --generator nothing is generated)."""


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo eval-gen``; returns 0, or :data:`NOTHING_MEASURED` (3) when the Inception
    weight file is absent (metrics.json then reports every figure unavailable, naming the file).
    Raises ``ValueError`` / ``FileNotFoundError`` with a one-line reason for bad input."""
    from flowmo.folders.imports import import_modules

    import_modules(args.imports)
    t_start = time.time()
    if args.generated is not None and args.generator is not None:
        raise ValueError("give --generated or --generator, not both")
    if args.generator is None and (args.tokenizer or args.per_class or args.classes or args.decoder_steps):
        raise ValueError("--tokenizer, --per-class, --classes and --decoder-steps go with --generator")
    measure_only = args.generated is None and args.generator is None
    if measure_only and args.save_reference_stats is None:
        raise ValueError("give the generated images: --generated DIR or --generator DIR (or only "
                         "--save-reference-stats FILE to measure the reference set)")
    if args.generated is not None and not Path(args.generated).expanduser().is_dir():
        raise FileNotFoundError(f"--generated {args.generated!r} is not a folder")
    ref = Path(args.reference).expanduser()
    if not ref.exists():
        raise FileNotFoundError(f"--reference {args.reference!r} does not exist (give an image folder or a "
                                "reference statistics file)")
    if args.save_reference_stats is not None and not ref.is_dir():
        raise ValueError("--save-reference-stats needs --reference to be an image folder")
    if args.weights_dir is not None and not Path(args.weights_dir).expanduser().is_dir():
        raise FileNotFoundError(f"--weights-dir {args.weights_dir!r} is not a folder")
    out = Path(args.output).expanduser()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {args.output!r} exists and is not a folder")

    from flowmo.devices import DistContext, resolve_device
    from flowmo.data.files import atomic_write_text
    from flowmo.metrics.generative import evaluate_generation, measure_reference

    device = resolve_device(args.device, "--device", DistContext())
    progress = not args.quiet and sys.stderr.isatty()
    common = dict(image_size=args.image_size, batch_size=args.batch_size, device=device, weights=args.weights_dir,
                  limit=args.limit, progress=progress)
    if measure_only:
        stats = measure_reference(str(ref), **common)
        path = stats.save(args.save_reference_stats)
        if not args.quiet:
            print(f"measured {stats.n_images} reference images; wrote {path}")
        return 0

    generated: Any = args.generated
    made = None
    if args.generator is not None:
        from flowmo.metrics.networks import how_to_get, resolve_net_files

        if args.tokenizer is None or args.per_class is None:
            raise ValueError("--generator needs --tokenizer and --per-class")
        missing = resolve_net_files("inception_fid", args.weights_dir)[1]

        def ready() -> bool:  # generating would only waste the time when nothing can be measured
            if missing:
                print(f"flowmo eval-gen: nothing measured: the Inception weights are missing; "
                      f"{how_to_get('inception_fid', missing, args.weights_dir)}", file=sys.stderr)
            return not missing

        done = _generate(args, device, progress, ready)
        if done is None:
            return NOTHING_MEASURED
        generated, made = done
    result = evaluate_generation(generated, str(ref), k=args.k, splits=args.splits, **common)
    record = result.to_dict()
    if made is not None:
        record["protocol"]["generated"] = {"source": "generated by flowmo eval-gen", **made}
    record["protocol"]["command"] = args.command_line
    record["protocol"]["wall_seconds"] = time.time() - t_start
    saved = None
    if args.save_reference_stats is not None and result.reference_stats is not None:
        saved = str(result.reference_stats.save(args.save_reference_stats))
    record["outputs"] = {"metrics": str(out / RECORD_NAME), "reference_stats": saved}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / RECORD_NAME, json.dumps(record, indent=2) + "\n")
    if not args.quiet:
        m = result.metrics
        print(f"{m['n_generated']} generated vs {m['n_reference']} reference images (k = {args.k}):")
        for line in _table(m):
            print(line)
        if not result.available():
            print(f"  {m['gfid']['how']}")
        if args.save_reference_stats is not None and saved is None:
            print("  reference statistics not saved: the Inception weights are missing")
        print(f"wrote {out / RECORD_NAME}" + (f", {saved}" if saved else ""))
    if not result.available():
        # nothing measured: a script must not mistake this run for a measurement
        print(f"flowmo eval-gen: nothing measured: {result.metrics['gfid']['how']}", file=sys.stderr)
        return NOTHING_MEASURED
    return 0
