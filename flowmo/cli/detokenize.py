"""``flowmo detokenize``: a token file written by ``flowmo tokenize`` -> images, with the model
that made it.

    flowmo detokenize --model M --tokens FILE.safetensors --output DIR [sampler options] [--seed S]

A tiled token file (``flowmo tokenize --tiled``) decodes each image at its own size, its tiles
jointly (:meth:`flowmo.FlowMo.detokenize_tiled`), from ``image_noise(S, [i], (3, H, W))``.
A model of another spec fingerprint, or of the same spec with other encoder or quantizer
weights (the file's token weights digest), is refused with the reason. Row i decodes from the
noise ``flowmo eval --seed S`` gives image i.
"""

from __future__ import annotations

import argparse
from typing import Any, Optional

from .command import Context, add_subcommand
from .errors import CLIError
from .options import (DEVICE_HELP, add_common_arguments, add_decoding_arguments, add_model_arguments,
                      add_num_tokens_argument, positive_int)

__all__ = ["NAME", "add_parser", "run"]

NAME = "detokenize"


def add_parser(sub: Optional[Any] = None) -> argparse.ArgumentParser:
    """The ``detokenize`` parser (:func:`flowmo.cli.command.add_subcommand`)."""
    p = add_subcommand(sub, NAME, help="a token file -> images",
                       description="Decode a token file written by 'flowmo tokenize' with the same model.")
    add_model_arguments(p)
    p.add_argument("--tokens", required=True, metavar="FILE", help="token file (.safetensors)")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    add_decoding_arguments(p, "row i of the token file (of a tiled file: source image i)")
    add_num_tokens_argument(p, "decode from")
    p.add_argument("--tile-batch", type=positive_int, default=None, metavar="N",
                   help="a tiled token file: at most N tiles per decoder call (default: all of an image's tiles at "
                        "once); bounds the memory of a large image, same result")
    add_common_arguments(p, device=DEVICE_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``flowmo detokenize``; returns 0."""
    import torch

    from flowmo.data.tokens import read_tokens
    from flowmo.folders.imports import import_modules
    from flowmo.samplers.noise import image_noise
    from flowmo.state_dicts import makes_the_same_tokens, token_weights_digest

    from .io import batches, model_from_args, output_folder, output_names, require_tokens, save_image
    from .options import check_num_tokens, sampler_from_args

    ctx = Context(args)
    import_modules(args.imports)
    tf = read_tokens(args.tokens)
    names = output_names(tf.sources)
    model, device = model_from_args(args)
    require_tokens(model, "flowmo detokenize")
    fp = model.spec.fingerprint()
    if tf.fingerprint != fp:
        raise CLIError(f"tokens in {args.tokens!r} were made by a model with spec fingerprint {tf.fingerprint}, "
                       f"but {args.model!r} has fingerprint {fp}; decode them with the model that made them")
    # recorded by 'flowmo tokenize' since the weights digest exists
    if tf.tokenizer_weights is not None and not makes_the_same_tokens(tf.tokenizer_weights, model):
        raise CLIError(f"tokens in {args.tokens!r} were made by a model of the same spec but other encoder or "
                       f"quantizer weights (digest {tf.tokenizer_weights[:16]}..., {args.model!r} has "
                       f"{token_weights_digest(model)[:16]}...): same architecture, other weights; decode them "
                       "with the model that made them (or one post-trained from it with the encoder frozen; a file "
                       "written before flowmo recorded the token digest names the whole model's weights, which only "
                       "that exact model matches: re-tokenize the images to use it with a fine-tuned model)")
    t = model.spec.code_length
    if tf.tokens.shape[1] > t:
        raise CLIError(f"tokens have {tf.tokens.shape[1]} per image but the model has {t}")
    check_num_tokens(args, model, ctx, tf.tokens.shape[1])  # a file of prefixes (tokenize --num-tokens) holds fewer
    if tf.tiles is not None and (args.num_tokens is not None or tf.tokens.shape[1] < t):
        raise CLIError("prefixes of tokens apply to whole images, not to a tiled token file")
    kept = args.num_tokens or tf.tokens.shape[1]
    if tf.groups and not model.quantizer.has_groups:
        raise CLIError(f"the tokens are entropy-group indices but the model's quantizer "
                       f"{model.spec.quantizer.name!r} has no groups")
    sampler = sampler_from_args(model.spec.sampler, args, model.spec.sampler_presets)
    out = output_folder(args.output)
    size = model.spec.image_size
    if args.tile_batch is not None and tf.tiles is None:
        raise CLIError(f"--tile-batch applies to a tiled token file (flowmo tokenize --tiled); {args.tokens!r} is not one")
    if tf.tiles is not None:  # a tiled file: each image at its size, its tiles decoded jointly
        with torch.no_grad(), ctx.progress(len(tf.tiles), "detokenize") as bar:
            for i, grid in enumerate(tf.tiles):
                tok = tf.tokens[tf.rows(i)].to(device).unflatten(0, (grid.rows, grid.cols))[None]
                noise = image_noise(args.seed, [i], (3, grid.height, grid.width), device=device, dtype=model.dtype)
                y = model.detokenize_tiled(tok, grid, noise=noise, sampler=sampler, tile_batch=args.tile_batch)
                save_image(y[0], out / names[i])
                bar.update(1)
        ctx.say(f"wrote {len(tf.tiles)} tiled image{'s' if len(tf.tiles) != 1 else ''} to {out}")
        return 0
    n = tf.tokens.shape[0]
    with torch.no_grad(), ctx.progress(n, "detokenize") as bar:
        for a, b in batches(n, args.batch_size):
            tok = tf.tokens[a:b, :kept].to(device)
            if kept < t:  # a prefix, padded; num_tokens makes the padding absent (any model; nested dropout orders them)
                tok = torch.cat([tok, tok.new_zeros(b - a, t - kept, *tok.shape[2:])], 1)
            if tf.groups:
                code = model.quantizer.group_indices_to_codes(tok).to(model.dtype)
            else:
                code = model.tokens_to_code(tok)
            noise = image_noise(args.seed, range(a, b), (3, size, size), device=device, dtype=model.dtype)
            y = model.decode(code, noise=noise, sampler=sampler, num_tokens=kept if kept < t else None).images
            for img, name in zip(y, names[a:b]):
                save_image(img, out / name)
            bar.update(b - a)
    ctx.say(f"wrote {n} image{'s' if n != 1 else ''} to {out}")
    return 0
