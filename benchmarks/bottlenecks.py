"""The bottlenecks compared on the CPU demo: LFQ, FSQ, BSQ and VQ at equal bits per image, and
the continuous kl and identity at equal channels (issue 25; the paper's Table 3 direction:
continuous beats discrete at equal channels).

    python benchmarks/bottlenecks.py                       # the demo's budget (configs/demo.yaml)
    python benchmarks/bottlenecks.py --steps 600 --set train.compile=false
    python benchmarks/bottlenecks.py --only kl lfq

Each variant trains ``configs/demo.yaml`` with its quantizer override (and ``--set`` overrides
for all) in a fresh ``flowmo train`` process, one after another, then reads the final held-out
figures of the EMA weights (``eval/ema/psnr``, ``eval/ema/ssim`` in ``metrics.jsonl``: the 10
held-out crops, 1 Euler step, the run's evaluation noise). Prints a markdown table.

Equal bits: the demo's LFQ is 16 tokens x 36 bits = 576 bits per image; FSQ 16 x 12 channels of
8 levels (36 bits); BSQ 16 x 36 channels; VQ 36 tokens of a 65536-code codebook (16 bits, EMA
updates, l2-normalised codes, dead codes replaced: a larger codebook per token would be a
search over 2^36 codes). Continuous: 16 tokens x 36 channels, kl (a diagonal Gaussian,
the encoder 72 wide) and identity.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUIET = ["train.log.tensorboard=false", "train.log.progress=false"]

#: name -> (what it is, the overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "lfq": ("LFQ, 16 tokens x 36 bits (the demo)", []),
    "fsq": ("FSQ, 16 tokens x 12 channels of 8 levels (36 bits)",
            ["model.code_channels=12", "model.quantizer={name: fsq, levels: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]}"]),
    "bsq": ("BSQ, 16 tokens x 36 bits", ["model.quantizer={name: bsq}"]),
    "vq": ("VQ, 36 tokens of 65536 codes (16 bits), EMA, l2-normalised",
           ["model.code_length=36",
            "model.quantizer={name: vq, codebook_size: 65536, ema: true, l2_normalize: true, dead_code_threshold: 1.0}"]),
    "kl": ("kl (continuous), 16 tokens x 36 channels", ["model.quantizer={name: kl}"]),
    "identity": ("identity (continuous), 16 tokens x 36 channels", ["model.quantizer={name: identity}"]),
}


def run(name: str, overrides: list[str], out: Path) -> dict:
    """Train one variant; its final held-out figures, bits per image and seconds."""
    cmd = [sys.executable, "-m", "flowmo", "train", "--config", str(REPO / "configs" / "demo.yaml"), "--out", str(out)]
    for o in [*VARIANTS[name][1], *QUIET, *overrides]:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{name}: flowmo train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    last: dict = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval/ema/psnr" in rec:
            last = rec
    config = json.loads((out / "config.json").read_text())
    return {"psnr": last["eval/ema/psnr"], "ssim": last["eval/ema/ssim"], "seconds": seconds,
            "steps": last.get("step"), "config": config}


def bits_per_image(config: dict) -> str:
    import flowmo

    spec = flowmo.FlowMoSpec.model_validate(config["model"])
    bits = spec.bits_per_token
    return "continuous" if bits is None else f"{bits * spec.code_length:.0f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    p.add_argument("--steps", type=int, default=None, help="train.steps for every variant (default: the demo's)")
    p.add_argument("--set", action="append", default=[], help="an override for every variant (repeatable)")
    p.add_argument("--keep", type=Path, default=None, help="keep the runs under this folder")
    a = p.parse_args(argv)
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps must be a positive number of steps, got {a.steps}")
    overrides = list(a.set) + ([f"train.steps={a.steps}"] if a.steps else [])
    root = a.keep or Path(tempfile.mkdtemp(prefix="flowmo-bottlenecks-"))
    rows = []
    for name in a.only:
        r = run(name, overrides, root / name)
        rows.append((name, r))
        print(f"{name}: {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f} ({r['seconds']:.0f} s)", file=sys.stderr, flush=True)
    print(f"configs/demo.yaml, overrides for all: {' '.join(overrides) or 'none'}; held-out EMA figures, 1 Euler step\n")
    print("| bottleneck | bits per image | held-out PSNR (dB) | SSIM | train + eval s |")
    print("|---|---|---|---|---|")
    for name, r in rows:
        print(f"| {VARIANTS[name][0]} | {bits_per_image(r['config'])} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
              f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
