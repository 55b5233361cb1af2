"""Training images/s of the demo configuration: a baseline against this checkout's default.

    python benchmarks/demo_throughput.py                              # eager float32, 1 thread vs configs/demo.yaml
    python benchmarks/demo_throughput.py --baseline-checkout ../old   # an older checkout's own demo vs this one's

Each side trains ``--steps`` steps of its ``configs/demo.yaml`` (evaluation, images and
checkpoints off) in a fresh process, the two sides interleaved round by round (baseline, new,
baseline, new, ...), so that a machine's drifting load hits both alike. A side's images/s is
the median over its log intervals after the first (which holds start-up, and with
``train.compile`` the compile, reported apart as its first step's seconds). Prints a markdown
table: each side's median images/s, and the median and range of the per-round ratio new /
baseline.

The baseline without ``--baseline-checkout`` is this checkout run the way the demo ran before
its throughput work: ``train.threads=1 train.autocast=off train.compile=false
train.data.workers=1``; with it, the other checkout's code and demo config as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EAGER = ["train.threads=1", "train.autocast=off", "train.compile=false", "train.data.workers=1"]
QUIET = ["train.eval.enabled=false", "train.log.tensorboard=false", "train.log.progress=false"]


def run_side(checkout: Path, overrides: list[str], steps: int, every: int) -> dict:
    """Train ``steps`` steps of ``checkout``'s demo config in a fresh process; its images/s per
    log interval and the seconds of each step that compiled (``compile_s``)."""
    with tempfile.TemporaryDirectory() as out:
        args = [f"train.steps={steps}", f"train.log.every={every}", f"train.checkpoint.every={steps + 1}",
                f"train.log.images_every={steps + 1}", *QUIET, *overrides]
        code = ("import json, sys; from flowmo.train import Trainer, load_config; "
                "t = Trainer(load_config(sys.argv[1], sys.argv[3:]), sys.argv[2], log=lambda s: None); "
                "print(json.dumps(t.fit().get('compile_s', [])))")
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        done = subprocess.run([sys.executable, "-c", code, str(checkout / "configs" / "demo.yaml"), out,
                               *args],
                              cwd=checkout, env=env, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"the run in {checkout} failed:\n{done.stderr[-3000:]}")
        rates = [json.loads(line).get("images_per_s") for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        rates = [r for r in rates if r is not None]
        return {"rates": rates[1:], "compile_s": json.loads(done.stdout.strip().splitlines()[-1])}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-checkout", type=Path, default=None,
                    help="another checkout whose own demo config is the baseline (default: this one, eager)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60, help="steps per run (the first log interval is dropped)")
    ap.add_argument("--every", type=int, default=10, help="steps per log interval")
    ap.add_argument("--set", action="append", default=[], help="an override for the new side (repeatable)")
    a = ap.parse_args(argv)
    if a.rounds < 1 or a.every < 1:
        ap.error(f"--rounds and --every must be at least 1, got {a.rounds} and {a.every}")
    if a.steps < 2 * a.every:
        ap.error(f"--steps must be at least twice --every (the first log interval is dropped), got {a.steps} and {a.every}")
    base = a.baseline_checkout
    if base is not None and not (base / "configs" / "demo.yaml").is_file():
        ap.error(f"--baseline-checkout must be a flowmo checkout with configs/demo.yaml, got {base}")
    base_repo = (a.baseline_checkout or REPO).resolve()
    base_over = [] if a.baseline_checkout else EAGER
    sides = {"baseline": [], "new": []}
    compile_s: list[float] = []
    for r in range(a.rounds):
        for name, repo, over in (("baseline", base_repo, base_over), ("new", REPO, a.set)):
            got = run_side(repo, over, a.steps, a.every)
            sides[name].append(statistics.median(got["rates"]))
            compile_s += got["compile_s"] if name == "new" else []
            print(f"round {r + 1}: {name} {sides[name][-1]:.1f} images/s", file=sys.stderr, flush=True)
    ratios = [n / b for n, b in zip(sides["new"], sides["baseline"])]
    base_desc = str(a.baseline_checkout) if a.baseline_checkout else "this checkout, " + " ".join(EAGER)
    print(f"| side | config | images/s (median of {a.rounds} rounds) |")
    print("|---|---|---|")
    print(f"| baseline | {base_desc} | {statistics.median(sides['baseline']):.1f} |")
    print(f"| new | configs/demo.yaml {' '.join(a.set)} | {statistics.median(sides['new']):.1f} |")
    print()
    print(f"new / baseline: median {statistics.median(ratios):.2f} (range {min(ratios):.2f} - {max(ratios):.2f}), "
          f"{a.rounds} interleaved rounds of {a.steps} steps"
          + (f"; compile {statistics.median(compile_s):.0f} s (first step)" if compile_s else ""))


if __name__ == "__main__":
    main()
