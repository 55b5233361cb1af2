"""Few-step post-training end to end on a tiny model: the trainer keeps the teacher, records the
objective's sampler as the model's preset, resumes bitwise; the exported folder decodes with K
calls by default, by name and from the command line."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.cli import main as cli_main
from flowmo.train import Trainer, load_config
from flowmo.folders.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint
from flowmo.train.export import export_checkpoint

TEACHER = {"steps": 6, "grid": {"name": "pow", "p": 0.25}, "guidance": {"scale": 1.5, "interval": [0.0, 0.5]}}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def stage1a(tmp_path_factory, image_folder):
    out = tmp_path_factory.mktemp("a")
    Trainer(_config(image_folder, stage="1a", steps=2), out / "run").fit()
    return out / "run"


def _config(folder, *, posttrain=None, **train):
    base = {
        "model": "tiny" if posttrain is None else flowmo.get_preset("tiny").replace(posttrain=posttrain).model_dump(),
        "train": {
            "steps": 4, "seed": 3, "data": {"folder": str(folder)}, "optim": {"lr": 1e-3, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 1}, "checkpoint": {"every": 2, "keep_last": 10},
            "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
        },
    }
    base["train"].update(train)
    return load_config(base)


def _distill(folder, init, k=2, **train):
    return _config(folder, posttrain={"name": "distillation", "k": k, "teacher": TEACHER}, stage="1b",
                   init_from=str(init), **train)


def test_distillation_run_keeps_the_teacher_and_records_the_preset(tmp_path, image_folder, stage1a):
    t = Trainer(_distill(image_folder, stage1a), tmp_path / "run")
    init = load_checkpoint(latest_checkpoint(stage1a / "checkpoints"), ["model"])[0]["model"]
    t.fit()
    teacher = t.model.teacher_state()
    assert all(torch.equal(v, init[f"decoder.{k}"]) for k, v in teacher.items())  # never trained
    assert any(not torch.equal(p, init[n]) for n, p in t.model.named_parameters() if n.startswith("decoder."))
    parts, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"), ["teacher"])
    assert all(torch.equal(v, parts["teacher"][k]) for k, v in teacher.items())

    folder = export_checkpoint(tmp_path / "run", tmp_path / "model")
    m = flowmo.FlowMo.from_pretrained(folder)
    assert list(m.spec.sampler_presets) == ["distillation-2"]
    assert m.spec.sampler == m.spec.sampler_presets["distillation-2"]
    s = m.spec.image_size
    code = m.quantize(m.encode(torch.zeros(1, 3, s, s))).values
    assert m.decode(code).decoder_calls == 2
    assert m.decode(code, sampler="distillation-2").decoder_calls == 2
    assert m.decode(code, sampler="release").decoder_calls == 31


def test_distillation_resumes_bitwise(tmp_path, image_folder, stage1a):
    cfg = _distill(image_folder, stage1a)
    full = Trainer(cfg, tmp_path / "full")
    full.fit()
    Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})}), tmp_path / "part").fit()
    resumed = Trainer(cfg, tmp_path / "part", resume=True)
    assert resumed.step == 2
    resumed.fit()
    for a, b in ((full.model.state_dict(), resumed.model.state_dict()), (full.ema, resumed.ema),
                 (full.model.teacher_state(), resumed.model.teacher_state())):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_checkpoint_without_the_teacher_is_refused(tmp_path, image_folder, stage1a):
    cfg = _distill(image_folder, stage1a, steps=2)
    Trainer(cfg, tmp_path / "run").fit()
    (latest_checkpoint(tmp_path / "run" / "checkpoints") / "teacher.safetensors").unlink()
    with pytest.raises((CheckpointError, FileNotFoundError), match="teacher"):
        Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 4})}), tmp_path / "run",
                resume=True)


def test_fixed_grid_mode_seeking_records_its_preset_and_the_cli_decodes_by_name(tmp_path, image_folder, stage1a,
                                                                                capsys):
    cfg = _config(image_folder, posttrain={"name": "mode_seeking", "k": 3, "grid": {"name": "pow", "p": 0.5},
                                           "weight": 1.0}, stage="1b", init_from=str(stage1a), steps=2)
    Trainer(cfg, tmp_path / "run").fit()
    folder = export_checkpoint(tmp_path / "run", tmp_path / "model")
    m = flowmo.FlowMo.from_pretrained(folder)
    assert list(m.spec.sampler_presets) == ["mode_seeking-3"] and m.spec.sampler.steps == 3
    out = tmp_path / "recon"
    rc = cli_main(["reconstruct", "--model", str(folder), "--input", str(image_folder), "--output", str(out),
                   "--sampler", "mode_seeking-3"])
    assert rc == 0 and len(list(out.glob("*.png"))) == 6
    capsys.readouterr()
    rc = cli_main(["reconstruct", "--model", str(folder), "--input", str(image_folder), "--output",
                   str(tmp_path / "r2"), "--sampler", "distillation-9"])
    assert rc != 0
    assert "this model's own: mode_seeking-3" in capsys.readouterr().err


def _resume(cfg, out, **changes):
    train = cfg.train.model_copy(update={"steps": 4})
    model = cfg.model.replace(**changes) if changes else cfg.model
    return Trainer(cfg.model_copy(update={"train": train, "model": model}), out, resume=True)


def test_resuming_with_another_objective_is_refused(tmp_path, image_folder, stage1a):
    cfg = _distill(image_folder, stage1a, steps=2)
    Trainer(cfg, tmp_path / "run").fit()
    with pytest.raises(CheckpointError, match="other settings than this config's: model.posttrain.k 2 -> 1;"):
        _resume(cfg, tmp_path / "run", posttrain={"k": 1})
    with pytest.raises(CheckpointError, match=": model.posttrain.teacher.steps 6 -> 5;"):
        _resume(cfg, tmp_path / "run", posttrain={"teacher": {"steps": 5}})
    ms = cfg.model.replace(posttrain={"name": "mode_seeking", "k": 2, "grid": {"name": "pow"}})
    with pytest.raises(CheckpointError, match='model.posttrain {"name": "distillation", .*} -> {"name": "mode_seeking"'):
        Trainer(cfg.model_copy(update={"model": ms}), tmp_path / "run", resume=True)
    assert _resume(cfg, tmp_path / "run").step == 2  # the same objective resumes


def test_a_damaged_or_replaced_teacher_is_refused_on_resume(tmp_path, image_folder, stage1a):
    from safetensors.torch import load_file, save_file

    cfg = _distill(image_folder, stage1a, steps=2)
    Trainer(cfg, tmp_path / "run").fit()
    path = latest_checkpoint(tmp_path / "run" / "checkpoints") / "teacher.safetensors"
    good = load_file(str(path))
    save_file({k: torch.full_like(v, float("nan")) for k, v in good.items()}, str(path))
    with pytest.raises(ValueError, match="non-finite"):
        _resume(cfg, tmp_path / "run")
    save_file({k: v + 0.01 for k, v in good.items()}, str(path))  # finite, but not this run's teacher
    with pytest.raises(CheckpointError, match="teacher_digest"):
        _resume(cfg, tmp_path / "run")
    save_file(good, str(path))
    assert _resume(cfg, tmp_path / "run").step == 2
