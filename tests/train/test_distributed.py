"""Two processes under torchrun (gloo) train like one process with the same global batch,
also with gradient checkpointing and bf16 autocast (then to bf16's tolerance), and in few-step
post-training by distillation (each rank's frozen teacher)."""

import os
import subprocess
import sys

import pytest

from flowmo.train import Trainer, load_config
from flowmo.folders.checkpoints import latest_checkpoint, load_checkpoint

from conftest import HANG_GUARD_S, random_png_folder


def _config(folder, accum, fast_paths=False, init_from=None):
    model = "tiny"
    if fast_paths:  # gradient checkpointing in every block and bf16 autocast
        model = {"preset": "tiny", "encoder": {"gradient_checkpointing": True},
                 "decoder": {"gradient_checkpointing": True}}
    stage = {}
    if init_from is not None:  # few-step distillation from a model folder
        model = {"preset": "tiny", "posttrain": {"name": "distillation", "k": 2, "teacher": {"steps": 4}}}
        stage = {"stage": "1b", "init_from": str(init_from)}
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
            **stage,
        },
    }


@pytest.mark.parametrize("fast_paths, tol, distill", [(False, 1e-5, False), (True, 2e-3, False), (False, 1e-5, True)],
                         ids=["float32", "checkpointing+bf16", "distillation"])
def test_two_gloo_ranks_equal_one_process_with_accumulation(tmp_path, fast_paths, tol, distill):
    folder = tmp_path / "images"
    random_png_folder(folder, 8, seed=0)
    init = None
    if distill:
        import flowmo
        import torch

        torch.manual_seed(0)
        init = flowmo.FlowMo(flowmo.get_preset("tiny")).save_pretrained(tmp_path / "init")

    import json

    cfg2 = tmp_path / "ddp.json"
    cfg2.write_text(json.dumps(_config(folder, accum=1, fast_paths=fast_paths, init_from=init)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flowmo", "train", "--config", str(cfg2), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    single = Trainer(load_config(_config(folder, accum=2, fast_paths=fast_paths, init_from=init)), tmp_path / "single")
    single.fit()

    ddp_parts, ddp_state = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"), ["model", "ema"])
    assert ddp_state["step"] == 3 and ddp_state["world_size"] == 2
    for k, v in single.model.state_dict().items():
        err = (ddp_parts["model"][k] - v).abs().max().item()
        assert err <= tol, f"{k}: {err}"
    for k, v in single.ema.items():
        assert (ddp_parts["ema"][k] - v).abs().max().item() <= tol
