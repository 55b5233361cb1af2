"""The Stage 1A step of another checkout (its own code, eager float32, its default Adam) as a
fraction of the float32 matmul rate, timed with that checkout's ``benchmarks/bench.py``
(``Matmul``, ``ratio_to_matmul``): the "before" rows of ``bench.py --only-step``.

    git worktree add ../old e34708f
    python benchmarks/checkout_step.py ../old --presets small medium

Batch 4; FLOPs: encoder and decoder forward (the checkout's ``benchmarks/flops.py``), backward
counted as twice the forward; the median of ``--rounds`` rounds, each timed between two matmuls.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkout", type=Path, help="the other checkout's root (it needs flowmo/ and benchmarks/bench.py)")
    p.add_argument("--presets", nargs="+", default=["small", "medium"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    root = a.checkout.resolve()
    if not (root / "flowmo").is_dir() or not (root / "benchmarks" / "bench.py").is_file():
        p.error(f"checkout must be a flowmo checkout with flowmo/ and benchmarks/bench.py, got {root}")
    sys.path.insert(0, str(root))  # the other checkout's flowmo and benchmarks, not this one's
    import torch

    import flowmo
    from benchmarks import bench
    from benchmarks.flops import decoder_flops, encoder_flops

    print(f"checkout {root}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {a.batch}\n")
    print("| preset | step | seconds | of float32 matmul |")
    print("|---|---|---|---|")
    for name in a.presets:
        spec = flowmo.get_preset(name)
        torch.manual_seed(0)
        model = flowmo.build(spec).train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        x = torch.rand(a.batch, 3, spec.image_size, spec.image_size) * 2 - 1
        g = torch.Generator().manual_seed(0)

        def step():
            opt.zero_grad(set_to_none=True)
            model.loss(x, generator=g).total.backward()
            opt.step()

        fl = 3 * (encoder_flops(spec) + decoder_flops(spec)) * a.batch
        r = bench.ratio_to_matmul(step, fl, bench.Matmul(torch.device("cpu"), torch.float32), a.rounds)
        print(f"| {name} | Stage 1A, eager float32 | {r['best_s']:.2f} | {bench._fmt_ratio(r)} |", flush=True)


if __name__ == "__main__":
    main()
