"""The trainer: what one step changes, EMA and renormalisation formulas, exact resume,
atomic checkpoints, corrupt images, Stage 1B, export."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import flowmo
from flowmo.train import Trainer, load_config
from flowmo.folders.checkpoints import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from flowmo.cli.eval import main as eval_main
from flowmo.cli.train import main as train_main
from flowmo.train.export import export_checkpoint
from flowmo.train.ema import block_linear_weights, ema_keep, ema_update_, renormalize_
from flowmo.train.sampler import StepBatchSampler


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = root / f"class{i % 2}"
        sub.mkdir(exist_ok=True)
        arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i}.png")
    return root


def raw_config(folder, **train) -> dict:
    """The tiny test run's config as data (``train`` sections merged over the defaults)."""
    base = {
        "model": "tiny",
        "train": {
            "steps": 4, "seed": 3,
            "data": {"folder": str(folder)},
            "optim": {"lr": 1e-3, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 2},
            "checkpoint": {"every": 2, "keep_last": 10},
            "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
        },
    }
    for k, v in train.items():
        if isinstance(v, dict):
            base["train"].setdefault(k, {}).update(v)
        else:
            base["train"][k] = v
    return base


def config(folder, **train):
    return load_config(raw_config(folder, **train))


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_one_stage1a_step_changes_exactly_the_trainable_parameters(tmp_path, image_folder):
    t = Trainer(config(image_folder), tmp_path / "run")
    before = params(t.model)
    t.train_step()
    after = params(t.model)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    trainable = {n for n, p in t.model.named_parameters() if p.requires_grad}
    assert changed == trainable
    assert any(n.startswith("encoder.") for n in changed) and any(n.startswith("decoder.") for n in changed)
    # the frozen ones are exactly those no loss reaches (e.g. the encoder's time embedding)
    assert "encoder.time_in.in_layer.weight" in t.unused and "decoder.final_layer_txt.linear.weight" in t.unused


def test_encoder_frozen_after_the_freeze_step(tmp_path, image_folder):
    t = Trainer(config(image_folder, freeze_encoder_at=1), tmp_path / "run")
    t.train_step()
    assert not any(p.requires_grad for p in t.model.encoder.parameters())
    assert all(n.startswith("decoder.") for group in [t._opt_names.values()] for n in group)
    before = params(t.model)
    t.train_step()
    after = params(t.model)
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("encoder."))
    assert any(not torch.equal(before[n], after[n]) for n in before if n.startswith("decoder."))


def test_renormalisation_keeps_initial_norms(tmp_path, image_folder):
    t = Trainer(config(image_folder), tmp_path / "run")
    t.train_step()
    t.train_step()
    for n, w in block_linear_weights(t.model).items():
        assert torch.allclose(torch.linalg.vector_norm(w.detach()), t.targets[n], rtol=1e-5), n
    # the function itself
    w = {"a": torch.randn(4, 5)}
    renormalize_(w, {"a": torch.tensor(3.0)})
    assert torch.allclose(torch.linalg.vector_norm(w["a"]), torch.tensor(3.0))


def test_ema_formula_without_warmup(tmp_path, image_folder):
    """The release's EMA (warmup false): one update standing for k steps keeps decay**k of the EMA."""
    ema = {"w": torch.tensor([1.0, 2.0])}
    ema_update_(ema, {"w": torch.tensor([3.0, 0.0])}, keep=0.81)
    assert torch.allclose(ema["w"], torch.tensor([0.81 * 1 + 0.19 * 3, 0.81 * 2 + 0.19 * 0]))
    assert ema_keep(0.9, 0, 2, warmup=False) == pytest.approx(0.81, rel=1e-15)
    t = Trainer(config(image_folder, ema={"warmup": False}), tmp_path / "run")
    e0 = {k: v.clone() for k, v in t.ema.items()}
    t.train_step()
    assert all(torch.equal(e0[k], t.ema[k]) for k in e0)  # every 2 steps: not yet
    t.train_step()
    p2 = params(t.model)
    d = 0.9**2
    for k in e0:
        assert torch.allclose(t.ema[k], d * e0[k] + (1 - d) * p2[k], atol=1e-7)


