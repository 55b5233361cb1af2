"""The demo's final report: how well a trained model reconstructs photos it never saw.

    python -m flowmo.train.demo --run runs/demo            # a run trained with --export RUN/model
    python -m flowmo.train.demo --model DIR --out DIR [--train-seed 0]

Decodes the held-out photo crops (:func:`flowmo.train.data.held_out_photos`: chelsea and
coffee, never trained on) with the model's own sampler (``spec.sampler``, the evaluation
sampler of the run) and with the release's default sampler (``SamplerSpec()``: 25 Euler
steps on the pow-0.25 grid with CFG 1.5, 31 decoder calls), all from the same noise (seed
0), and compares both with a thumbnail of the same number of bits
(:func:`flowmo.eval.baselines.thumbnail_baseline`). Prints PSNR, SSIM and decoder calls per
image for each, the bits per image and per pixel, and writes two PNGs upscaled with nearest
neighbour (rows: originals, reconstructions, same-bits thumbnails): ``held_out.png`` and
``training_crops.png`` (crops of the training photos as the run drew them in its first
epoch, before flips). The figures also go to ``report.json``. ``scripts/demo.sh`` runs it
after training; docs/demo.md describes how the demo configuration was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor

from ..eval.baselines import thumbnail_baseline
from ..eval.metrics import psnr, ssim
from ..spec import SamplerSpec
from .visual import save_image_rows

__all__ = ["Figures", "DemoReport", "describe_sampler", "demo_report", "main"]

NOISE_SEED = 0
"""Seed of the ``torch.Generator`` that draws the starting noise of every decode in the report."""


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
    sampler, the release sampler (omitted when it is the model's) and the thumbnail."""

    images: int
    image_size: int
    bits_per_image: int
    bits_per_pixel: float
    code_length: int
    token_bits: int
    thumbnail_side: int
    thumbnail_bits: int
    held_out: list[Figures]
    training: list[Figures]
    held_out_png: str
    training_png: str

    def to_dict(self) -> dict:
        return asdict(self)


def describe_sampler(sampler: SamplerSpec) -> str:
    """A short phrase for a sampler, e.g. ``"1 Euler step, no guidance"`` or ``"25 Euler steps
    (pow grid), CFG 1.5"``."""
    steps = f"{sampler.steps} {sampler.solver.name.capitalize()} step{'s' if sampler.steps > 1 else ''}"
    if sampler.steps > 1:
        steps += f" ({sampler.grid.name} grid)"
    g = sampler.guidance.scale
    return steps + (", no guidance" if g == 1.0 else f", CFG {g:g}")


def _figures(name: str, x: Tensor, y: Tensor, calls: int) -> Figures:
    return Figures(name, round(float(psnr(x, y).mean()), 2), round(float(ssim(x, y).mean()), 4), int(calls))


