"""What a resumed run may change (issue 22, item 9), and Stage 1B's architecture taken from
``train.init_from`` (item 13).

Item 9: a resumed run keeps the settings its steps were trained with: a change of any field the
run's ``config.json`` records is refused naming the field with its old and new value, except the
few ``RESUMABLE`` allows (each: a reason the steps trained stay what they were), which are said,
recorded in ``config_changes.json``, and leave the run bitwise equal to an uninterrupted one.

Item 13: a Stage 1B config without ``model:`` (or with a partial one) takes the architecture from
the ``init_from`` folder; one that differs from the folder's is refused naming the field.
"""

import json

import copy

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import flowmo
from flowmo.train import Trainer, load_config
from flowmo.folders.checkpoints import CheckpointError
from flowmo.train.checkpointing import CONFIG_CHANGES
from flowmo.train.config import ABSENT, config_differences
from flowmo.train.export import export_checkpoint
from flowmo.train.config import load_generator_config
from flowmo.train.generator_trainer import GeneratorTrainer

from .test_generator_training import write_token_set
from .test_trainer import raw_config


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


def quiet(log=None):
    return (lambda s: None) if log is None else log.append


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ----------------------------------------------------------------------------- the comparison
_leaves = st.one_of(st.none(), st.booleans(), st.integers(-2, 2), st.sampled_from(["a", "b"]),
                    st.lists(st.integers(0, 1), max_size=2))
_configs = st.recursive(_leaves, lambda c: st.dictionaries(st.sampled_from(["name", "x", "y"]), c, max_size=3),
                        max_leaves=10)


@given(_configs, _configs)
def test_config_differences_are_exactly_what_turns_one_config_into_the_other(old, new):
    """Setting each reported path of ``old`` to its new value (deleting it where the new side
    lacks it) gives ``new``; nothing is reported for equal configs, and a path is reported once."""
    diffs = config_differences(old, new)
    assert (diffs == []) == (old == new)
    assert len({p for p, _, _ in diffs}) == len(diffs)
    if diffs and diffs[0][0] == "":  # compared whole (not both mappings, or components of other names)
        assert diffs == [("", old, new)]
        return
    rebuilt = copy.deepcopy(old)
    for path, a, b in diffs:
        *parents, last = path.split(".")
        node = rebuilt
        for k in parents:
            node = node[k]
        assert node.get(last, ABSENT) == a
        if b == ABSENT:
            del node[last]
        else:
            node[last] = b
    assert rebuilt == new


# ----------------------------------------------------------------------------- item 9: refused
@pytest.fixture(scope="module")
def two_step_run(tmp_path_factory, image_folder):
    """A run trained to step 2 of a 2-step config (constant learning rate)."""
    out = tmp_path_factory.mktemp("resume") / "run"
    Trainer(load_config(raw_config(image_folder, steps=2)), out, log=quiet()).fit()
    return out


# (the --set override, the field as the message names it, its value in the run, the new value)
REFUSED = [
    ("train.optim.lr=5e-4", "train.optim.lr", 1e-3, 5e-4),
    ("train.optim.batch_size=3", "train.optim.batch_size", 2, 3),
    ("train.optim.grad_accum=2", "train.optim.grad_accum", 1, 2),
    ("train.seed=4", "train.seed", 3, 4),
    ("train.data.hflip=false", "train.data.hflip", True, False),
    ("train.ema.decay=0.5", "train.ema.decay", 0.9, 0.5),
    ("train.renormalize=false", "train.renormalize", True, False),
    ("model.code_length=8", "model.code_length", 16, 8),
    ("model.decoder.depth=1", "model.decoder.depth", 2, 1),
    ("model.flow_loss.cfg_dropout=0.5", "model.flow_loss.cfg_dropout", 0.1, 0.5),
    # the run's 2 steps trained the encoder in both: frozen after step 1 they would not have
    ("train.freeze_encoder_at=1", "train.freeze_encoder_at", None, 1),
]


def test_a_freeze_already_applied_cannot_be_moved_or_removed_on_resume(image_folder, tmp_path):
    """The checkpoint at the freeze holds a frozen encoder: a resumed run with the freeze later or
    gone would keep it frozen (it did, silently), so the change is refused."""
    out = tmp_path / "run"
    Trainer(load_config(raw_config(image_folder, steps=2), ["train.freeze_encoder_at=2"]), out, log=quiet()).fit()
    for value in ("null", "3"):
        cfg = load_config(raw_config(image_folder, steps=2), [f"train.freeze_encoder_at={value}"])
        with pytest.raises(CheckpointError, match=r"train.freeze_encoder_at 2 -> .*frozen at step 2 of the 2 steps"):
            Trainer(cfg, out, resume=True, log=quiet())


