"""Options every ``flowmo`` subcommand shares, defined once so that they mean the same everywhere.

- :func:`add_common_arguments`: ``--debug``, ``-q/--quiet``, ``--import MODULE`` (repeatable)
  and, where the command runs a model, ``--device``; listed under "common options" in each
  command's ``--help``.
- :func:`add_model_arguments`: the model options of ``reconstruct``, ``tokenize`` and
  ``detokenize`` (``--model``, ``--batch-size``, and ``--code-length`` / ``--image-size`` for a
  released checkpoint).
- :func:`add_sampler_arguments` / :func:`sampler_from_args`: the decoding options of the
  commands that decode (``reconstruct``, ``detokenize``, ``eval``): ``--sampler``,
  ``--steps``, ``--solver``, ``--grid``, ``--cfg-scale``; :func:`add_decoding_arguments` adds
  them with ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from flowmo.folders.imports import add_import_argument

__all__ = ["add_common_arguments", "add_model_arguments", "add_sampler_arguments", "add_decoding_arguments",
           "sampler_from_args", "positive_int", "SAMPLER_OPTIONS_HELP", "DEVICE_HELP", "RESIZE_HELP"]

DEVICE_HELP = "torch device (default: auto = cuda, mps or cpu)"
RESIZE_HELP = ("each image's short side is resized to the model's image size (bicubic, antialiased) and the "
               "centre square cropped, as flowmo eval and training do; a note says so when an input was not "
               "already of that size (with --tiled each image keeps its own size)")

SAMPLER_OPTIONS_HELP = (
    "decoding options (default: the model's sampler). --sampler takes a preset name (release, fast), which "
    "replaces the whole sampler (a preset is a complete sampler: its steps, grid, solver and guidance), or "
    "JSON of sampler fields (or @file.json) merged into the model's sampler; --steps, --solver, --grid and "
    "--cfg-scale then edit the result (a new --grid/--solver name takes that component's defaults)")


def positive_int(text: str) -> int:
    """argparse type: a positive int (ArgumentTypeError otherwise)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_common_arguments(parser: argparse.ArgumentParser, *, device: Optional[str] = None,
                         device_default: Optional[str] = "auto") -> None:
    """Add the options every flowmo command takes, in one group "common options".

    ``--debug`` and ``--quiet`` may also come before the subcommand (``flowmo -q eval ...``):
    here they default to ``argparse.SUPPRESS``, so that a value given there stays; the
    ``flowmo`` parser (or :func:`flowmo.cli.command.add_subcommand`'s parser of one
    subcommand) gives them their default, False.

    Args:
        parser: the command's parser.
        device: the help text of ``--device`` for a command that runs a model; None: no
            ``--device`` (a command that runs none: convert, export).
        device_default: the default of ``--device``.
    """
    g = parser.add_argument_group("common options (every flowmo command)")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show full tracebacks instead of one-line errors")
    g.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bars, summaries or notes (errors are still reported)")
    add_import_argument(g)
    if device is not None:
        g.add_argument("--device", default=device_default, help=device)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--model``, ``--batch-size`` and, for a released ``.pth`` checkpoint (which does not
    store them), ``--code-length`` and ``--image-size``."""
    parser.add_argument("--model", required=True, metavar="DIR_OR_NAME",
                        help="a model folder (config.json + model.safetensors), a released .pth checkpoint, a "
                             "released name (flowmo_lo, flowmo_hi) or a Hugging Face Hub repository id user/repo "
                             "(pip install 'flowmo[hub]')")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="B", help="images per batch (default 8)")
    g = parser.add_argument_group("released .pth checkpoints only (not stored in those files)")
    g.add_argument("--code-length", type=positive_int, default=256, metavar="T", help="tokens per image (256)")
    g.add_argument("--image-size", type=positive_int, default=256, metavar="S", help="image size (256)")


def add_sampler_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--sampler``, ``--steps``, ``--solver``, ``--grid`` and ``--cfg-scale`` (one group);
    :func:`sampler_from_args` turns them into a :class:`flowmo.SamplerSpec`."""
    g = parser.add_argument_group("sampler options", SAMPLER_OPTIONS_HELP)
    g.add_argument("--sampler", default=None, metavar="PRESET_OR_JSON",
                   help="a sampler preset name (release, fast, or one of the model's own, e.g. distillation-4: "
                        "replaces the whole sampler) or sampler fields as JSON (or @file.json) merged into the "
                        "model's sampler; applied before the options below")
    g.add_argument("--steps", type=positive_int, default=None, metavar="N",
                   help="decoder ODE steps (default: the model's sampler's, or the preset's)")
    g.add_argument("--solver", default=None, metavar="NAME",
                   help="a registered ODE solver: euler, heun, or one registered by an --import module")
    g.add_argument("--grid", default=None, metavar="NAME",
                   help="a registered time grid: pow, linear, shifted, or one registered by an --import module")
    g.add_argument("--cfg-scale", type=float, default=None, metavar="S",
                   help="classifier-free guidance scale (1 = off)")


