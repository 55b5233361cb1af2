"""The demo's final report: how well a trained model reconstructs photos it never saw.

    python -m examples.photo_demo.report --run runs/demo            # a run trained with --export RUN/model
    python -m examples.photo_demo.report --model DIR --out DIR [--train-seed 0] [--no-training-crops]

Decodes the held-out photo crops (:func:`flowmo.data.folders.held_out_photos`: chelsea and
coffee, never trained on) with the model's own sampler (``spec.sampler``, the evaluation
sampler of the run) and with the release's default sampler (``SamplerSpec()``: 25 Euler
steps on the pow-0.25 grid with CFG 1.5, 31 decoder calls), all from the same noise (the
run's evaluation noise, :func:`decode_noise`), and compares both with a thumbnail of the same number of bits
(:func:`examples.photo_demo.baselines.thumbnail_baseline`). Prints PSNR, SSIM and decoder calls per
image for each, the bits per image and per pixel, and writes two PNGs upscaled with nearest
neighbour (rows: originals, reconstructions, same-bits thumbnails): ``held_out.png`` and
``training_crops.png`` (crops of the training photos as the run drew them in its first
epoch, before flips; only for runs on the built-in photos). The figures also go to
``report.json``. ``scripts/demo.sh`` runs it
after training; docs/demo.md describes how the demo configuration was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from examples.photo_demo.baselines import thumbnail_baseline
from flowmo.metrics.pixel import psnr, ssim
from flowmo.spec import SamplerSpec
from flowmo.data.grids import save_image_rows

__all__ = ["Figures", "DemoReport", "describe_sampler", "demo_report", "main"]

def decode_noise(train_seed: int, images: Tensor, dtype: torch.dtype) -> Tensor:
    """The starting noise of every decode in the report: :func:`flowmo.samplers.noise.image_noise`
    ``(train.seed, [0 .. n-1])``, the noise of the run's own evaluation (and of ``flowmo eval
    --seed <train.seed>``), so the report's figure for the model's own sampler equals the run's
    final ``eval/ema/psnr`` / ``eval/ema/ssim`` (its exported EMA weights)."""
    from flowmo.samplers.noise import image_noise

    return image_noise(train_seed, range(images.shape[0]), images.shape[1:], device=images.device, dtype=dtype)


@dataclass(frozen=True)
class Figures:
    """Mean PSNR (dB, 8-bit, standard protocol), mean SSIM and decoder calls per image of one
    way of coding a set of images (``calls`` is 0 for the thumbnail: no network)."""

    name: str
    psnr: float
    ssim: float
    calls: int


@dataclass(frozen=True)
class DemoReport:
    """What :func:`demo_report` measured. ``held_out`` / ``training``: figures for the model's
    sampler, the release sampler (omitted when it is the model's) and the thumbnail
    (``training`` / ``training_png`` are None when training crops were not asked for).
    ``bits_per_image`` = ``code_length * token_bits`` (``token_bits`` is log2 of the codebook
    size: not an integer for e.g. FSQ levels [8, 8, 8, 5, 5, 5]); the thumbnail gets the
    whole bits below it."""

    images: int
    image_size: int
    bits_per_image: float
    bits_per_pixel: float
    code_length: int
    token_bits: float
    thumbnail_side: int
    thumbnail_bits: int
    held_out: list[Figures]
    training: Optional[list[Figures]]
    held_out_png: str
    training_png: Optional[str]

    def to_dict(self) -> dict:
        return asdict(self)


def describe_sampler(sampler: SamplerSpec) -> str:
    """A short phrase for a sampler, e.g. ``"1 Euler step, no guidance"`` or ``"25 Euler steps
    (pow grid), CFG 1.5 for t in [0.15, 0.50]"`` (guidance applies only to steps whose time
    lies in the interval; the decoder calls say how many were guided)."""
    steps = f"{sampler.steps} {sampler.solver.name.capitalize()} step{'s' if sampler.steps > 1 else ''}"
    if sampler.steps > 1:
        steps += f" ({sampler.grid.name} grid)"
    g = sampler.guidance
    if g.scale == 1.0:
        return steps + ", no guidance"
    if g.interval is None:
        return steps + f", CFG {g.scale:g}"
    lo, hi = g.interval
    return steps + f", CFG {g.scale:g} for t in [{lo:.2f}, {hi:.2f}]"


def _figures(name: str, x: Tensor, y: Tensor, calls: int) -> Figures:
    return Figures(name, round(float(psnr(x, y).mean()), 2), round(float(ssim(x, y).mean()), 4), int(calls))


def _upscale_for(image_size: int, min_side: int = 128) -> int:
    """Nearest-neighbour factor that makes a tile at least ``min_side`` pixels (1 when it already is)."""
    return max(1, -(-min_side // image_size))


@torch.no_grad()
def _measure(model, x: Tensor, samplers: list[tuple[str, SamplerSpec]], bits: int, png: Path, scale: int,
             seed: int):
    code = model.quantize(model.encode(x), losses=False).values
    noise = decode_noise(seed, x, model.dtype)
    figures, first = [], None
    for name, sampler in samplers:
        out = model.decode(code, sampler=sampler, noise=noise)
        figures.append(_figures(name, x, out.images, out.decoder_calls))
        if first is None:
            first = out.images
    thumb = thumbnail_baseline(x, bits)
    figures.append(_figures(f"thumbnail {thumb.side}x{thumb.side}, 8-bit RGB ({thumb.bits} bits)", x, thumb.images, 0))
    save_image_rows([x, first, thumb.images], png, scale=scale)
    return figures, thumb


def demo_report(model, out: os.PathLike, *, train_seed: int = 0, images: Optional[int] = None,
                training_crops: bool = True) -> DemoReport:
    """Measure ``model`` (a :class:`flowmo.FlowMo` trained on the built-in photos) as the demo does.

    Args:
        model: the trained model; decodes use its own ``spec.sampler`` and the release default.
        out: folder for ``held_out.png``, ``training_crops.png`` and ``report.json``.
        train_seed: the run's ``train.seed``: selects the training crops the run drew and the
            decoding noise (:func:`decode_noise`).
        images: how many crops of each set (default and at most 10: the held-out set's size).
        training_crops: also measure crops of the training photos (only meaningful for a run
            trained on the built-in photos).

    Returns:
        :class:`DemoReport`.

    Raises:
        ImportError: the built-in photos are not installed (``bash scripts/setup.sh photos``).
        TypeError: ``model`` is not a FlowMo.
        ValueError: ``images`` is not a positive int, or ``out`` is an existing file.
    """
    from flowmo.model import FlowMo
    from flowmo.data.photos import BuiltinPhotos, held_out_photos

    if not isinstance(model, FlowMo):
        raise TypeError(f"model must be a flowmo.FlowMo, got {type(model).__name__}")
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images <= 0):
        raise ValueError(f"images must be a positive int or None, got {images!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out must be a folder, but {str(out)!r} is a file")
    spec = model.spec
    size = spec.image_size
    bits_exact = spec.bits_per_pixel * size * size
    bits = round(bits_exact, 4)
    own = spec.sampler
    release = SamplerSpec()
    samplers = [(f"FlowMo, {describe_sampler(own)}", own)]
    if own != release:
        samplers.append((f"FlowMo, release sampler: {describe_sampler(release)}", release))
    device = next(model.parameters()).device
    held = held_out_photos(size)[:images].to(device)
    n = len(held)
    seed = train_seed
    scale = _upscale_for(size)
    was_training = model.training
    model.eval()
    train_figs, train_png = None, None
    try:
        held_figs, thumb = _measure(model, held, samplers, int(bits_exact + 1e-9), out / "held_out.png", scale, seed)
        if training_crops:
            crops = BuiltinPhotos(size, train=False, length=n, seed=train_seed)
            train_x = torch.stack([crops[i] for i in range(n)]).to(device)
            train_png = out / "training_crops.png"
            train_figs, _ = _measure(model, train_x, samplers, int(bits_exact + 1e-9), train_png, scale, seed)
    finally:
        model.train(was_training)
    report = DemoReport(
        images=n, image_size=size, bits_per_image=bits, bits_per_pixel=round(bits_exact / (size * size), 4),
        code_length=spec.code_length, token_bits=round(bits_exact / spec.code_length, 4),
        thumbnail_side=thumb.side, thumbnail_bits=thumb.bits, held_out=held_figs, training=train_figs,
        held_out_png=str(out / "held_out.png"), training_png=None if train_png is None else str(train_png),
    )
    _write_json(out / "report.json", report.to_dict())
    return report


def _write_json(path: Path, obj: dict) -> None:
    from flowmo.data.files import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def format_report(r: DemoReport) -> str:
    """The report as the text the demo prints."""
    figs = r.held_out + (r.training or [])
    w = max(len(f.name) for f in figs)
    crops = f"{r.images} crop{'s' if r.images != 1 else ''}"
    lines = [
        f"{r.bits_per_image:g} bits per image = {r.code_length} tokens x {r.token_bits:g} bits "
        f"({r.bits_per_pixel:g} bits per pixel) for {r.image_size}x{r.image_size} px",
    ]
    sections = [(f"held-out photos (chelsea, coffee; never trained on): {crops}", r.held_out)]
    if r.training is not None:
        sections.append((f"training crops (photos the model trained on): {crops}", r.training))
    for title, rows in sections:
        lines += ["", title, f"  {'':<{w}}  PSNR dB    SSIM   decoder calls per image"]
        lines += [f"  {f.name:<{w}}  {f.psnr:7.2f}  {f.ssim:6.4f}   {f.calls if f.calls else '-'}" for f in rows]
    lines += ["", f"rows: originals, reconstructions ({r.held_out[0].name}), same-bits thumbnails",
              f"  held-out:  {r.held_out_png}"]
    if r.training_png is not None:
        lines.append(f"  training:  {r.training_png}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.photo_demo.report", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a training run folder: the model is RUN/model (flowmo train --export RUN/model), "
                                 "the train seed and data come from RUN/config.json, the report is written to RUN")
    p.add_argument("--model", help="a model folder (flowmo train --export DIR, save_pretrained); default RUN/model")
    p.add_argument("--out", help="folder for held_out.png, training_crops.png and report.json; default RUN")
    p.add_argument("--train-seed", type=int, help="the run's train.seed (which training crops it drew, and the "
                                                  "decoding noise); default: RUN/config.json's, else 0")
    p.add_argument("--no-training-crops", action="store_true",
                   help="skip the training-crop row (automatic for a run trained on an image folder)")
    a = p.parse_args(argv)
    from flowmo.model import FlowMo

    seed, training = a.train_seed, not a.no_training_crops
    if a.run is not None:
        run = Path(a.run)
        cfg = run / "config.json"
        if not cfg.is_file():
            p.error(f"--run {str(run)!r}: no config.json there (expected a `flowmo train --out` folder)")
        try:
            train = json.loads(cfg.read_text())["train"]
            run_seed = int(train.get("seed", 0))
            folder = (train.get("data") or {}).get("folder")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            p.error(f"--run {str(run)!r}: {cfg} is not a training config ({type(e).__name__}: {e})")
        seed = run_seed if seed is None else seed
        if folder is not None:
            training = False
        model_dir, out = Path(a.model) if a.model else run / "model", Path(a.out) if a.out else run
        if a.model is None and not model_dir.is_dir():
            p.error(f"--run {str(run)!r}: no model folder {str(model_dir)!r}; train with --export {model_dir} "
                    f"or write it with `flowmo export {run} --output {model_dir}`")
    else:
        if a.model is None or a.out is None:
            p.error("give --run RUN, or both --model DIR and --out DIR")
        model_dir, out = Path(a.model), Path(a.out)
    seed = 0 if seed is None else seed
    if seed < 0:
        p.error(f"--train-seed must be >= 0, got {seed}")
    if out.exists() and not out.is_dir():
        p.error(f"--out {str(out)!r} is a file; give a folder")
    try:
        model = FlowMo.from_pretrained(model_dir)
    except (FileNotFoundError, ValueError) as e:
        p.error(f"--model {str(model_dir)!r}: {e}")
    print(format_report(demo_report(model, out, train_seed=seed, training_crops=training)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