@pytest.mark.parametrize("override, field, old, new", REFUSED, ids=[r[1] for r in REFUSED])
def test_resuming_with_a_changed_training_setting_is_refused_naming_it(two_step_run, image_folder, override,
                                                                      field, old, new):
    before = (two_step_run / "config.json").read_bytes()
    cfg = load_config(raw_config(image_folder, steps=2), [override])
    with pytest.raises(CheckpointError) as e:
        Trainer(cfg, two_step_run, resume=True, log=quiet())
    message = str(e.value)
    assert f": {field} {json.dumps(old)} -> {json.dumps(new)}" in message
    assert "resume with the run's own config" in message and "another output folder" in message
    assert (two_step_run / "config.json").read_bytes() == before  # the record is kept
    assert not (two_step_run / CONFIG_CHANGES).exists()


def test_every_changed_field_is_named_in_one_refusal(two_step_run, image_folder):
    cfg = load_config(raw_config(image_folder, steps=3),
                      ["train.optim.lr=5e-4", "train.seed=9", "train.log.every=2", "train.data.folder=elsewhere"])
    with pytest.raises(CheckpointError) as e:
        Trainer(cfg, two_step_run, resume=True, log=quiet())
    message = str(e.value)
    for part in ("train.optim.lr 0.001 -> 0.0005", "train.seed 3 -> 9",
                 f"train.data.folder {json.dumps(str(image_folder))} -> \"elsewhere\""):
        assert part in message
    # the changes that alone would be accepted are not among the refused
    assert "train.steps 2 -> 3" not in message and "train.log.every" not in message.split("(only")[0]


def test_extending_a_run_whose_learning_rate_schedule_depends_on_its_length_is_refused(tmp_path, image_folder):
    out = tmp_path / "run"
    cosine = {"decay": "cosine", "final_lr_fraction": 0.1}
    Trainer(load_config(raw_config(image_folder, steps=1, optim=cosine)), out, log=quiet()).fit()
    with pytest.raises(CheckpointError, match=r"train.steps 1 -> 3 \(train.steps: with train.optim.decay 'cosine'"):
        Trainer(load_config(raw_config(image_folder, steps=3, optim=cosine)), out, resume=True, log=quiet())
    # the same length resumes (an interrupted run continues with its own schedule)
    assert Trainer(load_config(raw_config(image_folder, steps=1, optim=cosine)), out, resume=True,
                   log=quiet()).step == 1


# ----------------------------------------------------------------------------- item 9: accepted
# Fields RESUMABLE allows, changed between the interrupted run and its continuation.
ACCEPTED = {
    "train.steps": (2, 3),
    "train.threads": (None, "the process's count"),  # the same count: bitwise on every CPU (another count
    # may round differently, e.g. on an Intel Xeon: docs/reliability.md, section 6)
    "train.max_nonfinite": (10, 3),
    "train.data.workers": (0, 1),
    "train.checkpoint.every": (2, 1),
    "train.checkpoint.keep_last": (10, 4),
    "train.log.every": (1, 2),
    "train.eval.enabled": (False, True),
    "train.eval.images": (10, 1),
    "train.eval.steps": (None, 1),
    "model.sampler.steps": (25, 2),
    "model.decoder.gradient_checkpointing": (False, True),
}