def _warm_decay(decay: float, n: int) -> float:
    """The per-step decay of step n (1-based) with warm-up, as diffusers' EMAModel.get_decay
    defines it for optimization_step n: s = n - 1; 0 when s = 0, else min(decay, (1 + s) / (10 + s))."""
    s = n - 1
    return 0.0 if s == 0 else min(decay, (1 + s) / (10 + s))


@given(decay=st.floats(0.0, 0.99999, exclude_max=False), start=st.integers(0, 3000), span=st.integers(1, 3000),
       warmup=st.booleans())
@settings(max_examples=300, deadline=None)
def test_ema_keep_is_the_product_of_the_per_step_decays(decay, start, span, warmup):
    end = start + span
    expected = 1.0
    for n in range(start + 1, end + 1):
        expected *= _warm_decay(decay, n) if warmup else decay
    assert ema_keep(decay, start, end, warmup) == pytest.approx(expected, rel=1e-11, abs=1e-300)


@given(decay=st.floats(0.0, 0.9999), a=st.integers(0, 10**6), b=st.integers(1, 10**6), c=st.integers(1, 10**6),
       warmup=st.booleans())
@settings(max_examples=200, deadline=None)
def test_ema_keep_of_consecutive_spans_multiplies(decay, a, b, c, warmup):
    """Updating after b and then after c keeps what one update standing for both spans keeps:
    train.ema.every changes how often the EMA is updated, not its weights."""
    b, c = a + b, a + b + c
    whole = ema_keep(decay, a, c, warmup)
    assert 0.0 <= whole <= 1.0
    assert ema_keep(decay, a, b, warmup) * ema_keep(decay, b, c, warmup) == pytest.approx(whole, rel=1e-9, abs=1e-300)


@pytest.mark.parametrize("every", [1, 2])
def test_the_ema_after_n_updates_is_the_hand_computed_recurrence(tmp_path, image_folder, every):
    """Decay 0.3 with warm-up over 4 steps: d_1 = 0, d_2 = 2/11, d_3 = 3/12 = 0.25, then
    4/13 > 0.3 so d_4 = 0.3. every 1: e_n = d_n e_(n-1) + (1 - d_n) w_n; every 2 (updates after
    steps 2 and 4): e = d_1 d_2 e_0 + (1 - d_1 d_2) w_2 = w_2, then e = d_3 d_4 e + (1 - d_3 d_4) w_4."""
    t = Trainer(config(image_folder, steps=4, ema={"decay": 0.3, "every": every, "warmup": True},
                       checkpoint={"every": 100}), tmp_path / "run")
    e = {k: v.double() for k, v in t.ema.items()}
    # the share of the old EMA each update keeps, by the step it follows
    keeps = {1: {1: 0.0, 2: 2 / 11, 3: 0.25, 4: 0.3}, 2: {2: 0.0 * (2 / 11), 4: 0.25 * 0.3}}[every]
    for n in range(1, 5):
        t.train_step()
        if n in keeps:
            w = params(t.model)
            e = {k: keeps[n] * e[k] + (1 - keeps[n]) * w[k].double() for k in e}
        for k in e:
            torch.testing.assert_close(t.ema[k].double(), e[k], rtol=0, atol=1e-6)
    assert any(not torch.equal(t.ema[k], params(t.model)[k]) for k in e)  # an average, not the last weights


def _states(t):
    return params(t.model), {k: v.clone() for k, v in t.ema.items()}, t.optimizer.state_dict()


def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path, image_folder):
    cfg = config(image_folder, steps=5, freeze_encoder_at=3)
    full = Trainer(cfg, tmp_path / "full")
    full.fit()
    # interrupted after step 2 (checkpoint every 2), resumed in a new Trainer
    part = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})}), tmp_path / "part")
    part.fit()
    resumed = Trainer(cfg, tmp_path / "part", resume=True)
    assert resumed.step == 2
    resumed.fit()
    (p1, e1, o1), (p2, e2, o2) = _states(full), _states(resumed)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert all(torch.equal(e1[k], e2[k]) for k in e1)
    for k, st in o1["state"].items():
        for f, v in st.items():
            assert torch.equal(v, o2["state"][k][f])


