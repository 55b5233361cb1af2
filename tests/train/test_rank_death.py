"""Distributed faults: a rank that dies (SIGKILL) or hangs (SIGSTOP) under torchrun makes the
whole job exit with an error within a bounded time, leaving no worker process behind.

The jobs are real: ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m
flowmo train`` training the tiny model with gloo on the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DIST_TIMEOUT_S = 30  # train.dist_timeout_s of the jobs: the collective timeout, the backstop for a hung rank
HUNG_TIMEOUT_S = 10  # a shorter one for the hung-rank test
TORCHRUN_GRACE_S = 30  # torchrun's agent: SIGTERM to the other workers, SIGKILL after this

from conftest import HANG_GUARD_S, random_png_folder


def _config(folder: Path, dist_timeout_s: int) -> dict:
    return {
        "model": "tiny",
        "train": {
            "steps": 100000, "seed": 0, "device": "cpu", "dist_timeout_s": dist_timeout_s,
            "data": {"folder": str(folder)},
            "optim": {"lr": 1e-3, "batch_size": 2},
            "checkpoint": {"every": 1000},
            "log": {"every": 1, "images_every": 100000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
        },
    }


@pytest.fixture
def job(tmp_path, request):
    """Start a 2-rank training job; yields (process, out dir, log file); kills what is left.
    Indirect parameter: train.dist_timeout_s (default DIST_TIMEOUT_S)."""
    folder = tmp_path / "images"
    random_png_folder(folder, 6, seed=0)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(_config(folder, getattr(request, "param", DIST_TIMEOUT_S))))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
           and not k.startswith("TORCHELASTIC")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    log = tmp_path / "job.log"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flowmo", "train", "--config", str(cfg), "--out", str(out)]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.launched = time.monotonic()
    try:
        yield proc, out, log
    finally:
        for pid in _workers(out):  # a failed test must not leave workers running
            _signal(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # the process ended meanwhile, or is not ours to read
        return b""


def _workers(out: Path, rank: int | None = None) -> list[int]:
    """Live worker processes of the job writing to ``out`` (optionally only the given RANK)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        args = _read(f"/proc/{entry}/cmdline").split(b"\0")
        if (b"flowmo" not in args or b"train" not in args or str(out).encode() not in args
                or b"torch.distributed.run" in args):
            continue
        status = _read(f"/proc/{entry}/status")
        if b"State:\tZ" in status:  # a zombie has exited already
            continue
        environ = _read(f"/proc/{entry}/environ").split(b"\0")
        if rank is not None and f"RANK={rank}".encode() not in environ:
            continue
        pids.append(int(entry))
    return pids


def _wait_for_training(proc, out: Path, log: Path) -> float:
    """Wait for the job's first logged training step (an event; HANG_GUARD_S only catches a hang).
    Returns the seconds from launch to then: this machine's start-up time under its present load,
    from which the tests below derive their slack."""
    t0 = time.monotonic()
    metrics = out / "metrics.jsonl"
    while time.monotonic() - t0 < HANG_GUARD_S:
        if metrics.is_file():
            lines = metrics.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= 1:
                return time.monotonic() - proc.launched
        assert proc.poll() is None, f"the job ended before training:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)  # polling interval, not a limit
    raise TimeoutError(f"no training step within {HANG_GUARD_S} s:\n{log.read_text()[-3000:]}")


def _slack(startup_s: float) -> float:
    """Time allowed on top of the timeouts a fault must wait out: a job that needed ``startup_s``
    to start (imports, process group, first step) gets three times that, at least 60 s, to notice
    the fault, stop and reap its workers, so a loaded machine earns a proportionally longer bound."""
    return max(60.0, 3.0 * startup_s)


def _assert_job_fails_in_time(proc, out: Path, log: Path, t0: float, bound: float, slack: float) -> float:
    try:
        rc = proc.wait(timeout=bound)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the job still runs {bound:.0f} s after the fault:\n{log.read_text()[-3000:]}")
    elapsed = time.monotonic() - t0
    assert rc != 0, log.read_text()[-3000:]
    deadline = time.monotonic() + slack
    while _workers(out) and time.monotonic() < deadline:
        time.sleep(0.1)  # polling interval, not a limit
    assert not _workers(out), "worker processes were left running"
    return elapsed


@pytest.mark.parametrize("rank", [1, 0])
def test_a_killed_rank_makes_the_job_exit_with_an_error(job, rank):
    proc, out, log = job
    slack = _slack(_wait_for_training(proc, out, log))
    victims = _workers(out, rank=rank)
    assert len(victims) == 1, victims
    assert _workers(out, rank=1 - rank), f"rank {1 - rank} is not running"
    t0 = time.monotonic()
    os.kill(victims[0], signal.SIGKILL)
    # the survivor's next collective fails at once (connection reset by the dead peer) and torchrun's
    # agent, seeing a worker exit with -9, stops the rest; the collective timeout is not needed, but
    # the bound allows for it (a survivor blocked in a collective) and for the agent's grace period
    elapsed = _assert_job_fails_in_time(proc, out, log, t0, bound=DIST_TIMEOUT_S + TORCHRUN_GRACE_S + slack,
                                        slack=slack)
    text = log.read_text()
    assert "exitcode  : -9" in text or "Signal 9" in text, text[-3000:]
    print(f"rank {rank} SIGKILLed: the job exited with an error after {elapsed:.1f} s")


@pytest.mark.parametrize("job", [HUNG_TIMEOUT_S], indirect=True)
def test_a_hung_rank_makes_the_job_exit_after_the_collective_timeout(job):
    proc, out, log = job
    slack = _slack(_wait_for_training(proc, out, log))
    victims = _workers(out, rank=1)
    assert len(victims) == 1, victims
    t0 = time.monotonic()
    os.kill(victims[0], signal.SIGSTOP)  # alive but silent: its sockets stay open
    # rank 0's collective times out after dist_timeout_s and it exits with an error; torchrun's agent
    # then SIGTERMs the stopped rank and SIGKILLs it TORCHRUN_GRACE_S later
    elapsed = _assert_job_fails_in_time(proc, out, log, t0, bound=HUNG_TIMEOUT_S + TORCHRUN_GRACE_S + slack,
                                        slack=slack)
    assert elapsed >= HUNG_TIMEOUT_S * 0.9, f"exited after {elapsed:.1f} s, before the collective timeout"
    assert "Timed out" in log.read_text(), log.read_text()[-3000:]
    print(f"rank 1 SIGSTOPped: the job exited with an error after {elapsed:.1f} s")
