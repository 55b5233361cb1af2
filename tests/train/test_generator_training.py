"""Training a token generator on a token set: the loss falls, a resumed run equals an
uninterrupted one bitwise, the exported folder loads with its metadata, bad configs are refused
naming the field, and the command line runs the whole path."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import flowmo
from flowmo.data.token_layout import TokenLayout
from flowmo.data.token_shards import TokenShardWriter
from flowmo.data.token_set_reader import read_token_set
from flowmo.generators import MaskGiT, read_generator_config
from flowmo.generators.build import build_generator
from flowmo.folders.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint
from flowmo.train.config import load_generator_config
from flowmo.train.generator_trainer import GeneratorTrainer, export_generator
from flowmo.train.sampler import derive_seed

from conftest import REPO

CLASSES = ["a", "b", "c"]
SPEC = flowmo.flowmo_tiny()  # its layout: 16 tokens x 2 groups of 9 bits -> L = 32, V = 512
LAYOUT = TokenLayout("group", 16, 2, 512, SPEC.fingerprint())


def write_token_set(folder: Path, rows_per_class: int = 12, seed: int = 0, tokenizer_weights=None) -> Path:
    """A learnable labelled token set: class c's rows repeat a class pattern with ~1/4 of the
    positions replaced by uniform noise."""
    rng = np.random.default_rng(seed)
    pos = np.arange(LAYOUT.seq_len)
    seqs, labels = [], []
    for c in range(len(CLASSES)):
        pattern = (c * 101 + pos * 7) % LAYOUT.vocab_size
        for _ in range(rows_per_class):
            row = pattern.copy()
            noisy = rng.random(LAYOUT.seq_len) < 0.25
            row[noisy] = rng.integers(0, LAYOUT.vocab_size, int(noisy.sum()))
            seqs.append(row)
            labels.append(c)
    tokens = torch.tensor(np.stack(seqs), dtype=torch.int64).reshape(-1, LAYOUT.tokens, LAYOUT.groups)
    labels = torch.tensor(labels, dtype=torch.int64)
    with TokenShardWriter(folder, spec=SPEC, layout=LAYOUT, classes=CLASSES, shard_size=16,
                          tokenizer_weights=tokenizer_weights) as w:
        w.add(tokens, labels, [f"{i}.png" for i in range(len(labels))])
    return folder


@pytest.fixture(scope="module")
def token_set(tmp_path_factory):
    return write_token_set(tmp_path_factory.mktemp("tokens") / "set")


def config(tokens, **train):
    t = {"tokens": str(tokens), "steps": 6, "seed": 3, "device": "cpu", "autocast": "off",
         "optim": {"lr": 3e-3, "batch_size": 4, "grad_accum": 2},
         "ema": {"decay": 0.9, "every": 2}, "checkpoint": {"every": 100},
         "log": {"every": 1, "tensorboard": False, "progress": False}}
    for k, v in train.items():
        t[k] = {**t[k], **v} if isinstance(v, dict) else v
    return load_generator_config({"generator": {"name": "maskgit", "width": 32, "depth": 1, "heads": 2,
                                                "label_dropout": 0.1}, "train": t})


def _held_out_loss(model, ts):
    """The loss on every row, masks from a fixed seed, in eval mode (no label dropout)."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model.loss(ts.sequences, ts.labels, generator=torch.Generator().manual_seed(123))
    model.train(was)
    return float(out.total)


def test_training_lowers_the_loss(tmp_path, token_set):
    t = GeneratorTrainer(config(token_set, steps=30, optim={"grad_accum": 1, "batch_size": 8}), tmp_path / "run")
    ts = read_token_set(token_set)
    before = _held_out_loss(t.model, ts)
    assert before == pytest.approx(np.log(512), rel=0.1)  # an untrained model: about uniform over V
    summary = t.fit()
    after = _held_out_loss(t.model, ts)
    assert summary["end_step"] == 30 and t.step == 30
    assert after < 0.75 * before, (before, after)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all("loss/total" in r and "sequences_per_s" in r and r["lr"] == 3e-3 for r in records)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "ckpt-00000030"