def test_checkpoint_write_killed_midway_leaves_the_previous_one(tmp_path, monkeypatch):
    root = tmp_path / "ckpts"
    save_checkpoint(root, 1, {"model": {"w": torch.ones(3)}}, {"step": 1})
    import safetensors.torch as st

    calls = {"n": 0}
    real = st.save_file

    def dying(tensors, path, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed")  # dies between two files of the checkpoint
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(st, "save_file", dying)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(root, 2, {"model": {"w": torch.zeros(3)}, "ema": {"w": torch.zeros(3)}}, {"step": 2})
    assert [s for s, _ in list_checkpoints(root)] == [1]
    parts, state = load_checkpoint(latest_checkpoint(root))
    assert state["step"] == 1 and torch.equal(parts["model"]["w"], torch.ones(3))
    assert not any(p.name.startswith(".tmp") for p in root.iterdir())


def test_retention_keeps_last_n_and_every_m(tmp_path, image_folder):
    cfg = config(image_folder, steps=8, checkpoint={"every": 1, "keep_last": 2, "keep_every": 4})
    Trainer(cfg, tmp_path / "run").fit()
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [4, 7, 8]


def test_corrupt_images_are_skipped_and_counted(tmp_path, image_folder):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(image_folder, folder)
    (folder / "class0" / "broken.png").write_bytes(b"not a png at all")
    jpg = folder / "class1" / "truncated.jpg"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(jpg)
    jpg.write_bytes(jpg.read_bytes()[:100])
    t = Trainer(config(folder, steps=6, optim={"batch_size": 4}), tmp_path / "run")
    summary = t.fit()
    assert sorted(summary["skipped_images"]) == sorted([str(folder / "class0" / "broken.png"), str(jpg)])
    last = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["skipped_images"] == 2


def test_stage1b_from_a_stage1a_run(tmp_path, image_folder):
    Trainer(config(image_folder, steps=2), tmp_path / "a").fit()
    cfg = config(image_folder, stage="1b", steps=2, init_from=str(tmp_path / "a"))
    cfg = cfg.model_copy(update={"model": cfg.model.replace(posttrain={"name": "mode_seeking", "k": 2})})
    t = Trainer(cfg, tmp_path / "b")
    start = params(t.model)
    a_parts, _ = load_checkpoint(latest_checkpoint(tmp_path / "a" / "checkpoints"), ["model"])
    assert all(torch.equal(start[k], a_parts["model"][k]) for k in start)
    t.train_step()
    after = params(t.model)
    assert all(torch.equal(start[n], after[n]) for n in start if n.startswith("encoder."))
    assert any(not torch.equal(start[n], after[n]) for n in start if n.startswith("decoder."))
    with pytest.raises(ValueError, match="init_from"):
        config(image_folder, stage="1b")


def test_data_order_shards_like_gradient_accumulation():
    one = StepBatchSampler(10, 2, 2, world=1, rank=0, seed=1)
    two = [StepBatchSampler(10, 2, 1, world=2, rank=r, seed=1) for r in range(2)]
    for step in range(7):
        assert one.micro_batch(step, 0) == two[0].micro_batch(step, 0)
        assert one.micro_batch(step, 1) == two[1].micro_batch(step, 0)
    # every epoch visits every item once
    items = [k for s in range(5) for a in range(2) for k in one.micro_batch(s, a)]
    assert sorted(i for e, i in items if e == 0) == list(range(10))


def test_cli_train_and_export(tmp_path, image_folder):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(config(image_folder, steps=2).model_dump_json())
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run"), "--set", "train.steps=3",
                       "--export", str(tmp_path / "model")]) == 0
    model = flowmo.FlowMo.from_pretrained(tmp_path / "model")
    parts, state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"), ["ema"])
    assert state["step"] == 3
    assert all(torch.equal(v, parts["ema"][k]) for k, v in model.state_dict().items())
    raw = export_checkpoint(tmp_path / "run", tmp_path / "raw", weights="raw")
    assert flowmo.FlowMo.from_pretrained(raw).spec == model.spec


