"""What the README claims about reproducibility, tested (README "Reproducibility",
docs/reliability.md):

* on one machine and one PyTorch build, at a fixed intra-op thread count, a training run is
  bitwise repeatable;
* another thread count may change the arithmetic (on an Intel Xeon with PyTorch 2.13.0+cpu,
  1 and 2 threads give other bits; on the AMD EPYC machines here, the same bits), but only at
  float32 rounding level, as another machine's kernels do;
* on another machine the kernels differ (ATen's instruction-set paths, the BLAS's per-CPU
  code paths): one training step then differs only at float32 rounding level, and the
  difference grows over a long run (measured spread in docs/reliability.md).

Each case runs the demo config for a few steps in a fresh process, with the environment
that selects the threads or the kernels.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import HANG_GUARD_S

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"

SCRIPT = r"""
import hashlib, json, sys
import torch
from flowmo.train import Trainer, load_config
steps, out, threads = int(sys.argv[1]), sys.argv[2], sys.argv[4]
cfg = load_config(sys.argv[3], [f"train.steps={steps}", f"train.threads={threads}", "train.eval.enabled=false",
                                "train.compile=false", "train.autocast=off",
                                "train.log.progress=false",
                                "train.log.tensorboard=false", "train.log.images_every=100000",
                                f"train.checkpoint.every={steps}"])
trainer = Trainer(cfg, out, log=lambda s: None)
summary = trainer.fit()
state = trainer.model.state_dict()
h = hashlib.sha256()
for k in sorted(state):
    h.update(state[k].detach().contiguous().numpy().tobytes())
torch.save(torch.cat([state[k].detach().flatten().double() for k in sorted(state)]), out + "/flat.pt")
print(json.dumps({"hash": h.hexdigest(), "threads": torch.get_num_threads(),
                  "capability": torch.backends.cpu.get_cpu_capability(),
                  "loss": summary["last_terms"]["total"]}))
"""


def _run(tmp_path, name, steps, threads="null", **env):
    """``threads``: the run's ``train.threads`` (the demo config sets 2; "null" keeps the
    process's own count, i.e. OMP_NUM_THREADS when set). The demo's step runs eager in float32
    here (its compile would take a minute per process, and the tolerances below are float32's)."""
    out = tmp_path / name
    full_env = {**os.environ, **env}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(steps), str(out), str(DEMO), threads], env=full_env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["flat"] = torch.load(out / "flat.pt")
    return result


def test_same_machine_and_thread_count_is_bitwise_repeatable(tmp_path):
    """Two fresh processes (so also two runs) with the same 2 intra-op threads: same bits."""
    one = _run(tmp_path, "a", 2, threads="2")
    two = _run(tmp_path, "b", 2, threads="2")
    assert (one["threads"], two["threads"]) == (2, 2)
    assert one["hash"] == two["hash"]


def test_another_thread_count_changes_a_training_step_only_at_rounding_level(tmp_path):
    """1 and 2 intra-op threads: identical on some CPUs (AMD EPYC here), not on others (an
    Intel Xeon: the BLAS and ATen's reductions split the work by thread); either way one
    step's weights differ by float32 round-off only."""
    one = _run(tmp_path, "t1", 1, threads="1")
    two = _run(tmp_path, "t2", 1, threads="2")
    assert (one["threads"], two["threads"]) == (1, 2)
    diff = (two["flat"] - one["flat"]).norm() / one["flat"].norm()
    assert float(diff) <= 1e-6, f"relative weight difference after one step: {float(diff):.3g}"
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_other_kernels_change_a_training_step_only_at_rounding_level(tmp_path):
    """ATEN_CPU_CAPABILITY=default emulates a CPU without AVX2/AVX-512 for ATen's own
    kernels: the same step's weights then differ by float32 round-off only."""
    native = _run(tmp_path, "native", 1)
    plain = _run(tmp_path, "plain", 1, ATEN_CPU_CAPABILITY="default")
    assert plain["capability"] == "DEFAULT"
    diff = (plain["flat"] - native["flat"]).norm() / native["flat"].norm()
    assert float(diff) <= 1e-6, f"relative weight difference after one step: {float(diff):.3g}"
    assert plain["loss"] == pytest.approx(native["loss"], rel=1e-5)
