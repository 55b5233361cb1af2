"""``flowmo reconstruct``: encode, quantize and decode images; one PNG per input, named as it is.

    flowmo reconstruct --model M --input PATHS... --output DIR [sampler options] [--seed S] [--batch-size B]
                       [--tiled [--overlap PX]]

Input image i (inputs in the order given, a folder's files sorted by relative name) decodes from
the noise ``flowmo eval --seed S`` gives image i. An output that would replace an input image is
refused before any work. With ``--tiled`` every image keeps its size (at least the model's in
each dimension) and is reconstructed in tiles decoded jointly (:meth:`flowmo.FlowMo.reconstruct_tiled`),
one image at a time, from ``image_noise(S, [i], (3, H, W))``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

from .command import Context, add_subcommand
from .errors import CLIError
from .options import (DEVICE_HELP, RESIZE_HELP, add_common_arguments, add_decoding_arguments, add_model_arguments,
                      add_num_tokens_argument, add_tiling_arguments)

__all__ = ["NAME", "add_parser", "run"]

NAME = "reconstruct"


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``reconstruct`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="encode and decode images",
                       description="Encode, quantize and decode images; writes PNGs with the inputs' relative names. "
                                   "Inputs: " + RESIZE_HELP + ".")
    add_model_arguments(p)
    p.add_argument("--input", required=True, nargs="+", metavar="PATH",
                   help="image files and/or folders (recursive); resized and centre-cropped to the model's image size "
                        "(unless --tiled)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    add_decoding_arguments(p)
    add_num_tokens_argument(p, "decode from")
    add_tiling_arguments(p, "each reconstructed at its size, the tiles decoded jointly (FlowMo.reconstruct_tiled)")
    add_common_arguments(p, device=DEVICE_HELP)
    return p


def _refuse_overwriting_inputs(output: str, names: list[str], inputs: list[Path]) -> None:
    """CLIError, before any work, when an output file would replace one of the input images
    (e.g. ``--output`` the input folder itself and a PNG input)."""
    out = Path(os.path.realpath(Path(output).expanduser()))
    sources = {os.path.realpath(p): p for p in inputs}
    for name in names:
        target = os.path.realpath(out / name)
        if target in sources:
            raise CLIError(f"--output {output!r}: writing {name} would overwrite the input image "
                           f"{str(sources[target])!r}; choose another output folder")


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo reconstruct``; returns 0."""
    import torch

    from flowmo.folders.imports import import_modules
    from flowmo.samplers.noise import image_noise

    from .io import (batches, input_images, load_image, model_from_args, output_folder, output_names, resize_note,
                     save_image)
    from .options import check_num_tokens, check_tiling_arguments, sampler_from_args

    ctx = Context(args)
    import_modules(args.imports)
    files, sizes = input_images(args.input)
    names = output_names([f.name for f in files])
    _refuse_overwriting_inputs(args.output, names, [f.path for f in files])
    model, device = model_from_args(args)
    size = model.spec.image_size
    check_tiling_arguments(args, size, sizes, files)
    check_num_tokens(args, model, ctx)
    if args.tiled and args.num_tokens is not None:
        raise CLIError("--num-tokens applies to whole images, not with --tiled")
    sampler = sampler_from_args(model.spec.sampler, args, model.spec.sampler_presets)
    out = output_folder(args.output)
    if args.tiled:
        with torch.no_grad(), ctx.progress(len(files), "reconstruct") as bar:
            for i, f in enumerate(files):
                x = load_image(f.path, None)[None].to(device=device, dtype=model.dtype)
                noise = image_noise(args.seed, [i], tuple(x.shape[1:]), device=device, dtype=model.dtype)
                y = model.reconstruct_tiled(x, overlap=args.overlap, noise=noise, sampler=sampler,
                                            tile_batch=args.tile_batch)
                save_image(y[0], out / names[i])
                bar.update(1)
        ctx.say(f"wrote {len(files)} tiled reconstruction{'s' if len(files) != 1 else ''} to {out}")
        return 0
    with torch.no_grad(), ctx.progress(len(files), "reconstruct") as bar:
        for a, b in batches(len(files), args.batch_size):
            x = torch.stack([load_image(f.path, size) for f in files[a:b]]).to(device=device, dtype=model.dtype)
            noise = image_noise(args.seed, range(a, b), (3, size, size), device=device, dtype=model.dtype)
            y = model.reconstruct(x, noise=noise, sampler=sampler, num_tokens=args.num_tokens)
            for img, name in zip(y, names[a:b]):
                save_image(img, out / name)
            bar.update(b - a)
    resize_note(ctx, sizes, size)
    ctx.say(f"wrote {len(files)} reconstruction{'s' if len(files) != 1 else ''} to {out}")
    return 0