def _upscale_for(image_size: int, min_side: int = 128) -> int:
    """Nearest-neighbour factor that makes a tile at least ``min_side`` pixels (1 when it already is)."""
    return max(1, -(-min_side // image_size))


@torch.no_grad()
def _measure(model, x: Tensor, samplers: list[tuple[str, SamplerSpec]], bits: int, png: Path, scale: int):
    code = model.quantize(model.encode(x)).values
    figures, first = [], None
    for name, sampler in samplers:
        out = model.decode(code, sampler=sampler, generator=torch.Generator(x.device).manual_seed(NOISE_SEED))
        figures.append(_figures(name, x, out.images, out.decoder_calls))
        if first is None:
            first = out.images
    thumb = thumbnail_baseline(x, bits)
    figures.append(_figures(f"thumbnail {thumb.side}x{thumb.side}, 8-bit RGB ({thumb.bits} bits)", x, thumb.images, 0))
    save_image_rows([x, first, thumb.images], png, scale=scale)
    return figures, thumb


def demo_report(model, out: os.PathLike, *, train_seed: int = 0, images: Optional[int] = None) -> DemoReport:
    """Measure ``model`` (a :class:`flowmo.FlowMo` trained on the built-in photos) as the demo does.

    Args:
        model: the trained model; decodes use its own ``spec.sampler`` and the release default.
        out: folder for ``held_out.png``, ``training_crops.png`` and ``report.json``.
        train_seed: the run's ``train.seed``: selects the training crops the run drew.
        images: how many held-out crops (default all 10) and training crops (default 10).

    Returns:
        :class:`DemoReport`.

    Raises:
        ImportError: the built-in photos are not installed (``bash scripts/setup.sh photos``).
        ValueError: ``images`` is not a positive int.
    """
    from .data import BuiltinPhotos, held_out_photos

    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images <= 0):
        raise ValueError(f"images must be a positive int or None, got {images!r}")
    spec = model.spec
    size = spec.image_size
    bits = round(spec.bits_per_pixel * size * size)
    own = spec.sampler
    release = SamplerSpec()
    samplers = [(f"FlowMo, {describe_sampler(own)}", own)]
    if own != release:
        samplers.append((f"FlowMo, release sampler: {describe_sampler(release)}", release))
    device = next(model.parameters()).device
    held = held_out_photos(size)[:images].to(device)
    n_train = images or len(held)
    crops = BuiltinPhotos(size, train=False, length=n_train, seed=train_seed)
    train_x = torch.stack([crops[i] for i in range(n_train)]).to(device)
    out = Path(out)
    scale = _upscale_for(size)
    was_training = model.training
    model.eval()
    try:
        held_figs, thumb = _measure(model, held, samplers, bits, out / "held_out.png", scale)
        train_figs, _ = _measure(model, train_x, samplers, bits, out / "training_crops.png", scale)
    finally:
        model.train(was_training)
    report = DemoReport(
        images=len(held), image_size=size, bits_per_image=bits, bits_per_pixel=round(bits / (size * size), 4),
        code_length=spec.code_length, token_bits=bits // spec.code_length,
        thumbnail_side=thumb.side, thumbnail_bits=thumb.bits, held_out=held_figs, training=train_figs,
        held_out_png=str(out / "held_out.png"), training_png=str(out / "training_crops.png"),
    )
    _write_json(out / "report.json", report.to_dict())
    return report


def _write_json(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def format_report(r: DemoReport) -> str:
    """The report as the text the demo prints."""
    w = max(len(f.name) for f in r.held_out + r.training)
    lines = [
        f"{r.bits_per_image} bits per image = {r.code_length} tokens x {r.token_bits} bits "
        f"({r.bits_per_pixel:g} bits per pixel) for {r.image_size}x{r.image_size} px",
    ]
    for title, figs in (
        (f"held-out photos (chelsea, coffee; never trained on): {r.images} crops", r.held_out),
        ("training crops (photos the model trained on)", r.training),
    ):
        lines += ["", title, f"  {'':<{w}}  PSNR dB    SSIM   decoder calls per image"]
        lines += [f"  {f.name:<{w}}  {f.psnr:7.2f}  {f.ssim:6.4f}   {f.calls if f.calls else '-'}" for f in figs]
    lines += ["", f"rows: originals, reconstructions ({r.held_out[0].name}), same-bits thumbnails",
              f"  held-out:  {r.held_out_png}", f"  training:  {r.training_png}"]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flowmo.train.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="a training run folder: the model is RUN/model (flowmo train --export RUN/model), "
                                 "the train seed comes from RUN/config.json, the report is written to RUN")
    p.add_argument("--model", help="a model folder (flowmo train --export DIR, save_pretrained); default RUN/model")
    p.add_argument("--out", help="folder for held_out.png, training_crops.png and report.json; default RUN")
    p.add_argument("--train-seed", type=int, help="the run's train.seed (which training crops it drew); "
                                                  "default: RUN/config.json's, else 0")
    a = p.parse_args(argv)
    from ..model import FlowMo

    seed = a.train_seed
    if a.run is not None:
        run = Path(a.run)
        cfg = run / "config.json"
        if not cfg.is_file():
            p.error(f"--run {str(run)!r}: no config.json there (expected a `flowmo train --out` folder)")
        if seed is None:
            seed = int(json.loads(cfg.read_text())["train"]["seed"])
        model_dir, out = Path(a.model) if a.model else run / "model", Path(a.out) if a.out else run
    else:
        if a.model is None or a.out is None:
            p.error("give --run RUN, or both --model DIR and --out DIR")
        model_dir, out = Path(a.model), Path(a.out)
    model = FlowMo.from_pretrained(model_dir)
    print(format_report(demo_report(model, out, train_seed=0 if seed is None else seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
