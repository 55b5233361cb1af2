"""Every step-valued field of the training config means what its description says, at the
boundary values: 0 (where accepted; refused otherwise), 1, train.steps and beyond.

Tiny 3-step runs on the CPU. "Step k" is the k-th optimizer step (k = 1 .. train.steps).
"""

from __future__ import annotations

import json

import pytest
import torch

from flowmo.model import LossOutput
from flowmo.train import Trainer, TrainingStopped, load_config
from flowmo.folders.checkpoints import list_checkpoints, load_checkpoint

from conftest import random_png_folder

STEPS = 3
LR = 1e-3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_png_folder(tmp_path_factory.mktemp("imgs"), 6, seed=7)


def raw(folder, **train) -> dict:
    cfg = {
        "model": "tiny",
        "train": {
            "steps": STEPS, "seed": 1, "device": "cpu",
            "data": {"folder": str(folder)},
            "optim": {"lr": LR, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 1, "keep_last": 100},
            "log": {"every": 1, "images_every": 1000, "images": 1, "tensorboard": False, "progress": False},
            "eval": {"enabled": False, "images": 1, "steps": 1},
        },
    }
    for k, v in train.items():
        if isinstance(v, dict):
            cfg["train"][k] = {**cfg["train"].get(k, {}), **v}
        else:
            cfg["train"][k] = v
    return cfg


def trainer(folder, out, resume=False, **train) -> Trainer:
    return Trainer(load_config(raw(folder, **train)), out, resume=resume, log=lambda s: None)


def records(out) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def saved_steps(out) -> list[int]:
    return [s for s, _ in list_checkpoints(out / "checkpoints")]


def params(model, prefix=""):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith(prefix)}


def same(a, b) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("path", [
    "steps", "max_nonfinite", "optim.grad_accum", "ema.every", "checkpoint.every", "checkpoint.keep_last",
    "checkpoint.keep_every", "log.every", "log.images_every", "eval.every", "eval.steps",
])
def test_zero_is_refused_where_it_means_nothing(folder, path):
    cfg = raw(folder)
    node = cfg["train"]
    *parents, leaf = path.split(".")
    for k in parents:
        node = node[k]
    node[leaf] = 0
    with pytest.raises(ValueError, match=rf"train\.{path}: input should be greater than 0"):
        load_config(cfg)


@pytest.mark.parametrize("kw", [{"freeze_encoder_at": -1}, {"optim": {"warmup_steps": -1}}])
def test_negative_values_are_refused(folder, kw):
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        load_config(raw(folder, **kw))


# The per-step EMA decays d_n of step n with train.ema.decay 0.9, by hand: without warm-up 0.9;
# with it min(0.9, n / (n + 9)) and d_1 = 0 (diffusers' EMAModel warm-up): 0, 2/11, 3/12, 4/13.
EMA_DECAYS = {False: {1: 0.9, 2: 0.9, 3: 0.9, 4: 0.9}, True: {1: 0.0, 2: 2 / 11, 3: 3 / 12, 4: 4 / 13}}