def test_resumable_changes_are_said_recorded_and_leave_the_run_bitwise_equal(tmp_path, image_folder):
    accepted = {**ACCEPTED, "train.threads": (None, torch.get_num_threads())}
    full = Trainer(load_config(raw_config(image_folder, steps=3)), tmp_path / "full", log=quiet())
    full.fit()
    Trainer(load_config(raw_config(image_folder, steps=2)), tmp_path / "part", log=quiet()).fit()
    overrides = [f"{field}={json.dumps(new)}" for field, (old, new) in accepted.items()]
    cfg = load_config(raw_config(image_folder), overrides)
    assert cfg.train.steps == 3
    log: list[str] = []
    threads = torch.get_num_threads()
    try:
        resumed = Trainer(cfg, tmp_path / "part", resume=True, log=quiet(log))
        assert resumed.step == 2
        resumed.fit()
    finally:
        torch.set_num_threads(threads)  # train.threads is process-wide
    assert all(torch.equal(a, b) for a, b in zip(params(full.model).values(), params(resumed.model).values()))
    assert all(torch.equal(full.ema[k], resumed.ema[k]) for k in full.ema)
    # recorded: config.json is the config in force, config_changes.json what changed and from which step
    record = json.loads((tmp_path / "part" / CONFIG_CHANGES).read_text())
    assert sorted((c["step"], c["field"], c["old"], c["new"]) for c in record) == sorted(
        (2, field, old, new) for field, (old, new) in accepted.items())
    assert json.loads((tmp_path / "part" / "config.json").read_text()) == json.loads(cfg.model_dump_json())
    # said
    said = [line for line in log if "changed settings" in line]
    assert len(said) == 1 and "train.steps 2 -> 3" in said[0] and CONFIG_CHANGES in said[0]
    # a second resumption with one more change appends to the history
    more = load_config(raw_config(image_folder), overrides + ["train.steps=4"])
    try:
        Trainer(more, tmp_path / "part", resume=True, log=quiet()).fit()
    finally:
        torch.set_num_threads(threads)
    record2 = json.loads((tmp_path / "part" / CONFIG_CHANGES).read_text())
    assert record2[:len(record)] == record and record2[len(record):] == [
        {"step": 3, "field": "train.steps", "old": 3, "new": 4}]


def test_the_command_line_resumes_with_the_runs_own_config_and_refuses_a_change(tmp_path, image_folder, capsys):
    from flowmo.cli import main

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(raw_config(image_folder, steps=2)))
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "-q"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--set", "train.optim.lr=5e-4", "-q"]) == 2
    err = capsys.readouterr().err
    assert "train.optim.lr 0.001 -> 0.0005" in err and "resume with the run's own config" in err
    # without --config: the run's config.json; train.steps extended (constant lr): accepted and recorded
    assert main(["train", "--out", str(run), "--resume", "--set", "train.steps=3", "-q"]) == 0
    assert json.loads((run / CONFIG_CHANGES).read_text()) == [
        {"step": 2, "field": "train.steps", "old": 2, "new": 3}]
    assert json.loads((run / "config.json").read_text())["train"]["steps"] == 3


# ----------------------------------------------------------------------------- item 9: generator trainer
def test_the_generator_trainer_refuses_changed_settings_and_records_accepted_ones(tmp_path):
    tokens = write_token_set(tmp_path / "tokens")
    other_tokens = write_token_set(tmp_path / "tokens2", seed=1)

    def config(*overrides):
        raw = {"generator": {"name": "maskgit", "width": 32, "depth": 1, "heads": 2, "label_dropout": 0.1},
               "train": {"tokens": str(tokens), "steps": 2, "seed": 3, "device": "cpu", "autocast": "off",
                         "optim": {"lr": 3e-3, "batch_size": 4}, "ema": {"every": 1},
                         "log": {"every": 1, "tensorboard": False, "progress": False}}}
        return load_generator_config(raw, list(overrides))

    run = tmp_path / "run"
    GeneratorTrainer(config(), run, log=quiet()).fit()
    before = (run / "config.json").read_bytes()
    for override, shown in (("train.optim.lr=1e-3", "train.optim.lr 0.003 -> 0.001"),
                            ("train.optim.batch_size=2", "train.optim.batch_size 4 -> 2"),
                            ("train.seed=4", "train.seed 3 -> 4"),
                            (f"train.tokens={json.dumps(str(other_tokens))}",
                             f"train.tokens {json.dumps(str(tokens))} -> {json.dumps(str(other_tokens))}"),
                            ("generator.depth=2", "generator.depth 1 -> 2"),
                            ("generator.label_dropout=0.5", "generator.label_dropout 0.1 -> 0.5")):
        with pytest.raises(CheckpointError) as e:
            GeneratorTrainer(config(override, "train.steps=3"), run, resume=True, log=quiet())
        assert f": {shown}" in str(e.value) and "train.steps 2 -> 3" not in str(e.value).split("(only")[0]
        assert (run / "config.json").read_bytes() == before
    log: list[str] = []
    resumed = GeneratorTrainer(config("train.steps=3", "train.log.every=2"), run, resume=True, log=quiet(log))
    resumed.fit()
    assert json.loads((run / CONFIG_CHANGES).read_text()) == [
        {"step": 2, "field": "train.steps", "old": 2, "new": 3},
        {"step": 2, "field": "train.log.every", "old": 1, "new": 2}]
    assert any("train.steps 2 -> 3, train.log.every 1 -> 2" in line for line in log)


