"""Speed of two checkouts of flowmo, interleaved: a Stage 1A training step (loss + backward) and a
decode with the "fast" sampler (10 decoder calls), each round in a fresh process per checkout,
old then new, so that the machine's load falls on both alike.

    python benchmarks/compare_checkouts.py --old /path/to/old/checkout --new . --rounds 4

Prints a markdown table: the median over rounds of new/old and its range (these machines are
shared and noisy: compare ratios from one run, never absolute times across runs).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

ROUND = r"""
import statistics, time, torch, flowmo
torch.set_num_threads(1)
torch.manual_seed(0)
m = flowmo.build(PRESET)
x = torch.rand(BATCH, 3, m.spec.image_size, m.spec.image_size) * 2 - 1
g = torch.Generator().manual_seed(0)
def step():
    m.loss(x, generator=g).total.backward()
m.train(); step()
t = []
for _ in range(3):
    a = time.perf_counter(); step(); t.append(time.perf_counter() - a)
m.eval()
with torch.no_grad():
    code = m.encode(x)
    m.decode(code, sampler="fast")
    d = []
    for _ in range(2):
        a = time.perf_counter(); m.decode(code, sampler="fast"); d.append(time.perf_counter() - a)
print(statistics.median(t), statistics.median(d))
"""


def one_round(checkout: str, preset: str, batch: int) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": os.path.abspath(checkout), "OMP_NUM_THREADS": "1"}
    code = ROUND.replace("PRESET", repr(preset)).replace("BATCH", str(batch))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    step, decode = map(float, out.stdout.split()[-2:])
    return step, decode


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True, help="the checkout to compare against (its root folder)")
    p.add_argument("--new", default=".", help="the checkout measured (default: this one)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--preset", default="small")
    p.add_argument("--batch", type=int, default=4)
    a = p.parse_args()
    ratios: dict[str, list[float]] = {"Stage 1A step": [], "decode, 10 calls": []}
    for _ in range(a.rounds):
        old, new = one_round(a.old, a.preset, a.batch), one_round(a.new, a.preset, a.batch)
        for k, o, n in zip(ratios, old, new):
            ratios[k].append(n / o)
    print(f"| {a.preset}, batch {a.batch}, 1 thread | new/old, median of {a.rounds} | range |")
    print("|---|---|---|")
    for k, r in ratios.items():
        print(f"| {k} | {statistics.median(r):.3f} | {min(r):.3f} - {max(r):.3f} |")


if __name__ == "__main__":
    main()