def add_decoding_arguments(parser: argparse.ArgumentParser, item: str = "input image i (inputs in the order "
                           "given, a folder's files sorted by relative name)") -> None:
    """Add ``--seed`` (``item``: what decodes from the noise of image i) and the sampler options."""
    parser.add_argument("--seed", type=int, default=0, metavar="S",
                        help=f"seed of the decoding noise (default 0): {item} is decoded from the noise flowmo eval "
                             "--seed S gives image i (flowmo.samplers.noise.image_noise)")
    add_sampler_arguments(parser)


def add_num_tokens_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--num-tokens K``: the first K tokens only (``what`` says what the command does with them)."""
    parser.add_argument("--num-tokens", type=positive_int, default=None, metavar="K",
                        help=f"{what} the first K tokens only (ordered tokens: a model trained with nested dropout, "
                             "spec.nested_dropout; default all of them)")


TILED_HELP = ("keep each image at its own size (at least the model's image size in each dimension) and cover it "
              "with overlapping tiles of the model's size (FlowMo.tile_grid)")


def add_tiling_arguments(parser: argparse.ArgumentParser, what: str, *, decodes: bool = True) -> None:
    """``--tiled`` (``what``: what the command does with the tiles), ``--overlap`` and, when the
    command ``decodes``, ``--tile-batch`` (images of any size: :meth:`flowmo.FlowMo.tile_grid`)."""
    g = parser.add_argument_group("images of any size")
    g.add_argument("--tiled", action="store_true", help=f"{TILED_HELP}: {what}")
    g.add_argument("--overlap", type=int, default=None, metavar="PX",
                   help="with --tiled: pixels shared by neighbouring tiles, at least (0 .. image size - 1; default "
                        "image size / 4)")
    if decodes:
        g.add_argument("--tile-batch", type=positive_int, default=None, metavar="N",
                       help="at most N tiles per decoder call (default: all of an image's tiles at once); bounds the "
                            "memory of a large image, same result")


def check_num_tokens(args: argparse.Namespace, model: Any, ctx: Any = None, available: Optional[int] = None) -> None:
    """CLIError for ``--num-tokens`` above the tokens there are (``available``, default the
    model's code_length); a note on ``ctx`` (when given) when fewer than the model's tokens are
    kept and the model was trained without nested dropout (its tokens have no order)."""
    from .errors import CLIError

    t = model.spec.code_length if available is None else available
    if args.num_tokens is not None and args.num_tokens > t:
        raise CLIError(f"--num-tokens ({args.num_tokens}) must be at most the tokens per image ({t})")
    kept = args.num_tokens or t
    if ctx is not None and kept < model.spec.code_length and model.spec.nested_dropout is None:
        ctx.note(f"the model was trained without nested dropout (spec.nested_dropout): its tokens have no order, so "
                 f"{kept} of its {model.spec.code_length} tokens decode poorly")


def check_tiling_arguments(args: argparse.Namespace, model_size: int, sizes: Any, files: Any) -> None:
    """CLIError (before any model work) for ``--overlap`` without ``--tiled`` or outside
    [0, model_size), and, with ``--tiled``, for an input smaller than the model's size (naming
    it): ``sizes`` are the inputs' stored (width, height)."""
    from .errors import CLIError

    for flag, value in (("--overlap", args.overlap), ("--tile-batch", getattr(args, "tile_batch", None))):
        if value is not None and not args.tiled:
            raise CLIError(f"{flag} applies only with --tiled")
    if args.overlap is not None and not 0 <= args.overlap < model_size:
        raise CLIError(f"--overlap must be in [0, {model_size - 1}] (below the model's image size), got {args.overlap}")
    if args.tiled:
        for f, (w, h) in zip(files, sizes):
            if min(w, h) < model_size:
                raise CLIError(f"--tiled: {str(f.path)!r} is {w} x {h} pixels, its {'width' if w < model_size else 'height'} "
                               f"below the model's image size ({model_size}); tiles cannot cover it (resize it up, or "
                               "leave out --tiled to resize every input to the model's size)")