# ----------------------------------------------------------------------------- item 13
# A tiny architecture unlike the preset's (so taking the preset's would be visible), with a
# few-step objective of its own and its own sampler.
FOLDER_SPEC = flowmo.flowmo_tiny().replace(
    code_length=8, decoder={"depth": 1},
    posttrain={"name": "distillation", "k": 1, "teacher": {"steps": 2, "guidance": {"scale": 1.0}}},
    sampler={"steps": 3})


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    torch.manual_seed(5)
    return flowmo.FlowMo(FOLDER_SPEC).save_pretrained(tmp_path_factory.mktemp("init") / "model")


def stage1b(folder, init, model=None, **train) -> dict:
    raw = raw_config(folder, stage="1b", init_from=str(init), steps=1, **train)
    if model is None:
        del raw["model"]
    else:
        raw["model"] = model
    return raw


def test_a_stage1b_config_without_model_takes_the_init_from_folders_architecture(tmp_path, image_folder,
                                                                                  model_folder):
    cfg = load_config(stage1b(image_folder, model_folder))
    assert cfg.model.architecture() == FOLDER_SPEC.architecture()
    assert cfg.model.posttrain == FOLDER_SPEC.posttrain
    t = Trainer(cfg, tmp_path / "run", log=quiet())
    folder_weights = flowmo.FlowMo.from_pretrained(model_folder).state_dict()
    assert all(torch.equal(v, folder_weights[k]) for k, v in t.model.state_dict().items())
    t.fit()
    exported = flowmo.FlowMo.from_pretrained(export_checkpoint(tmp_path / "run", tmp_path / "out"))
    assert exported.spec.architecture() == FOLDER_SPEC.architecture()


def test_a_partial_model_section_edits_the_init_from_model(image_folder, model_folder):
    # the few-step configs' form: only the objective (and overrides of it) in model:
    objective = {"name": "distillation", "k": 2, "teacher": {"steps": 4, "guidance": {"scale": 1.0}}}
    raw = stage1b(image_folder, "nowhere", model={"posttrain": objective})
    cfg = load_config(raw, ["model.posttrain.k=4", f"train.init_from={json.dumps(str(model_folder))}"])
    assert cfg.model.architecture() == FOLDER_SPEC.architecture()
    assert (cfg.model.posttrain.k, cfg.model.posttrain.teacher.steps) == (4, 4)
    assert cfg.model.sampler == FOLDER_SPEC.sampler  # the folder's, not the default sampler
    # a gradient-checkpointing or sampler edit is no architecture change
    cfg = load_config(stage1b(image_folder, model_folder, model={"decoder": {"gradient_checkpointing": True}}),
                      ["model.sampler.steps=7"])
    assert cfg.model.decoder.gradient_checkpointing and cfg.model.sampler.steps == 7
    assert cfg.model.architecture() == FOLDER_SPEC.architecture()


def test_a_model_section_conflicting_with_the_init_from_folder_is_refused_naming_the_field(tmp_path, image_folder,
                                                                                           model_folder):
    for model, shown in (({"code_length": 16}, "model.code_length (folder: 8, config: 16)"),
                         ("tiny", "model.decoder.depth (folder: 1, config: 2)")):
        cfg = load_config(stage1b(image_folder, model_folder, model=model))
        with pytest.raises(ValueError) as e:
            Trainer(cfg, tmp_path / "run", log=quiet())
        message = str(e.value)
        assert shown in message and "drop model: altogether" in message
        if model == "tiny":
            assert "model.code_length (folder: 8, config: 16)" in message
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_stage1a_run_folder_gives_its_architecture_and_a_conflict_is_refused(tmp_path, image_folder):
    run = tmp_path / "a"
    Trainer(load_config(raw_config(image_folder, steps=1)), run, log=quiet()).fit()
    objective = {"posttrain": {"name": "distillation", "k": 1, "teacher": {"steps": 2}}}
    for init in (run, run / "checkpoints" / "ckpt-00000001"):
        cfg = load_config(stage1b(image_folder, init, model=objective))
        assert cfg.model.architecture() == flowmo.get_preset("tiny").architecture()
    bad = load_config(stage1b(image_folder, run, model={**objective, "code_channels": 9, "quantizer": {"group_bits": 9}}))
    with pytest.raises(ValueError, match=r"model.code_channels \(folder: 18, config: 9\)"):
        Trainer(bad, tmp_path / "b", log=quiet())


