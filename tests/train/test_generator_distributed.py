"""Two processes under torchrun (gloo) train a token generator like one process with the same
global batch (2 ranks x 1 micro-batch = 1 rank x 2 accumulated micro-batches)."""

import json
import os
import subprocess
import sys

import torch

from flowmo.folders.checkpoints import latest_checkpoint, load_checkpoint
from flowmo.train.config import load_generator_config
from flowmo.train.generator_trainer import GeneratorTrainer

from conftest import HANG_GUARD_S

from .test_generator_training import write_token_set


def _config(tokens, accum):
    return {
        "generator": {"name": "maskgit", "width": 32, "depth": 1, "heads": 2, "label_dropout": 0.2},
        "train": {
            "tokens": str(tokens), "steps": 3, "seed": 5, "device": "cpu", "autocast": "off",
            "optim": {"lr": 1e-3, "batch_size": 3, "grad_accum": accum},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 3},
            "log": {"every": 1, "tensorboard": False, "progress": False},
        },
    }


def test_two_gloo_ranks_equal_one_process_with_accumulation(tmp_path):
    tokens = write_token_set(tmp_path / "tokens", rows_per_class=5)
    cfg = tmp_path / "ddp.json"
    cfg.write_text(json.dumps(_config(tokens, accum=1)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flowmo", "train-generator", "--config", str(cfg), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    single = GeneratorTrainer(load_generator_config(_config(tokens, accum=2)), tmp_path / "single")
    single.fit()

    parts, state = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"), ["model", "ema"])
    assert state["step"] == 3 and state["world_size"] == 2
    assert state["data_position"] == 3 * 2 * 1 * 3  # steps x ranks x micro-batches x rows
    sd = single.model.state_dict()
    assert parts["model"].keys() == sd.keys()
    for k, v in sd.items():
        err = (parts["model"][k] - v).abs().max().item()
        assert err <= 1e-5, f"{k}: {err}"
    for k, v in single.ema.items():
        assert (parts["ema"][k] - v).abs().max().item() <= 1e-5, k
    # the runs trained (weights moved from the initial ones, identical in both by train.seed)
    init = GeneratorTrainer(load_generator_config(_config(tokens, accum=2)), tmp_path / "init")
    moved = sum(not torch.equal(init.model.state_dict()[k], v) for k, v in sd.items())
    assert moved > 0