def test_missing_perceptual_weights_are_refused_before_training(tmp_path, image_folder, monkeypatch):
    from flowmo.nets.weights import MissingWeightsError

    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(empty))
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(empty))
    cfg = config(image_folder)
    lpips = cfg.model.replace(flow_loss={"name": "rectified_flow", "perceptual": {"name": "lpips_vgg"}})
    with pytest.raises(MissingWeightsError) as e:
        Trainer(cfg.model_copy(update={"model": lpips}), tmp_path / "run")
    assert "vgg16-397923af.pth" in str(e.value) and "vgg.pth" in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()
    resnet = cfg.model.replace(posttrain={"name": "mode_seeking", "distance": {"name": "resnet50_logits"}})
    stage1b = cfg.train.model_copy(update={"stage": "1b", "init_from": str(tmp_path)})
    with pytest.raises(MissingWeightsError, match="resnet50-0676ba61.pth"):
        Trainer(cfg.model_copy(update={"model": resnet, "train": stage1b}), tmp_path / "run1b")


def test_export_never_overwrites_the_run_or_another_kind_of_folder(tmp_path, image_folder, capsys):
    from flowmo.cli import main as cli_main
    from flowmo.generators import MaskGiT

    cfg = tmp_path / "cfg.json"
    cfg.write_text(config(image_folder, steps=2, checkpoint={"every": 2}).model_dump_json())
    run = tmp_path / "run"
    # flowmo train --export equal to or inside --out (or holding a generator folder): refused before training
    gen = tmp_path / "gen"
    MaskGiT(vocab_size=8, seq_len=4, width=16, depth=1, heads=2).save_pretrained(gen)
    gen_files = {p.name: p.read_bytes() for p in gen.iterdir()}
    for export, message in ((run, "the training run folder --out"), (run / "checkpoints" / "m", "checkpoints of the"),
                            (gen, "holds a generator folder")):
        assert cli_main(["train", "--config", str(cfg), "--out", str(run), "--export", str(export), "-q"]) == 2
        assert message in capsys.readouterr().err
        assert not run.exists()
    assert train_main(["--config", str(cfg), "--out", str(run), "-q"]) == 0
    run_config = (run / "config.json").read_bytes()
    # flowmo export RUN --output RUN (or inside it, or from a checkpoint folder into its run): refused
    ckpt = latest_checkpoint(run / "checkpoints")
    for source, output in ((run, run), (run, ckpt), (ckpt, run), (ckpt, ckpt / "m")):
        assert cli_main(["export", str(source), "--output", str(output), "-q"]) == 2
        assert "--output" in capsys.readouterr().err
        with pytest.raises(ValueError, match="training run folder"):
            export_checkpoint(source, output)
    with pytest.raises(ValueError, match="holds a generator folder"):
        export_checkpoint(run, gen)
    assert (run / "config.json").read_bytes() == run_config
    assert {p.name: p.read_bytes() for p in gen.iterdir()} == gen_files
    # the run resumes; re-exporting over a tokenizer folder is allowed
    assert train_main(["--config", str(cfg), "--out", str(run), "--resume", "--set", "train.steps=3",
                       "--export", str(run / "model"), "-q"]) == 0  # a sub-folder of the run (as scripts/demo.sh)
    flowmo.FlowMo.from_pretrained(run / "model")
    assert cli_main(["export", str(run), "--output", str(tmp_path / "model"), "-q"]) == 0
    assert cli_main(["export", str(run), "--output", str(tmp_path / "model"), "--raw", "-q"]) == 0
    flowmo.FlowMo.from_pretrained(tmp_path / "model")


