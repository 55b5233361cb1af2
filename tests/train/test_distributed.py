"""Two processes under torchrun (gloo) train like one process with the same global batch,
also with gradient checkpointing and bf16 autocast (then to bf16's tolerance)."""

import os
import subprocess
import sys

import pytest

from flowmo.train import Trainer, load_config
from flowmo.train.checkpoint import latest_checkpoint, load_checkpoint

from conftest import HANG_GUARD_S, random_png_folder


def _config(folder, accum, fast_paths=False):
    model = "tiny"
    if fast_paths:  # gradient checkpointing in every block and bf16 autocast
        model = {"preset": "tiny", "encoder": {"gradient_checkpointing": True},
                 "decoder": {"gradient_checkpointing": True}}
    return {
        "model": model,
        "train": {
            "steps": 3, "seed": 5,
            "data": {"folder": str(folder)},
            "optim": {"lr": 1e-3, "batch_size": 2, "grad_accum": accum},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 3},
            "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
            "device": "cpu",
            "autocast": "bf16" if fast_paths else "off",
        },
    }


@pytest.mark.parametrize("fast_paths, tol", [(False, 1e-5), (True, 2e-3)], ids=["float32", "checkpointing+bf16"])
def test_two_gloo_ranks_equal_one_process_with_accumulation(tmp_path, fast_paths, tol):
    folder = tmp_path / "images"
    random_png_folder(folder, 8, seed=0)

    import json

    cfg2 = tmp_path / "ddp.json"
    cfg2.write_text(json.dumps(_config(folder, accum=1, fast_paths=fast_paths)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flowmo.train.cli", "--config", str(cfg2), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    single = Trainer(load_config(_config(folder, accum=2, fast_paths=fast_paths)), tmp_path / "single")
    single.fit()

    ddp_parts, ddp_state = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"), ["model", "ema"])
    assert ddp_state["step"] == 3 and ddp_state["world_size"] == 2
    for k, v in single.model.state_dict().items():
        err = (ddp_parts["model"][k] - v).abs().max().item()
        assert err <= tol, f"{k}: {err}"
    for k, v in single.ema.items():
        assert (ddp_parts["ema"][k] - v).abs().max().item() <= tol