@pytest.mark.parametrize("decay", ["constant", "cosine", "linear"])
def test_the_last_step_of_a_generator_schedule_changes_the_weights(tmp_path, token_set, decay):
    """The generator trainer's schedule is the tokenizer trainer's: with final_lr_fraction 0 the
    last step runs above 0 (cosine over 2 steps: lr, then lr * (1 + cos(pi / 2)) / 2 = lr / 2)."""
    t = GeneratorTrainer(config(token_set, steps=2, optim={"decay": decay}), tmp_path / "run")
    t.train_step()
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train_step()
    assert any(not torch.equal(v, before[k]) for k, v in t.model.state_dict().items())
    expected_last = {"constant": 3e-3, "cosine": 3e-3 / 2, "linear": 3e-3 / 2}[decay]
    assert t._lr(1) == pytest.approx(expected_last, rel=1e-12) and t._lr(0) == 3e-3


def _states(t):
    return ({k: v.clone() for k, v in t.model.state_dict().items()}, {k: v.clone() for k, v in t.ema.items()},
            t.optimizer.state_dict())


def test_interrupted_and_resumed_equals_uninterrupted_bitwise(tmp_path, token_set):
    cfg = config(token_set)  # 6 steps of 2 micro-batches, EMA after steps 2, 4, 6
    full = GeneratorTrainer(cfg, tmp_path / "full")
    full.fit()
    part = GeneratorTrainer(cfg, tmp_path / "part")
    for _ in range(3):  # stopped after step 3, between two EMA updates (as a SIGTERM would)
        part.train_step()
    part.save()
    part.close()
    resumed = GeneratorTrainer(cfg, tmp_path / "part", resume=True)
    assert resumed.step == 3 and resumed.ema_step == 2
    resumed.fit()
    (p1, e1, o1), (p2, e2, o2) = _states(full), _states(resumed)
    assert p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert e1.keys() == e2.keys() and all(torch.equal(e1[k], e2[k]) for k in e1)
    for k, st in o1["state"].items():
        for f, v in st.items():
            assert torch.equal(v, o2["state"][k][f])
    # the EMA is an average of the trajectory, not the final weights
    assert any(not torch.equal(e1[k], p1[k].float()) for k in e1)


def test_export_loads_with_from_pretrained_and_carries_the_metadata(tmp_path, token_set):
    t = GeneratorTrainer(config(token_set, steps=4), tmp_path / "run")
    t.fit()
    path = export_generator(tmp_path / "run", tmp_path / "gen")
    g = MaskGiT.from_pretrained(path)
    assert g.vocab_size == 512 and g.seq_len == 32 and g.num_classes == 3
    for k, v in g.state_dict().items():  # the EMA weights
        assert torch.equal(v, t.ema[k]), k
    raw = MaskGiT.from_pretrained(export_generator(tmp_path / "run", tmp_path / "raw", weights="raw"))
    for k, v in raw.state_dict().items():
        assert torch.equal(v, t.model.state_dict()[k]), k
    meta = read_generator_config(path)["metadata"]
    assert set(meta) == {"layout", "tokenizer_fingerprint", "classes", "tokenizer_spec", "weights", "step"}
    # which weights, and of which step
    assert meta["weights"].startswith("ema (") and "decay 0.9 per step" in meta["weights"] and meta["step"] == 4
    assert read_generator_config(tmp_path / "raw")["metadata"]["weights"].startswith("raw (")
    assert TokenLayout.from_json(json.dumps(meta["layout"])) == LAYOUT
    assert meta["tokenizer_fingerprint"] == SPEC.fingerprint()
    assert meta["classes"] == CLASSES
    assert flowmo.FlowMoSpec.model_validate(meta["tokenizer_spec"]).fingerprint() == SPEC.fingerprint()
    # the exported generator samples sequences of the token set's layout
    out = g.generate(torch.tensor([0, 2]), steps=2, generator=torch.Generator().manual_seed(0))
    assert LAYOUT.from_sequence(out.tokens).shape == (2, 16, 2)