def _keep(warmup: bool, after: int, upto: int) -> float:
    """The share of the EMA kept by one update standing for steps after+1 .. upto."""
    keep = 1.0
    for n in range(after + 1, upto + 1):
        keep *= EMA_DECAYS[warmup][n]
    return keep


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_every_beyond_steps_is_accepted_and_updates_once_at_the_end(folder, tmp_path, warmup):
    """every > steps used to leave the EMA at the initial weights (exported as the model):
    now the last step makes one update standing for all the steps."""
    t = trainer(folder, tmp_path / "run", ema={"every": STEPS + 1, "decay": 0.9, "warmup": warmup})
    start = {k: v.double() for k, v in t.ema.items()}
    t.fit()
    p = params(t.model)
    d = _keep(warmup, 0, STEPS)
    for n, e in start.items():
        torch.testing.assert_close(t.ema[n].double(), d * e + (1 - d) * p[n].double(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- train.steps
def test_steps_one_trains_exactly_one_step_and_a_finished_run_trains_no_more(folder, tmp_path):
    out = tmp_path / "run"
    t = trainer(folder, out, steps=1)
    before = params(t.model)
    summary = t.fit()
    assert summary["end_step"] == 1 and t.step == 1 and saved_steps(out) == [1]
    assert [r["step"] for r in records(out)] == [1]
    assert not same(before, params(t.model))
    # resumed at its end: nothing more is trained, saved or logged
    again = trainer(folder, out, resume=True, steps=1)
    weights = params(again.model)
    assert again.fit()["end_step"] == 1 and same(weights, params(again.model))
    assert saved_steps(out) == [1] and len(records(out)) == 1


# ----------------------------------------------------------------------------- freeze_encoder_at
def _encoder_updates(t: Trainer) -> list[bool]:
    """For each step of the run: did it change the encoder's weights?"""
    changed = []
    while t.step < t.tc.steps:
        before = params(t.model, "encoder.")
        t.train_step()
        changed.append(not same(before, params(t.model, "encoder.")))
    return changed


@pytest.mark.parametrize("f", [0, 1, 2, STEPS, STEPS + 1, None])
def test_freeze_encoder_at_trains_the_encoder_for_exactly_n_steps(folder, tmp_path, f):
    t = trainer(folder, tmp_path / "run", freeze_encoder_at=f)
    n = STEPS if f is None else min(f, STEPS)
    if f == 0:  # frozen before the first step: the optimizer never held an encoder parameter
        assert t.encoder_frozen
        assert not any(name.startswith("encoder.") for name in t._opt_names.values())
    assert _encoder_updates(t) == [True] * n + [False] * (STEPS - n)
    assert t.encoder_frozen == (f is not None and f <= STEPS)


@pytest.mark.parametrize("f", [0, 2])
def test_freeze_at_the_resume_point_resumes_bitwise(folder, tmp_path, f):
    """Interrupted after step 2 (checkpoint every 2), resumed: equals the uninterrupted run; f = 2
    puts the freeze exactly at the resume point."""
    kw = dict(steps=4, freeze_encoder_at=f, checkpoint={"every": 2})
    full = trainer(folder, tmp_path / "full", **kw)
    full.fit()
    trainer(folder, tmp_path / "part", **{**kw, "steps": 2}).fit()
    resumed = trainer(folder, tmp_path / "part", resume=True, **kw)
    assert resumed.step == 2 and resumed.encoder_frozen
    resumed.fit()
    assert same(params(full.model), params(resumed.model))
    assert all(torch.equal(full.ema[k], resumed.ema[k]) for k in full.ema)


def test_a_checkpoint_written_before_the_freeze_is_frozen_on_resume(folder, tmp_path):
    """A run that reached step 2 unfrozen (freeze_encoder_at unset) resumed with freeze_encoder_at=2:
    frozen before step 3, equal to a run that had freeze_encoder_at=2 all along."""
    kw = dict(steps=4, checkpoint={"every": 2})
    full = trainer(folder, tmp_path / "full", freeze_encoder_at=2, **kw)
    full.fit()
    trainer(folder, tmp_path / "part", **{**kw, "steps": 2}).fit()
    assert load_checkpoint(list_checkpoints(tmp_path / "part" / "checkpoints")[-1][1], [])[1]["encoder_frozen"] is False
    resumed = trainer(folder, tmp_path / "part", resume=True, freeze_encoder_at=2, **kw)
    assert resumed.encoder_frozen
    resumed.fit()
    assert same(params(full.model), params(resumed.model))


# ----------------------------------------------------------------------------- optim.warmup_steps
@pytest.mark.parametrize("w", [0, 1, 2, STEPS, STEPS + 2])
def test_warmup_steps_reaches_the_full_lr_at_step_n(folder, tmp_path, w, monkeypatch):
    t = trainer(folder, tmp_path / "run", optim={"warmup_steps": w})
    used = []
    real = t.optimizer.step

    def step(*a, **k):  # the lr each optimizer step actually runs with
        used.append(t.optimizer.param_groups[0]["lr"])
        return real(*a, **k)

    monkeypatch.setattr(t.optimizer, "step", step)
    t.fit()
    expected = [LR * min(1.0, k / w) if w else LR for k in range(1, STEPS + 1)]
    assert used == pytest.approx(expected, rel=1e-12)
    assert [r["lr"] for r in records(tmp_path / "run")] == pytest.approx(expected, rel=1e-12)


def _lrs_used(t, monkeypatch) -> list[float]:
    """Fills, as t trains, with the lr each optimizer step actually runs with."""
    used = []
    real = t.optimizer.step

    def step(*a, **k):
        used.append(t.optimizer.param_groups[0]["lr"])
        return real(*a, **k)

    monkeypatch.setattr(t.optimizer, "step", step)
    return used


# The decay's shape s at the counter each step starts from, worked out by hand for STEPS = 3:
# step k (k > W) runs at s(u), u = (k - 1 - W) / (3 - W): cosine (1 + cos(pi u)) / 2, linear 1 - u;
# the decay reaches its floor (s = 0) only as the counter reads 3, after the last step.
# cos(pi / 3) = 1/2, cos(2 pi / 3) = -1/2, cos(pi / 2) = 0.
SHAPES = {
    "cosine": {0: [1.0, 0.75, 0.25],     # u = 0, 1/3, 2/3
               1: [1.0, 1.0, 0.5],       # warm-up ends at step 1; then u = 0, 1/2
               2: [0.5, 1.0, 1.0]},      # warm-up 1/2, 1; the one decay step starts at u = 0
    "linear": {0: [1.0, 2 / 3, 1 / 3],
               1: [1.0, 1.0, 0.5],
               2: [0.5, 1.0, 1.0]},
}
WARMUP_ONLY = {STEPS: [1 / 3, 2 / 3, 1.0],          # all warm-up: nothing decays
               STEPS + 2: [1 / 5, 2 / 5, 3 / 5]}   # warm-up never ends


@pytest.mark.parametrize("decay", ["cosine", "linear"])
@pytest.mark.parametrize("w", [0, 1, 2, STEPS, STEPS + 2])
@pytest.mark.parametrize("f", [0.0, 0.25, 1.0])
def test_lr_decay_schedules(folder, tmp_path, decay, w, f, monkeypatch):
    t = trainer(folder, tmp_path / "run", optim={"warmup_steps": w, "decay": decay, "final_lr_fraction": f})
    used = _lrs_used(t, monkeypatch)
    t.fit()
    assert STEPS == 3
    table = SHAPES[decay].get(w) or WARMUP_ONLY[w]
    expected = [LR * ((f + (1 - f) * s) if k > w else s) for k, s in zip(range(1, STEPS + 1), table)]
    assert used == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert [r["lr"] for r in records(tmp_path / "run")] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert min(used) > 0  # every step trains, the last one too, even with the floor at 0


@pytest.mark.parametrize("decay", ["cosine", "linear"])
@pytest.mark.parametrize("w", [0, 2])
def test_a_decay_reaches_its_floor_after_the_last_step(folder, tmp_path, decay, w):
    """lr * f is the schedule's value at the counter train.steps (the step a resumed, extended run
    would take next), never the lr of a step within the run; between, the decay is strictly falling."""
    f = 0.25
    t = trainer(folder, tmp_path / "run", optim={"warmup_steps": w, "decay": decay, "final_lr_fraction": f})
    lrs = [t._lr(c) for c in range(w, STEPS + 1)]  # the counters the decay spans: W .. steps
    assert lrs[0] == pytest.approx(LR) and lrs[-1] == pytest.approx(LR * f, rel=1e-12)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("decay, w", [("constant", 0), ("constant", 2), ("cosine", 0), ("cosine", 2),
                                      ("linear", 0), ("linear", 2)])
def test_the_last_step_of_every_schedule_changes_the_weights(folder, tmp_path, decay, w):
    """With the default final_lr_fraction 0, a decayed schedule's last step used to run at lr 0 and
    leave every weight as it was (renormalisation off: it would rescale unchanged weights)."""
    t = trainer(folder, tmp_path / "run", renormalize=False, optim={"warmup_steps": w, "decay": decay})
    while t.step < STEPS - 1:
        t.train_step()
    before = params(t.model)
    t.train_step()
    assert t.step == STEPS
    changed = [n for n, p in params(t.model).items() if not torch.equal(p, before[n])]
    assert changed and any(n.startswith("decoder.") for n in changed)


@pytest.mark.parametrize("kw, match", [({"decay": "exp"}, "decay"), ({"final_lr_fraction": 1.5}, "final_lr_fraction"),
                                       ({"final_lr_fraction": 0.5}, "applies only with a decay"),
                                       ({"final_lr_fraction": -0.1}, "final_lr_fraction"),
                                       ({"final_lr_fraction": True}, "final_lr_fraction")])
def test_lr_decay_bad_values(kw, match):
    from flowmo.train.config import OptimConfig

    with pytest.raises(ValueError, match=match):
        OptimConfig(**kw)


def test_a_decayed_schedule_resumes_bitwise(folder, tmp_path):
    """The schedule is a function of the step alone: stopped after step 2 and resumed, a cosine
    run with warm-up ends with the weights, EMA and optimizer state of an uninterrupted one."""
    kw = dict(optim={"warmup_steps": 1, "decay": "cosine"})
    full = trainer(folder, tmp_path / "full", **kw)
    full.fit()
    part = trainer(folder, tmp_path / "part", **kw)
    part.train_step()
    part.train_step()
    part.save()
    resumed = trainer(folder, tmp_path / "part", resume=True, **kw)
    assert resumed.step == 2
    resumed.fit()
    assert same(params(full.model), params(resumed.model))
    assert all(torch.equal(full.ema[k], resumed.ema[k]) for k in full.ema)
    last = records(tmp_path / "full")[-1]  # step 3: lr * (1 + cos(pi / 2)) / 2
    assert [(r["step"], r["lr"]) for r in records(tmp_path / "part")] == [(3, last["lr"])] == [(3, LR / 2)]


def test_a_one_step_decay_trains_its_step_at_the_full_lr(folder, tmp_path, monkeypatch):
    """train.steps = 1 with a decay and no warm-up used to be refused (its only step ran at lr 0);
    the step now starts the decay: lr, the floor coming after it."""
    from flowmo.train.config import TrainSpec

    for decay in ("cosine", "linear"):
        TrainSpec(steps=1, optim={"decay": decay})
        t = trainer(folder, tmp_path / decay, steps=1, optim={"decay": decay})
        used = _lrs_used(t, monkeypatch)
        before = params(t.model)
        t.fit()
        assert used == [LR] and not same(before, params(t.model))


def test_logged_lr_is_the_lr_of_the_step_even_when_the_optimizer_is_rebuilt(folder, tmp_path):
    trainer(folder, tmp_path / "run", optim={"warmup_steps": STEPS}, freeze_encoder_at=1).fit()
    assert [r["lr"] for r in records(tmp_path / "run")] == pytest.approx([LR * k / STEPS for k in (1, 2, 3)])


# ----------------------------------------------------------------------------- ema.every
@pytest.mark.parametrize("warmup", [False, True])
@pytest.mark.parametrize("every", [1, 2, STEPS, STEPS + 4])
def test_ema_every_updates_after_multiples_of_n_and_the_last_step(folder, tmp_path, every, warmup):
    t = trainer(folder, tmp_path / "run", ema={"every": every, "decay": 0.9, "warmup": warmup})
    expected = {k: v.double() for k, v in t.ema.items()}
    last = 0
    for k in range(1, STEPS + 1):
        t.train_step()
        if k % every == 0 or k == STEPS:  # by hand, in float64: the decays of the steps since the last update
            d = _keep(warmup, last, k)
            last = k
            p = params(t.model)
            expected = {n: d * e + (1 - d) * p[n].double() for n, e in expected.items()}
        for n, e in expected.items():
            torch.testing.assert_close(t.ema[n].double(), e, rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------- checkpoint.*
@pytest.mark.parametrize("every,expected", [(1, [1, 2, 3]), (2, [2, 3]), (STEPS, [3]), (STEPS + 5, [3])])
def test_checkpoint_every_saves_after_multiples_and_the_last_step(folder, tmp_path, every, expected):
    trainer(folder, tmp_path / "run", checkpoint={"every": every}).fit()
    assert saved_steps(tmp_path / "run") == expected


@pytest.mark.parametrize("keep_last,expected", [(1, [3]), (2, [2, 3]), (STEPS, [1, 2, 3]), (STEPS + 5, [1, 2, 3])])
def test_checkpoint_keep_last_keeps_the_newest_n(folder, tmp_path, keep_last, expected):
    trainer(folder, tmp_path / "run", checkpoint={"every": 1, "keep_last": keep_last}).fit()
    assert saved_steps(tmp_path / "run") == expected


@pytest.mark.parametrize("keep_every,expected", [(None, [3]), (1, [1, 2, 3]), (2, [2, 3]), (STEPS, [3]),
                                                 (STEPS + 1, [3])])
def test_checkpoint_keep_every_also_keeps_multiples(folder, tmp_path, keep_every, expected):
    trainer(folder, tmp_path / "run", checkpoint={"every": 1, "keep_last": 1, "keep_every": keep_every}).fit()
    assert saved_steps(tmp_path / "run") == expected


# ----------------------------------------------------------------------------- log.*
@pytest.mark.parametrize("every,expected", [(1, [1, 2, 3]), (2, [2, 3]), (STEPS, [3]), (STEPS + 5, [3])])
def test_log_every_records_after_multiples_and_the_last_step(folder, tmp_path, every, expected):
    trainer(folder, tmp_path / "run", log={"every": every}).fit()
    assert [r["step"] for r in records(tmp_path / "run") if "loss/total" in r] == expected


@pytest.mark.parametrize("every,expected", [(1, [1, 2, 3]), (2, [2]), (STEPS, [3]), (STEPS + 1, [])])
def test_log_images_every_writes_pngs_after_multiples(folder, tmp_path, every, expected, monkeypatch):
    t = trainer(folder, tmp_path / "run", log={"images_every": every})
    # one-step decodes keep the test fast; what is tested is when the PNGs are written
    real = t.model.reconstruct
    monkeypatch.setattr(t.model, "reconstruct", lambda x, **kw: real(x, **{**kw, "sampler": {"steps": 1}}))
    t.fit()
    pngs = sorted((tmp_path / "run" / "images").glob("step_*.png")) if (tmp_path / "run" / "images").is_dir() else []
    assert [int(p.stem.split("_")[1]) for p in pngs] == expected


# ----------------------------------------------------------------------------- eval.*
@pytest.mark.parametrize("every,expected", [(None, [0, 3]), (1, [0, 1, 2, 3]), (2, [0, 2, 3]), (STEPS, [0, 3]),
                                            (STEPS + 1, [0, 3])])
def test_eval_every_evaluates_at_the_start_after_multiples_and_at_the_end(folder, tmp_path, every, expected):
    trainer(folder, tmp_path / "run", eval={"enabled": True, "every": every}).fit()
    # each evaluation measures both weight sets, each figure named by its weights
    assert [r["step"] for r in records(tmp_path / "run") if {"eval/raw/psnr", "eval/ema/psnr"} <= set(r)] == expected
    assert sorted(int(p.stem.split("_")[1]) for p in (tmp_path / "run" / "eval").glob("step_*.png")) == expected


@pytest.mark.parametrize("steps", [1, 2, None])
def test_eval_steps_sets_the_evaluation_sampler_steps(folder, tmp_path, steps, monkeypatch):
    t = trainer(folder, tmp_path / "run", steps=1, eval={"enabled": True, "steps": steps})
    grids = []
    real = t.model._decode  # reconstruct's decode (decode() itself checks its input first)

    def decode(*a, **kw):
        out = real(*a, **kw)
        grids.append(len(out.times) - 1)
        return out

    monkeypatch.setattr(t.model, "_decode", decode)
    t.evaluate()
    assert grids == [steps or t.model.spec.sampler.steps]  # None: the model spec's sampler


# ----------------------------------------------------------------------------- max_nonfinite
def _poison(t: Trainer, bad_steps: set[int]) -> None:
    """The loss of step k (1-based) is NaN for k in bad_steps."""
    real = t.model.forward

    def forward(*a, **k):
        out = real(*a, **k)
        if t.step + 1 in bad_steps:
            return LossOutput(out.total * float("nan"), out.terms)
        return out

    t.model.forward = forward


@pytest.mark.parametrize("n,bad,stops_at", [
    (1, {2}, 2),            # 1: the first non-finite step stops the run
    (2, {2}, None),         # one bad step is not two in a row
    (2, {2, 3}, 3),         # two in a row: stops after the second
    (STEPS, {1, 2, 3}, 3),  # every step bad: stops after the last
    (STEPS + 1, {1, 2, 3}, None),  # more than the run's steps: never stops it
])
def test_max_nonfinite_stops_after_n_in_a_row(folder, tmp_path, n, bad, stops_at):
    t = trainer(folder, tmp_path / "run", max_nonfinite=n)
    _poison(t, bad)
    if stops_at is None:
        t.fit()
        assert t.step == STEPS and t.counters.nonfinite_total == len(bad)
    else:
        with pytest.raises(TrainingStopped, match=f"{n} non-finite steps in a row at step {stops_at}"):
            t.fit()
        assert t.step == stops_at


# ----------------------------------------------------------------------------- optim.grad_accum
def test_grad_accum_one_and_two_micro_batches(folder, tmp_path):
    for accum in (1, 2):
        t = trainer(folder, tmp_path / f"run{accum}", steps=1, optim={"grad_accum": accum})
        t.fit()
        assert t.counters.images_seen == 2 * accum  # batch_size 2 per micro-batch


@pytest.mark.parametrize("warmup", [False, True])
def test_ema_after_extending_a_finished_run_counts_each_step_once(folder, tmp_path, warmup):
    """A run of 3 steps with ema.every=2 updates after steps 2 and 3; extended to 4 steps
    (--resume with a larger train.steps) the update after step 4 stands for step 4 alone."""
    out = tmp_path / "run"
    ema = {"every": 2, "decay": 0.9, "warmup": warmup}
    first = trainer(folder, out, ema=ema)
    first.fit()
    ema3 = {k: v.double() for k, v in first.ema.items()}
    assert first.ema_step == STEPS
    more = trainer(folder, out, resume=True, steps=STEPS + 1, ema=ema)
    assert more.ema_step == STEPS
    more.fit()
    p = params(more.model)
    d = EMA_DECAYS[warmup][4]
    for n, e in ema3.items():
        torch.testing.assert_close(more.ema[n].double(), d * e + (1 - d) * p[n].double(), rtol=0, atol=1e-6)


def test_threads_sets_the_intra_op_thread_count_and_none_leaves_it(folder, tmp_path):
    before = torch.get_num_threads()
    wanted = 2 if before == 1 else 1
    try:
        trainer(folder, tmp_path / "a", threads=wanted)
        assert torch.get_num_threads() == wanted
        torch.set_num_threads(before)
        trainer(folder, tmp_path / "b")
        assert torch.get_num_threads() == before
    finally:
        torch.set_num_threads(before)