def sampler_from_args(base: Any, args: argparse.Namespace, presets: Optional[Mapping[str, Any]] = None) -> Any:
    """The sampler ``base`` (a :class:`flowmo.SamplerSpec`, the model's) with the command line's
    edits, validated.

    ``--sampler`` is a sampler preset name (one of the model's own ``presets``, its
    ``spec.sampler_presets``, or a global one such as ``fast``: the preset replaces the whole
    sampler, a custom grid, solver or guidance included) or JSON (or @file.json) of changes merged as
    :meth:`flowmo.FlowMoSpec.replace` merges (``{"guidance": {"scale": 2}}`` keeps the
    interval); then ``--steps``, ``--solver``, ``--grid`` and ``--cfg-scale`` are applied the
    same way (a new ``--grid`` name takes that grid's defaults; the same name keeps its fields).

    Raises FileNotFoundError for a missing @file, ValueError ("invalid sampler settings: ...")
    for anything else that is wrong.
    """
    from flowmo.spec.sampling import resolve_preset
    from flowmo.spec import replace_spec

    try:
        spec = base
        if args.sampler:
            text = args.sampler
            if text.startswith("@"):
                f = Path(text[1:]).expanduser()
                if not f.is_file():
                    raise FileNotFoundError(f"--sampler file {str(f)!r} does not exist")
                text = f.read_text()
            try:
                extra = json.loads(text)
            except json.JSONDecodeError as e:
                if text.strip().startswith(("{", "[", '"')):
                    raise ValueError(f"--sampler is not valid JSON: {e}") from None
                extra = text.strip()  # a preset name
            if isinstance(extra, str):
                spec = resolve_preset(extra, presets)
            elif isinstance(extra, dict):
                spec = replace_spec(spec, extra)
            else:
                raise ValueError("--sampler must be a sampler preset name or a JSON object of sampler fields")
        changes: dict[str, Any] = {}
        if args.steps is not None:
            changes["steps"] = args.steps
        if args.solver is not None:
            changes["solver"] = args.solver
        if args.grid is not None:
            changes["grid"] = args.grid
        if args.cfg_scale is not None:
            changes["guidance"] = {"scale": args.cfg_scale}
        return replace_spec(spec, changes) if changes else spec
    except FileNotFoundError:
        raise
    except ValueError as e:
        raise ValueError(f"invalid sampler settings: {e}") from None


# ----------------------------------------------------------------------------- training runs
RESUME_HELP = ("continue from the newest checkpoint in --out, with the run's settings (without --config: its "
               "config.json); a changed setting is refused naming it, except the few that may change (train.steps, "
               "cadences, device, ...: flowmo.train.checkpointing.RESUMABLE), which are said and recorded in --out's "
               "config_changes.json")


def run_overrides(args: argparse.Namespace) -> list[str]:
    """A training command's ``--set`` overrides, then ``--device`` (``train.device``) and ``-q``
    (no progress bar) as overrides of their own, in that order."""
    overrides = list(args.overrides)
    if args.device is not None:
        overrides.append(f"train.device={json.dumps(args.device)}")
    if args.quiet:
        overrides.append("train.log.progress=false")
    return overrides


def fit(trainer: Any) -> dict:
    """``trainer.fit()``'s summary, the trainer closed after it (without waiting for the other
    ranks when the run failed, so that a failing rank does not hang in a barrier)."""
    try:
        summary = trainer.fit()
    except BaseException:
        trainer.close(barrier=False)
        raise
    trainer.close()
    return summary