def test_a_short_runs_exported_ema_generator_is_not_its_initialisation(tmp_path, token_set):
    """The shipped example's EMA (decay 0.999 every step) on a 30-step run, exported through the
    command line: with the warm-up the exported generator's loss is the trained one's, far below
    the initialisation's (without it the EMA was 97% the initial weights: 0.999**30)."""
    from flowmo.cli.train_generator import main as gen_main

    sets = [f"train.tokens={token_set}", "train.steps=30", "train.device=cpu", "train.autocast=off",
            "train.optim={lr: 3.0e-3, batch_size: 8}", "train.ema={decay: 0.999, every: 1}",
            "train.log.tensorboard=false",
            "generator={name: maskgit, width: 32, depth: 1, heads: 2, label_dropout: 0.1}", "train.log.progress=false"]
    run = tmp_path / "run"
    args = [a for x in sets for a in ("--set", x)]
    assert gen_main([*args, "--out", str(run), "--export", str(tmp_path / "ema"), "-q"]) == 0
    ts = read_token_set(token_set)
    with torch.random.fork_rng(devices=[]):  # the run's initial weights (train.seed 0), as the trainer makes them
        torch.manual_seed(derive_seed(0, "init"))
        initial = build_generator({"name": "maskgit", "width": 32, "depth": 1, "heads": 2, "label_dropout": 0.1},
                                  vocab_size=512, seq_len=32, num_classes=3)
    init = _held_out_loss(initial, ts)
    raw = _held_out_loss(MaskGiT.from_pretrained(export_generator(run, tmp_path / "raw", weights="raw")), ts)
    ema = _held_out_loss(MaskGiT.from_pretrained(tmp_path / "ema"), ts)
    assert raw < 0.75 * init, (init, raw)
    assert abs(ema - raw) < 0.1 * (init - raw), (init, raw, ema)
    assert read_generator_config(tmp_path / "ema")["metadata"]["weights"].startswith("ema (")


def test_the_tokenizer_weights_digest_is_carried_into_the_exported_folder(tmp_path):
    digest, other = "ab" * 32, "cd" * 32
    tokens = write_token_set(tmp_path / "set", rows_per_class=2, tokenizer_weights=digest)
    GeneratorTrainer(config(tokens, steps=2), tmp_path / "run").fit()
    assert json.loads((tmp_path / "run" / "token_set.json").read_text())["tokenizer_weights"] == digest
    meta = read_generator_config(export_generator(tmp_path / "run", tmp_path / "gen"))["metadata"]
    assert meta["tokenizer_weights"] == digest
    # resuming the run on the tokens of a tokenizer of the same spec but other weights (written
    # again at the same path: another path is a changed train.tokens) is refused
    shutil.rmtree(tokens)
    retokenized = write_token_set(tokens, rows_per_class=2, tokenizer_weights=other)
    with pytest.raises(CheckpointError, match="same architecture, other weights"):
        GeneratorTrainer(config(retokenized, steps=4), tmp_path / "run", resume=True)


def test_ema_off_exports_only_raw(tmp_path, token_set):
    t = GeneratorTrainer(config(token_set, steps=2, ema={"enabled": False}), tmp_path / "run")
    t.fit()
    assert t.ema == {}
    with pytest.raises(CheckpointError, match="no EMA weights"):
        export_generator(tmp_path / "run", tmp_path / "gen")
    export_generator(tmp_path / "run", tmp_path / "gen", weights="raw")


