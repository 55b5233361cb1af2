"""The training step makes no host sync (flowmo.testing.syncs counts them on the CPU), except on
the steps that log or checkpoint; the compiled step (train.compile) gives the eager step's loss.

A step is forward, backward, the optimizer step, renormalisation and the EMA update; the batch
is read beforehand (the data loader reads images on the host, where reading costs no sync).
"""

from __future__ import annotations

import pytest
import torch

from flowmo.model import LossOutput
from flowmo.testing.syncs import count_host_syncs
from flowmo.train import Trainer, TrainingStopped, load_config

from conftest import random_png_folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return random_png_folder(tmp_path_factory.mktemp("imgs"), 6, seed=3)


def trainer(folder, out, model="tiny", **train) -> Trainer:
    cfg = {
        "model": model,
        "train": {
            "steps": 8, "seed": 1, "device": "cpu", "data": {"folder": str(folder)},
            "optim": {"lr": 1e-3, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 4, "keep_last": 2},
            "log": {"every": 4, "images_every": 1000, "images": 1, "tensorboard": False, "progress": False},
            "eval": {"enabled": False, "images": 1, "steps": 1},
        },
    }
    for k, v in train.items():
        cfg["train"][k] = {**cfg["train"][k], **v} if isinstance(v, dict) else v
    return Trainer(load_config(cfg), out, log=lambda s: None)


def prefetched(t: Trainer) -> None:
    """Read the next batches now, so that a counted step does not count the loader's host reads."""
    real = t._next_batch
    batches = [real() for _ in range(t.tc.optim.grad_accum)]
    t._next_batch = lambda: batches.pop(0) if batches else real()


@pytest.mark.parametrize("train", [
    {},
    {"optim": {"grad_accum": 2, "grad_clip": 1.0}},
    {"ema": {"decay": 0.9, "every": 2, "warmup": True}},
    {"stage": "1a", "freeze_encoder_at": 1},
], ids=["plain", "accum-clip", "ema-every-2", "frozen-encoder"])
def test_a_training_step_makes_no_host_sync(folder, tmp_path, train):
    t = trainer(folder, tmp_path / "run", **train)
    t.train_step()  # the first step may set things up (optimizer state, counters)
    prefetched(t)
    with count_host_syncs() as syncs:
        terms = t.train_step()
    assert syncs.count == 0, syncs.report()
    assert all(isinstance(v, torch.Tensor) and v.ndim == 0 for v in terms.values())


@pytest.mark.parametrize("quantizer", ["kl", "identity"])
def test_a_continuous_models_training_step_makes_no_host_sync(folder, tmp_path, quantizer):
    """The continuous bottlenecks: kl's posterior sample (its eps drawn before the loss, with
    the step's other draws) and identity's code."""
    t = trainer(folder, tmp_path / "run", model={"preset": "tiny", "quantizer": {"name": quantizer}})
    t.train_step()
    prefetched(t)
    with count_host_syncs() as syncs:
        terms = t.train_step()
    assert syncs.count == 0, syncs.report()
    assert ("quantizer/kl" in terms) == (quantizer == "kl")


@pytest.mark.parametrize("quantizer", [
    {"name": "fsq", "levels": [2] * 18},
    {"name": "bsq"},
    {"name": "vq", "codebook_size": 64},
    {"name": "vq", "codebook_size": 64, "ema": True, "l2_normalize": True, "dead_code_threshold": 1.0},
], ids=["fsq", "bsq", "vq", "vq-ema"])
def test_a_training_step_makes_no_host_sync_with_every_quantizer(folder, tmp_path, quantizer):
    """The quantizer's forward in the step (its losses; VQ's EMA update and dead-code
    replacement, decided with torch.where on the device) reads nothing on the host."""
    t = trainer(folder, tmp_path / "run", model={"preset": "tiny", "quantizer": quantizer})
    t.train_step()
    prefetched(t)
    with count_host_syncs() as syncs:
        t.train_step()
    assert syncs.count == 0, syncs.report()


def test_a_posttraining_step_makes_no_host_sync(folder, tmp_path):
    first = trainer(folder, tmp_path / "1a", steps=1)
    first.fit()
    t = trainer(folder, tmp_path / "1b", stage="1b", init_from=str(tmp_path / "1a"), steps=4)
    t.train_step()
    prefetched(t)
    with count_host_syncs() as syncs:
        t.train_step()
    assert syncs.count == 0, syncs.report()


def test_fit_reads_the_device_only_on_the_steps_that_log_or_checkpoint(folder, tmp_path):
    """8 steps, logging and checkpointing every 4: the counters are read at steps 4 and 8 only."""
    t = trainer(folder, tmp_path / "run")
    reads: list[int] = []
    real = t._sync_counters

    def counted():
        reads.append(t.step)
        real()

    t._sync_counters = counted
    t.fit()
    assert reads == [4, 8]


