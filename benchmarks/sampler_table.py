"""Reconstruction quality against decoder calls, for ODE solvers x time grids x guidance.

    python benchmarks/sampler_table.py --model runs/demo/model [--seeds 3] [--images 10]

Held-out photos (the demo's held-out set at the model's image size), PSNR and SSIM on
uint8-quantised images, averaged over images and noise seeds. The first row is the
model's own sampler (the release's default: 25 Euler steps, pow 0.25, CFG 1.5 on the
EDM sigma interval (0.17, 1.02), 31 calls).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowmo  # noqa: E402
from flowmo.metrics.pixel import psnr, ssim  # noqa: E402
from flowmo.samplers import SAMPLER_PRESETS  # noqa: E402
from flowmo.data.photos import held_out_photos  # noqa: E402

GRIDS = {"linear": {"name": "linear"}, "pow 0.25": {"name": "pow", "p": 0.25}, "pow 0.5": {"name": "pow", "p": 0.5},
         "shifted 3": {"name": "shifted", "shift": 3.0}}
GUIDANCE = {"cfg 1.5 on interval": {"scale": 1.5, "interval_sigma": (0.17, 1.02)}, "no cfg": {"scale": 1.0}}


def settings(quick: bool):
    yield "model default", None
    for name, spec in SAMPLER_PRESETS.items():
        yield f"preset {name!r}", spec.model_dump()
    steps = {"euler": [2, 4, 6, 8, 10, 25], "heun": [2, 3, 4, 5, 12]}
    for solver, counts in steps.items():
        for grid_name, grid in GRIDS.items():
            for g_name, g in GUIDANCE.items():
                for n in counts if not quick else counts[:3]:
                    yield (f"{solver}, {grid_name}, {n} steps, {g_name}",
                           {"steps": n, "solver": {"name": solver}, "grid": grid, "guidance": g})


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--images", type=int, default=10)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    torch.set_grad_enabled(False)
    model = flowmo.FlowMo.from_pretrained(a.model)
    x = held_out_photos(model.spec.image_size)[: a.images]
    code = model.quantize(model.encode(x)).values
    rows = []
    for label, sampler in settings(a.quick):
        ps, ss, calls = [], [], 0
        for seed in range(a.seeds):
            out = model.decode(code, sampler=sampler, generator=torch.Generator().manual_seed(seed))
            ps.append(float(psnr(x, out.images).mean()))
            ss.append(float(ssim(x, out.images).mean()))
            calls = out.decoder_calls
        rows.append((label, calls, sum(ps) / len(ps), sum(ss) / len(ss)))
        print(f"{label}: {calls} calls, PSNR {rows[-1][2]:.2f}, SSIM {rows[-1][3]:.4f}", file=sys.stderr, flush=True)
    base = rows[0][2]
    print(f"model {a.model}, {len(x)} held-out images x {a.seeds} noise seeds\n")
    print("| sampler | decoder calls | PSNR (dB) | vs default | SSIM |")
    print("|---|---|---|---|---|")
    for label, calls, ps, ss in rows:
        print(f"| {label} | {calls} | {ps:.2f} | {ps - base:+.2f} | {ss:.4f} |")


if __name__ == "__main__":
    main()