# ----------------------------------------------------------------------------- which weights, and their figures
def _held_out_psnr(folder, n: int = 4, seed: int = 0) -> float:
    """Held-out PSNR of a model folder's weights, computed here from its files: the run's first n
    held-out photos, each decoded in one step from the run's noise for its id."""
    from flowmo.samplers.noise import image_noise
    from flowmo.data.photos import held_out_photos
    from flowmo.metrics.pixel import psnr

    model = flowmo.FlowMo.from_pretrained(folder)
    x = held_out_photos(model.spec.image_size)[:n]
    noise = image_noise(seed, range(n), x.shape[1:], dtype=model.dtype)
    return float(psnr(x, model.reconstruct(x, noise=noise, sampler={"steps": 1})).mean())


def _card(folder) -> str:
    return (folder / "README.md").read_text()


def test_a_short_runs_exported_ema_is_not_its_initialisation(tmp_path, capsys):
    """flowmo train --export with the default EMA (decay 0.9999 every 10 steps, warm-up) on a 20-step
    run: the exported folder's held-out PSNR (computed from its files) is the raw weights', well above
    the initialisation's (without the warm-up the EMA was 99.8% the initial weights). Each model card
    names its weights and gives only the figures the run recorded of those weights."""
    from flowmo.folders.card import card_weights

    run = tmp_path / "run"
    sets = ["model=tiny", "train.steps=20", "train.optim.lr=3e-3", "train.optim.batch_size=4", "train.eval.images=4",
            "train.eval.steps=1", "train.log.tensorboard=false"]
    args = [a for s in sets for a in ("--set", s)]
    assert train_main([*args, "--out", str(run), "--export", str(tmp_path / "ema")]) == 0
    printed = capsys.readouterr().out
    assert "exported the EMA weights of step 20" in printed
    assert "held-out PSNR of the EMA weights (exported)" in printed and "held-out PSNR of the raw weights:" in printed
    export_checkpoint(run, tmp_path / "raw", weights="raw")
    ema, raw = _held_out_psnr(tmp_path / "ema"), _held_out_psnr(tmp_path / "raw")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    init = next(r for r in records if r["step"] == 0)["eval/raw/psnr"]
    assert raw - init > 1.0, (init, raw)  # the run learned something
    assert abs(ema - raw) < 0.1 * (raw - init), (init, raw, ema)
    for folder, weights, figure in ((tmp_path / "ema", "ema", ema), (tmp_path / "raw", "raw", raw)):
        card, other = _card(folder), {"ema": "raw", "raw": "ema"}[weights]
        assert card_weights(card) == weights
        assert f"- eval/{weights}/psnr: {figure:.4g}" in card and f"eval/{other}/" not in card
        assert f"the {'EMA' if weights == 'ema' else 'raw'} weights of step 20 (this folder's weights)" in card
        # flowmo eval of the folder says which weights it measured, and measures the card's figure
        out = tmp_path / f"eval_{weights}"
        assert eval_main(["--model", str(folder), "--data", "builtin", "--limit", "4", "--steps", "1",
                          "--lpips", "none", "--no-fid", "--output", str(out), "--examples", "0"]) == 0
        said = json.loads((out / "metrics.json").read_text())
        assert said["protocol"]["model"]["weights"] == weights
        assert said["metrics"]["psnr"] == pytest.approx(figure, abs=1e-4)
        assert f"({'EMA' if weights == 'ema' else 'raw'} weights)" in capsys.readouterr().out


def test_with_ema_disabled_the_export_is_the_raw_weights_and_says_so(tmp_path, image_folder, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(config(image_folder, steps=2, ema={"enabled": False},
                          eval={"enabled": True, "images": 2, "steps": 1}).model_dump_json())
    assert train_main(["--config", str(cfg), "--out", str(tmp_path / "run"), "--export", str(tmp_path / "m")]) == 0
    assert "exported the raw weights of step 2" in capsys.readouterr().out
    from flowmo.folders.card import card_weights

    card = _card(tmp_path / "m")
    assert card_weights(card) == "raw" and "- eval/raw/psnr: " in card and "eval/ema/" not in card
    parts, _ = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"), ["model"])
    model = flowmo.FlowMo.from_pretrained(tmp_path / "m")
    assert all(torch.equal(v, parts["model"][k]) for k, v in model.state_dict().items())
