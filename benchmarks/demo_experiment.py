"""Train a variant of the CPU demo and measure held-out reconstructions with several samplers.

    python benchmarks/demo_experiment.py NAME [--set key=value ...]

Trains ``configs/demo.yaml`` with the given ``--set`` overrides (no evaluation during
training), then decodes the held-out photo crops (``flowmo.data.folders.held_out_photos``)
with the EMA weights under several samplers, from the same noise (seed 0), and prints one
JSON line: training seconds, bits per image and per pixel, parameters, PSNR / SSIM /
decoder calls per sampler, and the thumbnail baseline at the same number of bits (area
downsampling to the largest k x k 8-bit thumbnail with 24 k^2 <= bits, bicubic upsampling:
:func:`examples.photo_demo.baselines.thumbnail_baseline`).
The line is also appended to ``--results`` (default ``runs/demo_experiments.jsonl``).
Used for the table in docs/demo.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from examples.photo_demo.baselines import thumbnail_baseline
from flowmo.metrics.pixel import psnr, ssim
from flowmo.spec import SamplerSpec
from flowmo.train import Trainer, load_config
from flowmo.data.photos import held_out_photos

SAMPLERS = {
    "release_31": SamplerSpec(),  # the release's default: 25 Euler steps, pow 0.25, CFG 1.5 on its interval
    "euler_1": {"steps": 1, "guidance": {"scale": 1.0}},
    "euler_2_linear": {"steps": 2, "grid": {"name": "linear"}, "guidance": {"scale": 1.0}},
    "euler_4": {"steps": 4, "guidance": {"scale": 1.0}},
    "euler_4_linear": {"steps": 4, "grid": {"name": "linear"}, "guidance": {"scale": 1.0}},
    "fast_10": "fast",  # SAMPLER_PRESETS["fast"]: the release's sampler with 8 steps (10 calls)
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"))
    p.add_argument("--out", default="runs/demo_experiments")
    p.add_argument("--results", default="runs/demo_experiments.jsonl")
    a = p.parse_args()
    quiet = ["train.eval.enabled=false", "train.log.progress=false", "train.log.tensorboard=false",
             "train.log.images_every=1000000", "train.checkpoint.every=1000000"]
    cfg = load_config(a.config, quiet + a.overrides)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, Path(a.out) / a.name, log=lambda s: None)
    trainer.fit()
    seconds = time.perf_counter() - t0
    spec = cfg.model
    model = (trainer.ema_model() if trainer.ema else trainer.model).eval()
    x = held_out_photos(spec.image_size)
    bits = spec.code_length * spec.code_channels
    row = {"name": a.name, "overrides": a.overrides, "train_s": round(seconds), "threads": torch.get_num_threads(),
           "bits": bits, "bpp": round(spec.bits_per_pixel, 4), "params": sum(q.numel() for q in model.parameters())}
    with torch.no_grad():
        code = model.quantize(model.encode(x)).values
        for key, sampler in SAMPLERS.items():
            out = model.decode(code, sampler=sampler, generator=torch.Generator().manual_seed(0))
            row[key] = [round(float(psnr(x, out.images).mean()), 2), round(float(ssim(x, out.images).mean()), 3),
                        out.decoder_calls]
    t = thumbnail_baseline(x, bits)
    row["thumbnail"] = [t.side, round(float(psnr(x, t.images).mean()), 2), round(float(ssim(x, t.images).mean()), 3)]
    line = json.dumps(row)
    print(line)
    Path(a.results).parent.mkdir(parents=True, exist_ok=True)
    with open(a.results, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