@pytest.mark.parametrize("generator, train, field", [
    ({"name": "maskgit", "widht": 32}, {}, "widht"),
    ({"name": "maskgan"}, {}, "generator.name"),
    ({"name": "maskgit", "vocab_size": 10}, {}, "generator.vocab_size comes from the token set"),
    ({"name": "maskgit", "width": 30, "heads": 4}, {}, "width"),
    ({"name": "maskgit", "label_dropout": 1.5}, {}, "label_dropout"),
    ({"name": "maskgit"}, {"optim": {"lr": 0}}, "train.optim.lr"),
    ({"name": "maskgit"}, {"steps": 0}, "train.steps"),
    ({"name": "maskgit"}, {"ema": {"decay": 1.0}}, "train.ema.decay"),
    ({"name": "maskgit"}, {"data": {"folder": "x"}}, "train.data"),
    ({"name": "maskgit"}, {"tokens": None}, "train.tokens"),
])
def test_bad_config_is_refused_naming_the_field(token_set, generator, train, field):
    t = {"tokens": str(token_set), "steps": 2, **train}
    if t["tokens"] is None:
        del t["tokens"]
    with pytest.raises(ValueError) as e:
        load_generator_config({"generator": generator, "train": t})
    assert field in str(e.value)


def test_overrides_and_the_shipped_example_config(token_set):
    cfg = load_generator_config(REPO / "configs" / "generators" / "example.yaml",
                                [f"train.tokens={token_set}", "generator={depth: 2}", "train.optim.lr=1e-3"])
    assert cfg.generator["name"] == "maskgit" and cfg.generator["depth"] == 2 and cfg.generator["width"] == 128
    assert cfg.train.optim.lr == 1e-3 and cfg.train.optim.batch_size == 64
    g = build_generator(cfg.generator, vocab_size=512, seq_len=32, num_classes=3)
    assert g.depth == 2 and g.width == 128
    with pytest.raises(ValueError, match="must look like key.path=value"):
        load_generator_config(REPO / "configs" / "generators" / "example.yaml", ["train.steps"])


