"""Training faults: non-finite losses, full disks, SIGTERM and SIGKILL at random moments."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from flowmo.model import LossOutput
from flowmo.train import Trainer, TrainingStopped, load_config
from flowmo.folders.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint

from conftest import HANG_GUARD_S, random_png_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    random_png_folder(root, 6, seed=1)
    return root


def raw_config(folder, **train):
    cfg = {
        "model": "tiny",
        "train": {
            "steps": 6, "seed": 2, "max_nonfinite": 3,
            "data": {"folder": str(folder)},
            "optim": {"lr": 1e-3, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 1, "keep_last": 3},
            "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
        },
    }
    cfg["train"].update(train)
    return cfg


def test_nonfinite_loss_skips_the_step_and_too_many_stop_the_run(tmp_path, folder):
    t = Trainer(load_config(raw_config(folder, checkpoint={"every": 1, "keep_last": 10})), tmp_path / "run")
    real = t.model.forward
    bad_steps = {1, 3, 4, 5}

    def forward(*a, **k):
        out = real(*a, **k)
        if t.step in bad_steps:
            return LossOutput(out.total * float("nan"), out.terms)
        return out

    t.model.forward = forward
    with pytest.raises(TrainingStopped, match="3 non-finite steps in a row"):
        t.fit()
    assert t.counters.nonfinite_total == 4
    # the step that stopped the run was not saved; skipped steps changed no weight
    ckpts = {s: load_checkpoint(p, ["model"])[0]["model"] for s, p in list_checkpoints(tmp_path / "run" / "checkpoints")}
    assert sorted(ckpts) == [1, 2, 3, 4, 5]
    same = lambda a, b: all(torch.equal(ckpts[a][k], ckpts[b][k]) for k in ckpts[a])
    assert same(1, 2) and same(3, 4) and same(4, 5)  # the steps run at 1, 3 and 4 were skipped
    assert not same(2, 3)  # the step run at 2 was good
    assert all(torch.isfinite(v).all() for v in ckpts[5].values())


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import safetensors.torch as st

    root = tmp_path / "ckpts"
    save_checkpoint(root, 1, {"model": {"w": torch.ones(2)}}, {"step": 1})

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(st, "save_file", full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(root, 2, {"model": {"w": torch.zeros(2)}}, {"step": 2})
    assert [s for s, _ in list_checkpoints(root)] == [1]
    assert sorted(p.name for p in root.iterdir()) == ["ckpt-00000001"]


def _launch(cfg_file, out, resume=False):
    cmd = [sys.executable, "-m", "flowmo", "train", "--config", str(cfg_file), "--out", str(out)]
    if resume:
        cmd.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)


def _wait_for_step(out, step, proc):
    """Wait until the run in ``out`` has logged ``step`` (or its process has ended); returns the
    time.monotonic() at which that was seen. An event, not a time limit: HANG_GUARD_S only
    catches a hang."""
    t0 = time.monotonic()
    m = out / "metrics.jsonl"
    while time.monotonic() - t0 < HANG_GUARD_S:
        if m.is_file():
            lines = m.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= step:
                return time.monotonic()
        if proc.poll() is not None:
            return time.monotonic()
        time.sleep(0.02)  # polling interval of the wait, not a limit
    raise TimeoutError(f"training did not reach step {step} in {HANG_GUARD_S} s")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, folder):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(raw_config(folder, steps=10000, checkpoint={"every": 100000})))
    proc = _launch(cfg, tmp_path / "run")
    _wait_for_step(tmp_path / "run", 2, proc)
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 143, output  # 128 + SIGTERM: stopped, not finished
    assert "SIGTERM" in output
    step = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and load_checkpoint(ckpt, [])[1]["step"] >= step


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path, folder):
    raw = raw_config(folder, steps=6)
    reference = Trainer(load_config(raw), tmp_path / "reference")
    reference.fit()
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(raw))
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for attempt in range(12):
        proc = _launch(cfg, out, resume=attempt > 0)
        if kills < 3:
            start = (json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"]
                     if (out / "metrics.jsonl").is_file() else 0)
            # the kill lands a random fraction of this machine's measured step time after a step
            # is logged, whatever the machine's speed or load: mid-step or mid-checkpoint-write
            seen = _wait_for_step(out, start + 1, proc)
            step_s = _wait_for_step(out, start + 2, proc) - seen
            time.sleep(rng.uniform(0.0, 1.0) * step_s)
            if proc.poll() is None:
                proc.kill()
                kills += 1
            proc.wait()
            continue
        output, _ = proc.communicate(timeout=HANG_GUARD_S)
        assert proc.returncode == 0, output
        break
    assert kills >= 1
    parts, state = load_checkpoint(latest_checkpoint(out / "checkpoints"), ["model", "ema"])
    assert state["step"] == 6
    for k, v in reference.model.state_dict().items():
        assert torch.equal(parts["model"][k], v), k
    for k, v in reference.ema.items():
        assert torch.equal(parts["ema"][k], v), k