def test_nonfinite_steps_are_skipped_on_the_device_and_stop_the_run_when_read(folder, tmp_path):
    """Steps 2 and 3 are NaN, max_nonfinite 2: both are skipped without a host read (no weight,
    no Adam moment changes) and the run stops at step 4, the first step that reads the counters,
    naming step 3, where the streak reached 2."""
    t = trainer(folder, tmp_path / "run", max_nonfinite=2)
    real = t.model.forward

    def forward(*a, **k):
        out = real(*a, **k)
        return LossOutput(out.total * float("nan"), out.terms) if t.step + 1 in (2, 3) else out

    t.model.forward = forward
    t.train_step()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    moments = {k: v.clone() for k, v in t.optimizer.state_dict()["state"][0].items()}
    prefetched(t)
    with count_host_syncs() as syncs:
        t.train_step()
    assert syncs.count == 0, syncs.report()
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters())
    assert all(torch.equal(v, t.optimizer.state_dict()["state"][0][k]) for k, v in moments.items())
    with pytest.raises(TrainingStopped, match="2 non-finite steps in a row at step 3"):
        t.fit()
    assert t.step == 4 and t.counters.nonfinite_total == 2


@pytest.mark.parametrize("clip", [None, 1.0])
def test_a_finite_loss_with_non_finite_gradients_is_skipped_too(folder, tmp_path, clip):
    """A gradient made infinite by a hook (the loss stays finite) skips the step like a NaN loss:
    weights and Adam state unchanged, counted, no host sync; the run stops at the limit naming
    the last checkpoint, whose weights are finite."""
    t = trainer(folder, tmp_path / "run", max_nonfinite=2, steps=6, optim={"grad_clip": clip},
                checkpoint={"every": 1})
    p0 = next(p for _, p in t._trainable())
    p0.register_hook(lambda g: g * float("inf") if t.step + 1 in (2, 3) else g)
    t.train_step()
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    prefetched(t)
    with count_host_syncs() as syncs:
        terms = t.train_step()
    assert syncs.count == 0, syncs.report()
    assert torch.isfinite(terms["total"]) and terms["nonfinite_skipped"] == 1
    assert all(torch.equal(p, before[n]) for n, p in t.model.named_parameters())
    t.save()  # step 2's checkpoint: the stop names it
    with pytest.raises(TrainingStopped, match="2 non-finite steps in a row at step 3.*ckpt-0*2,"):
        t.fit()
    assert all(torch.isfinite(p).all() for p in t.model.parameters())


def test_the_stop_says_when_no_checkpoint_was_written(folder, tmp_path):
    t = trainer(folder, tmp_path / "run", max_nonfinite=1, steps=4, checkpoint={"every": 100}, log={"every": 2})
    real = t.model.forward

    def forward(*a, **k):
        out = real(*a, **k)
        return LossOutput(out.total * float("nan"), out.terms)

    t.model.forward = forward
    with pytest.raises(TrainingStopped, match="no checkpoint was written"):
        t.fit()


@pytest.mark.parametrize("accum", [1, 2])
def test_the_compiled_step_gives_the_eager_loss(folder, tmp_path, accum):
    """train.compile: the same draws and the same loss terms as the eager step, to float32
    rounding (one fused graph reorders a few reductions), for two steps."""
    runs = {}
    for compiled in (False, True):
        t = trainer(folder, tmp_path / f"run{compiled}", steps=2, compile=compiled, optim={"grad_accum": accum},
                    renormalize=False)
        runs[compiled] = [{k: float(v) for k, v in t.train_step().items()} for _ in range(2)]
        if compiled:
            assert len(t.compile_s) == 1 and t.compile_s[0] > 0
    for eager, compiled in zip(runs[False], runs[True]):
        assert eager.keys() == compiled.keys()
        for k in eager:
            assert compiled[k] == pytest.approx(eager[k], rel=1e-4, abs=1e-5), k


@pytest.mark.parametrize("quantizer", ["lfq", "kl"])
def test_the_stage_1a_loss_compiles_as_one_graph(quantizer):
    """torch.compile(fullgraph=True) traces FlowMo's loss given its draws (loss_draws) without a
    graph break, forward and backward, and gives the eager loss and gradients (aot_eager: the
    same kernels, so the tolerance is float32 rounding); kl's posterior sample takes its eps
    from the draws too."""
    import flowmo

    torch.manual_seed(0)
    model = flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": quantizer})).train()
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    draws = model.loss_draws(x, torch.Generator().manual_seed(2))
    assert (draws["quantizer_noise"] is None) == (quantizer == "lfq")
    assert torch.equal(model(x, **draws).total, model(x, generator=torch.Generator().manual_seed(2)).total)
    grads = {}
    for name, fn in (("eager", model), ("compiled", torch.compile(model, fullgraph=True, backend="aot_eager"))):
        model.zero_grad(set_to_none=True)
        out = fn(x, check_values=False, **draws)
        out.total.backward()
        grads[name] = (out.total.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    (l0, g0), (l1, g1) = grads["eager"], grads["compiled"]
    assert torch.allclose(l0, l1, rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 0
    for n in g0:
        assert torch.allclose(g0[n], g1[n], rtol=1e-4, atol=1e-6), n


@pytest.mark.parametrize("native", [True, False])
def test_autocast_native_is_bf16_only_where_the_device_has_native_bf16(folder, tmp_path, monkeypatch, native):
    import flowmo.train.loop as loop

    monkeypatch.setattr(loop, "native_bf16", lambda device: native)
    t = trainer(folder, tmp_path / "run", autocast="native")
    with t._autocast():
        assert torch.is_autocast_enabled("cpu") is native
        if native:
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_native_bf16_answers_for_every_device_kind():
    from flowmo.devices import native_bf16

    assert isinstance(native_bf16(torch.device("cpu")), bool)
    assert native_bf16(torch.device("meta")) is False
