"""Training FlowMo with the BSQ and VQ bottlenecks, from Python and from the command line: the
trained model saves, loads, evaluates, tokenizes and detokenizes; a VQ with an EMA codebook
(state its training-mode forward updates) resumes bitwise, is left alone by the trainer's dry run
and by a skipped step, and is exported with the trained model's codebook (the EMA of the weights
averages parameters only)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.cli import main as cli_main
from flowmo.data.tokens import read_tokens
from flowmo.folders.checkpoints import latest_checkpoint, load_checkpoint
from flowmo.metrics import evaluate_model
from flowmo.model import LossOutput
from flowmo.testing.syncs import count_host_syncs
from flowmo.train import Trainer, load_config
from flowmo.train.sampler import derive_seed

from .test_trainer import raw_config as trainer_raw_config

QUANTIZERS = {
    "bsq": {"name": "bsq"},
    "vq": {"name": "vq", "codebook_size": 64},
    "vq-ema": {"name": "vq", "codebook_size": 64, "ema": True, "l2_normalize": True, "dead_code_threshold": 1.0},
}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


def raw_config(folder, quantizer, **train) -> dict:
    """test_trainer's tiny run with ``quantizer``: on the CPU, 1 step, EMA and a checkpoint every
    step (``train`` sections merged over those)."""
    cfg = trainer_raw_config(folder, **{"steps": 1, "device": "cpu", "ema": {"every": 1},
                                         "checkpoint": {"every": 1}, **train})
    cfg["model"] = {"preset": "tiny", "quantizer": quantizer}
    return cfg


def _images(folder, n=2):
    from flowmo.cli.io import load_image

    return torch.stack([load_image(p, 32) for p in sorted(folder.glob("*.png"))[:n]])


@pytest.mark.parametrize("name", QUANTIZERS)
def test_trains_from_python_and_the_model_saves_loads_evaluates_and_tokenizes(tmp_path, image_folder, name):
    spec = QUANTIZERS[name]
    t = Trainer(load_config(raw_config(image_folder, spec)), tmp_path / "run", log=lambda s: None)
    summary = t.fit()
    terms = {k for k in summary["last_terms"] if k.startswith("quantizer/")}
    assert terms == {x.name for x in t.config.model.loss_terms("1a") if x.name.startswith("quantizer/")} != set()
    if name == "vq-ema":
        assert int(t.model.quantizer.draws[1]) == 1  # one EMA update per step, none from the dry run
    folder = t.model.save_pretrained(tmp_path / "model")
    loaded = flowmo.FlowMo.from_pretrained(folder)
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    x = _images(image_folder)
    tokens = loaded.tokenize(x)
    assert tokens.shape == (2, 16) and int(tokens.max()) < loaded.quantizer.codebook_size
    out = loaded.detokenize(tokens, sampler={"steps": 1}, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.isfinite(out).all()
    metrics = evaluate_model(loaded, x, sampler={"steps": 1}, lpips=(), fid=False, progress=False)
    assert np.isfinite(metrics["psnr"])


@pytest.mark.parametrize("name", QUANTIZERS)
def test_trains_from_the_cli_and_the_exported_folder_serves_every_command(tmp_path, image_folder, name):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(raw_config(image_folder, QUANTIZERS[name])))
    run, model = tmp_path / "run", tmp_path / "model"
    assert cli_main(["train", "--config", str(cfg), "--out", str(run), "--export", str(model), "-q"]) == 0
    parts, _ = load_checkpoint(latest_checkpoint(run / "checkpoints"), ["model", "ema"])
    exported = flowmo.FlowMo.from_pretrained(model).state_dict()
    for k, v in exported.items():  # parameters: the EMA; buffers (an EMA codebook): the trained model's
        assert torch.equal(v, parts["ema"][k] if k in parts["ema"] else parts["model"][k]), k
    if name == "vq-ema":
        assert {"quantizer.codebook", "quantizer.cluster_size"} <= set(exported) - set(parts["ema"])
    out = tmp_path / "eval"
    assert cli_main(["eval", "--model", str(model), "--data", str(image_folder), "--limit", "1", "--steps", "1",
                     "--lpips", "none", "--no-fid", "--output", str(out), "--examples", "0"]) == 0
    assert np.isfinite(json.loads((out / "metrics.json").read_text())["metrics"]["psnr"])
    tok, det = tmp_path / "tokens.safetensors", tmp_path / "det"
    assert cli_main(["tokenize", "--model", str(model), "--input", str(image_folder), "--output", str(tok)]) == 0
    tf = read_tokens(tok)
    assert tf.tokens.shape == (4, 16) and torch.equal(tf.tokens[:2], flowmo.FlowMo.from_pretrained(model).tokenize(
        _images(image_folder)))
    assert cli_main(["detokenize", "--model", str(model), "--tokens", str(tok), "--output", str(det), "--steps", "1",
                     "--seed", "1"]) == 0
    assert len(list(det.glob("*.png"))) == 4


def test_vq_ema_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path, image_folder):
    """The EMA codebook, its statistics and the dead-code draws' counter are module state in the
    checkpoint: a run interrupted after step 1 and resumed reaches the uninterrupted run's state,
    every buffer included, bit for bit (threshold 1.5 > the initial usage 1: codes are replaced)."""
    spec = {**QUANTIZERS["vq-ema"], "dead_code_threshold": 1.5}
    cfg = load_config(raw_config(image_folder, spec, steps=2))
    full = Trainer(cfg, tmp_path / "full", log=lambda s: None)
    full.fit()
    part = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 1})}), tmp_path / "part",
                   log=lambda s: None)
    part.fit()
    resumed = Trainer(cfg, tmp_path / "part", resume=True, log=lambda s: None)
    assert resumed.step == 1 and int(resumed.model.quantizer.draws[1]) == 1
    resumed.fit()
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert int(a["quantizer.draws"][1]) == 2 and bool((a["quantizer.cluster_size"] == 1.5).any())
    assert all(torch.equal(full.ema[k], resumed.ema[k]) for k in full.ema)
    assert "quantizer.codebook" not in full.ema  # the EMA of the weights: parameters only


def test_the_dry_run_and_a_skipped_step_leave_the_ema_codebook_alone(tmp_path, image_folder):
    """The trainer's dry-run forward (which finds the unused parameters) must not update the
    codebook: after construction it is the freshly built model's. A step skipped for a
    non-finite loss changes no weight and no codebook, without a host sync."""
    cfg = load_config(raw_config(image_folder, QUANTIZERS["vq-ema"], steps=3))
    t = Trainer(cfg, tmp_path / "run", log=lambda s: None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(3, "init"))
        built = flowmo.FlowMo(cfg.model)
    for k, v in built.quantizer.state_dict().items():
        assert torch.equal(v, t.model.quantizer.state_dict()[k]), k
    real = t.model.forward

    def forward(*a, **k):
        out = real(*a, **k)
        return LossOutput(out.total * float("nan"), out.terms) if t.step + 1 == 2 else out

    t.model.forward = forward
    t.train_step()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    batches = [t._next_batch()]
    t._next_batch = lambda: batches.pop(0)
    with count_host_syncs() as syncs:
        t.train_step()  # step 2: skipped
    assert syncs.count == 0, syncs.report()
    for k, v in t.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    t._next_batch = Trainer._next_batch.__get__(t)
    t.train_step()  # step 3 trains again, the codebook with it
    assert not torch.equal(t.model.quantizer.cluster_size, before["quantizer.cluster_size"])