def test_a_run_folder_of_another_generator_or_a_missing_token_set_is_refused(tmp_path, token_set):
    GeneratorTrainer(config(token_set, steps=1), tmp_path / "run").fit()
    other = load_generator_config({"generator": {"name": "maskgit", "width": 32, "depth": 2, "heads": 2},
                                   "train": {"tokens": str(token_set), "steps": 2, "device": "cpu"}})
    with pytest.raises(CheckpointError, match="generator.depth 1 -> 2"):
        GeneratorTrainer(other, tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GeneratorTrainer(config(tmp_path / "nowhere"), tmp_path / "run2")


def test_command_line_trains_and_exports(tmp_path, token_set, capsys):
    from flowmo.cli import main

    cfg = tmp_path / "gen.yaml"
    cfg.write_text(f"generator: {{name: maskgit, width: 32, depth: 1, heads: 2}}\n"
                   f"train: {{tokens: '{token_set}', steps: 3, device: cpu, optim: {{batch_size: 4}}, "
                   f"ema: {{every: 1}}, log: {{tensorboard: false}}}}\n")
    assert main(["train-generator", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--export", str(tmp_path / "gen"), "-q"]) == 0
    assert MaskGiT.from_pretrained(tmp_path / "gen").num_classes == 3
    parts, state = load_checkpoint(latest_checkpoint(tmp_path / "run" / "checkpoints"))
    assert state["step"] == 3 and state["kind"] == "generator" and set(parts) == {"model", "optimizer", "ema"}
    # resuming at the end trains no further step; --set overrides reach the config
    assert main(["train-generator", "--config", str(cfg), "--out", str(tmp_path / "run"), "--resume",
                 "--set", "train.steps=4", "-q"]) == 0
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "ckpt-00000004"
    # resuming without --config takes the run's own config.json; flowmo export knows a generator run
    assert main(["train-generator", "--out", str(tmp_path / "run"), "--resume", "--set", "train.steps=5", "-q"]) == 0
    assert latest_checkpoint(tmp_path / "run" / "checkpoints").name == "ckpt-00000005"
    assert main(["export", str(tmp_path / "run"), "--output", str(tmp_path / "exported"), "-q"]) == 0
    exported = MaskGiT.from_pretrained(tmp_path / "exported")
    assert exported.metadata["classes"] == MaskGiT.from_pretrained(tmp_path / "gen").metadata["classes"]
    capsys.readouterr()
    assert main(["train-generator", "--config", str(cfg), "--out", str(tmp_path / "bad"),
                 "--set", "generator.depht=2"]) == 2
    assert "depht" in capsys.readouterr().err


def test_export_never_overwrites_the_run_or_another_kind_of_folder(tmp_path, token_set, capsys):
    from flowmo.cli import main

    cfg = tmp_path / "gen.yaml"
    cfg.write_text(f"generator: {{name: maskgit, width: 32, depth: 1, heads: 2}}\n"
                   f"train: {{tokens: '{token_set}', steps: 2, device: cpu, optim: {{batch_size: 4}}, "
                   f"ema: {{every: 1}}, log: {{tensorboard: false, progress: false}}}}\n")
    run = tmp_path / "run"
    # --export equal to --out or inside its checkpoints: refused before training (nothing written)
    for export in (run, run / "checkpoints" / "gen"):
        assert main(["train-generator", "--config", str(cfg), "--out", str(run), "--export", str(export), "-q"]) == 2
        err = capsys.readouterr().err
        assert "--export" in err and "the training run folder --out" in err, err
        assert not run.exists()
    # --export holding a tokenizer folder: refused before training, the tokenizer untouched
    tok = tmp_path / "tok"
    flowmo.build(SPEC).save_pretrained(tok)
    before = {p.name: p.read_bytes() for p in tok.iterdir()}
    assert main(["train-generator", "--config", str(cfg), "--out", str(run), "--export", str(tok), "-q"]) == 2
    assert "holds a tokenizer model folder" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in tok.iterdir()} == before and not run.exists()
    # a real run: export_generator into the run itself, a checkpoint of it, or a tokenizer folder is refused
    assert main(["train-generator", "--config", str(cfg), "--out", str(run), "-q"]) == 0
    run_config = (run / "config.json").read_bytes()
    ckpt = latest_checkpoint(run / "checkpoints")
    for source, out in ((run, run), (run, ckpt), (ckpt, run), (ckpt, ckpt), (run, run / "checkpoints" / "g")):
        with pytest.raises(ValueError, match="training run folder"):
            export_generator(source, out)
    with pytest.raises(ValueError, match="holds a tokenizer model folder"):
        export_generator(run, tok)
    assert (run / "config.json").read_bytes() == run_config
    assert {p.name: p.read_bytes() for p in tok.iterdir()} == before
    # the run still resumes; re-exporting over its own generator folder is allowed
    assert main(["train-generator", "--config", str(cfg), "--out", str(run), "--resume", "--set", "train.steps=3",
                 "--export", str(run / "model"), "-q"]) == 0  # a sub-folder of the run (the demos' RUN/model)
    assert read_generator_config(run / "model")["generator"] == "maskgit"
    export_generator(run, tmp_path / "gen")
    export_generator(run, tmp_path / "gen", weights="raw")
    assert read_generator_config(tmp_path / "gen")["generator"] == "maskgit"
    # and a generator run's folder is not taken by a tokenizer export either
    with pytest.raises(ValueError, match="holds a generator training run"):
        flowmo.build(SPEC).save_pretrained(run)
    from flowmo.train.config import GeneratorTrainConfig

    assert GeneratorTrainConfig.model_validate_json((run / "config.json").read_text()).train.steps == 3


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "generators").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_generator_config_loads_and_builds(path, token_set):
    cfg = load_generator_config(path, [f"train.tokens={token_set}"])
    g = build_generator(cfg.generator, vocab_size=64, seq_len=16, num_classes=10)
    assert g.num_classes == 10 and cfg.train.steps > 0


def test_a_warm_up_longer_than_the_run_is_noted(tmp_path, token_set):
    said = []
    t = GeneratorTrainer(config(token_set, steps=2, optim={"warmup_steps": 100}), tmp_path / "run", log=said.append)
    t.fit()
    assert any("warmup_steps (100) exceeds train.steps (2)" in s and "at most 6e-05" in s for s in said), said