def test_init_from_a_released_name_takes_its_folder(tmp_path, image_folder, model_folder, monkeypatch):
    import flowmo.folders.hub

    monkeypatch.chdir(tmp_path)  # no local folder named flowmo_lo
    asked = []
    monkeypatch.setattr(flowmo.folders.hub, "released_folder", lambda name, **kw: asked.append(name) or model_folder)
    cfg = load_config(stage1b(image_folder, "flowmo_lo"))
    assert asked == ["flowmo_lo"] and cfg.model.architecture() == FOLDER_SPEC.architecture()
    with pytest.raises(FileNotFoundError, match="train.init_from: nowhere does not exist"):
        load_config(stage1b(image_folder, "nowhere"))


@pytest.mark.parametrize("text", ["{not json", "", '{"a": 1}', "[1]"])
def test_a_damaged_change_record_is_refused_naming_it_before_anything_is_rewritten(image_folder, tmp_path, text):
    """config.json used to be rewritten with the accepted change before the damaged record failed
    (with a bare JSON error), so the next resume saw no change and it was never recorded."""
    out = tmp_path / "run"
    Trainer(load_config(raw_config(image_folder, steps=2)), out, log=quiet()).fit()
    (out / CONFIG_CHANGES).write_text(text)
    before = (out / "config.json").read_bytes()
    cfg = load_config(raw_config(image_folder, steps=2), ["train.log.every=2"])
    with pytest.raises(CheckpointError, match=CONFIG_CHANGES + r".*(not valid JSON|does not hold a JSON list)"):
        Trainer(cfg, out, resume=True, log=quiet()).fit()
    assert (out / "config.json").read_bytes() == before


def test_an_earlier_checkpoints_card_describes_the_config_of_its_steps(image_folder, tmp_path):
    """A resume that changed the evaluation: the card of a checkpoint before it says what that
    checkpoint's figures were measured with, not the later config."""
    from flowmo.train.checkpointing import config_at_step

    out = tmp_path / "run"
    ev = ["train.eval.enabled=true", "train.eval.steps=1"]
    Trainer(load_config(raw_config(image_folder, steps=2), ev + ["train.eval.images=2"]), out, log=quiet()).fit()
    Trainer(load_config(raw_config(image_folder, steps=3), ev + ["train.eval.images=1"]), out, resume=True,
            log=quiet()).fit()
    now = json.loads((out / "config.json").read_text())
    assert now["train"]["eval"]["images"] == 1 and now["train"]["steps"] == 3
    then = config_at_step(out, now, 2)
    assert then["train"]["eval"]["images"] == 2 and then["train"]["steps"] == 2
    assert config_at_step(out, now, 3) == now
    export_checkpoint(out, tmp_path / "m2", step=2, weights="raw")
    export_checkpoint(out, tmp_path / "m3", step=3, weights="raw")
    assert "first 2 images" in (tmp_path / "m2" / "README.md").read_text()
    assert "first 1 images" in (tmp_path / "m3" / "README.md").read_text()


def test_a_run_recorded_before_the_ema_warm_up_resumes_with_its_own_ema(image_folder, tmp_path):
    """A config.json without train.ema.warmup is a run whose steps ran without one: read as
    warmup false, so resuming it with today's default (warm-up on) is a refused EMA change, not a
    silent one; an unreadable record names its file."""
    from flowmo.train.config import read_train_config

    out = tmp_path / "run"
    Trainer(load_config(raw_config(image_folder, steps=2)), out, log=quiet()).fit()
    doc = json.loads((out / "config.json").read_text())
    del doc["train"]["ema"]["warmup"]
    (out / "config.json").write_text(json.dumps(doc))
    assert read_train_config(out / "config.json").train.ema.warmup is False
    with pytest.raises(CheckpointError, match=r"train.ema.warmup false -> true"):
        Trainer(load_config(raw_config(image_folder, steps=2), ["train.ema.warmup=true"]), out, resume=True,
                log=quiet())
    doc["train"]["eval"]["use_ema"] = True
    (out / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"config.json \(a run's recorded config\) cannot be read: .*use_ema"):
        read_train_config(out / "config.json")
