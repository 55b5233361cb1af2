"""Issue 22, item 11: every reader of a folder or file, given another kind of folder or file,
says in one sentence which kind it found (a generator folder given as a tokenizer, a training run
given as a model folder, a tokenizer folder given as a token set, ...); and no pydantic dump
reaches a user: every validation error of a spec or config is one line naming the field, what
was expected and what was given, without pydantic's "For further information visit ..." lines.

The folders are real ones, written by flowmo itself (save_pretrained, the two trainers, the token
writers), once per module."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

import flowmo
from flowmo.cli import main
from flowmo.data.token_layout import TokenLayout
from flowmo.data.token_shards import TokenShardWriter
from flowmo.data.token_set_reader import read_token_set
from flowmo.data.tokens import read_tokens, write_tokens
from flowmo.generators import MaskGiT, load_generator
from flowmo.cli.io import list_images, load_model
from flowmo.folders.checkpoints import resolve_checkpoint
from flowmo.train.config import load_config, load_generator_config
from flowmo.train.trainer import Trainer

SPEC = flowmo.flowmo_tiny()  # 16 tokens x 2 groups of 9 bits
LAYOUT = TokenLayout("group", 16, 2, 512, SPEC.fingerprint())
CLASSES = ["a", "b"]
PYDANTIC_DUMP = re.compile(r"errors\.pydantic\.dev|validation errors? for|For further information|\[type=")

# what each kind is called in the messages (written here, not taken from flowmo.data.folder_kinds)
NAMED = {
    "tokenizer": "a tokenizer model folder",
    "generator": "a generator folder",
    "tokenizer-run": "a tokenizer training run",
    "generator-run": "a generator training run",
    "tokenizer-checkpoint": "a tokenizer training checkpoint",
    "generator-checkpoint": "a generator training checkpoint",
    "token-set": "a token set",
    "token-file": "a token file",
    "labelled-token-file": "a token file",
    "images": "a folder of images",
    "generator-config": "the config.json of a generator folder",
    "tokenizer-weights": "the model.safetensors of a tokenizer model folder",
}


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    """One folder or file of every kind flowmo writes."""
    from flowmo.train import Trainer
    from flowmo.train.generator_trainer import GeneratorTrainer

    root = tmp_path_factory.mktemp("kinds")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(images / f"{i}.png")
    torch.manual_seed(0)
    model = flowmo.build(SPEC)
    model.save_pretrained(root / "tokenizer")
    MaskGiT(vocab_size=512, seq_len=32, num_classes=2, width=32, depth=1, heads=2).save_pretrained(root / "generator")
    tokens = torch.randint(0, 512, (8, 16, 2), generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1] * 4)
    with TokenShardWriter(root / "token_set", spec=SPEC, layout=LAYOUT, classes=CLASSES, shard_size=4) as w:
        w.add(tokens, labels, [f"{i}.png" for i in range(8)])
    write_tokens(root / "tokens.safetensors", model.tokenize(torch.zeros(2, 3, 32, 32)), spec=SPEC,
                 sources=["0.png", "1.png"], groups=False)
    Trainer(load_config({"model": "tiny", "train": {
        "steps": 1, "device": "cpu", "data": {"folder": str(images)}, "optim": {"batch_size": 2},
        "checkpoint": {"every": 1}, "eval": {"enabled": False},
        "log": {"tensorboard": False, "progress": False, "images_every": 1000}}}), root / "tokenizer_run").fit()
    GeneratorTrainer(load_generator_config({
        "generator": {"name": "maskgit", "width": 32, "depth": 1, "heads": 2},
        "train": {"tokens": str(root / "token_set"), "steps": 1, "device": "cpu", "optim": {"batch_size": 4},
                  "log": {"tensorboard": False, "progress": False}}}), root / "generator_run").fit()
    return {
        "tokenizer": root / "tokenizer",
        "generator": root / "generator",
        "tokenizer-run": root / "tokenizer_run",
        "generator-run": root / "generator_run",
        "tokenizer-checkpoint": root / "tokenizer_run" / "checkpoints" / "ckpt-00000001",
        "generator-checkpoint": root / "generator_run" / "checkpoints" / "ckpt-00000001",
        "token-set": root / "token_set",
        "token-file": root / "tokens.safetensors",
        "labelled-token-file": root / "token_set" / "shard-00000.safetensors",
        "images": images,
        "generator-config": root / "generator" / "config.json",
        "tokenizer-weights": root / "tokenizer" / "model.safetensors",
    }


def _init_from(path):
    Trainer._load_init(None, Path(path))  # the kind is checked before the trainer is used


# reader -> (call, the kinds it reads)
READERS = {
    "FlowMo.from_pretrained": (flowmo.FlowMo.from_pretrained, {"tokenizer"}),
    "flowmo.cli.io.load_model": (load_model, {"tokenizer", "tokenizer-weights"}),
    "load_generator": (load_generator, {"generator"}),
    "MaskGiT.from_pretrained": (MaskGiT.from_pretrained, {"generator"}),
    "read_token_set": (read_token_set, {"token-set", "labelled-token-file"}),
    "read_tokens": (read_tokens, {"token-file", "labelled-token-file"}),
    "resolve_checkpoint (flowmo export)": (resolve_checkpoint, {"tokenizer-run", "generator-run",
                                                                "tokenizer-checkpoint", "generator-checkpoint"}),
    "train.init_from": (_init_from, {"tokenizer-run", "tokenizer-checkpoint", "tokenizer"}),
}
CASES = [(r, k) for r, (_, ok) in READERS.items() for k in NAMED if k not in ok]


@pytest.mark.parametrize("reader,kind", CASES, ids=[f"{r}-{k}" for r, k in CASES])
def test_a_reader_given_another_kind_names_the_kind_it_found(kinds, reader, kind):
    call, _ = READERS[reader]
    with pytest.raises(ValueError) as e:
        call(kinds[kind])
    msg = str(e.value)
    assert f"is {NAMED[kind]}" in msg, msg
    assert "\n" not in msg and not PYDANTIC_DUMP.search(msg), msg


@pytest.mark.parametrize("reader", list(READERS))
def test_each_reader_reads_its_own_kinds(kinds, reader):
    call, ok = READERS[reader]
    for kind in ok:
        if reader == "train.init_from":
            continue  # reading needs a trainer: the kind check passing is what matters here
        call(kinds[kind])


def test_an_image_folder_reader_given_a_model_folder_names_it(kinds):
    with pytest.raises(ValueError, match=r"no images .* found in folder .*is a tokenizer model folder"):
        list_images(kinds["tokenizer"])


# ----------------------------------------------------------------------------- the Hub path
def test_a_hub_repository_holding_a_generator_folder_says_so(kinds, tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    from huggingface_hub import constants as hub_constants

    from test_hub import _cache_file

    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    for f in ("config.json", "model.safetensors"):
        _cache_file(cache, "user/gen", f, (kinds["generator"] / f).read_bytes())
    with pytest.raises(ValueError, match="'user/gen': the folder .* is a generator folder, not a tokenizer model "
                                         "folder") as e:
        flowmo.FlowMo.from_pretrained("user/gen")
    assert not PYDANTIC_DUMP.search(str(e.value))


# ----------------------------------------------------------------------------- the command line
def _cli(argv, capsys):
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert not PYDANTIC_DUMP.search(err), err
    return err


@pytest.mark.parametrize("command,given,named", [
    ("reconstruct", "generator", "a generator folder"),
    ("reconstruct", "generator-run", "a generator training run"),
    ("tokenize", "token-set", "a token set"),
    ("eval", "generator", "a generator folder"),
    ("eval", "tokenizer-checkpoint", "a tokenizer training checkpoint"),
    ("detokenize-tokens", "token-set", "a token set"),
    ("detokenize-tokens", "tokenizer-weights", "the model.safetensors of a tokenizer model folder"),
    ("generate-generator", "tokenizer", "a tokenizer model folder"),
    ("generate-tokenizer", "generator", "a generator folder"),
    ("export", "tokenizer", "a tokenizer model folder"),
    ("export", "token-set", "a token set"),
])
def test_the_commands_name_the_kind_they_were_given(kinds, tmp_path, capsys, command, given, named):
    p, out = kinds[given], tmp_path / "out"
    argv = {
        "reconstruct": ["reconstruct", "--model", p, "--input", kinds["images"], "--output", out],
        "tokenize": ["tokenize", "--model", p, "--input", kinds["images"], "--output", out / "t.safetensors"],
        "eval": ["eval", "--model", p, "--data", kinds["images"], "--output", out, "--lpips", "none", "--no-fid"],
        "detokenize-tokens": ["detokenize", "--model", kinds["tokenizer"], "--tokens", p, "--output", out],
        "generate-generator": ["generate", "--generator", p, "--tokenizer", kinds["tokenizer"], "--classes", "0",
                               "--per-class", "1", "--out", out],
        "generate-tokenizer": ["generate", "--generator", kinds["generator"], "--tokenizer", p, "--classes", "0",
                               "--per-class", "1", "--out", out],
        "export": ["export", p, "--output", out],
    }[command]
    err = _cli(argv, capsys)
    assert f"is {named}" in err, err


def _config_file(tmp_path, doc) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(doc))
    return path


def test_flowmo_train_given_a_generator_config_says_to_use_train_generator(kinds, tmp_path, capsys):
    for cfg in (_config_file(tmp_path, {"generator": {"name": "maskgit"}, "train": {"tokens": "t", "steps": 2}}),
                kinds["generator-run"] / "config.json"):  # a generator run's own resolved config
        err = _cli(["train", "--config", cfg, "--out", tmp_path / "run"], capsys)
        assert "is a generator training config" in err and "flowmo train-generator" in err, err


def test_flowmo_train_generator_given_a_tokenizer_config_says_to_use_train(kinds, tmp_path, capsys):
    for cfg in (_config_file(tmp_path, {"model": "tiny", "train": {"steps": 2}}),
                kinds["tokenizer-run"] / "config.json"):
        err = _cli(["train-generator", "--config", cfg, "--out", tmp_path / "run"], capsys)
        assert "is a tokenizer training config" in err and "use flowmo train" not in err, err
        assert re.search(r"train it with flowmo train$", err), err


@pytest.mark.parametrize("command,given,named,resumed_by", [
    ("train", "generator-run", "a generator training run", "flowmo train-generator"),
    ("train", "tokenizer", "a tokenizer model folder", None),
    ("train-generator", "tokenizer-run", "a tokenizer training run", "flowmo train"),
    ("train-generator", "generator", "a generator folder", None),
])
def test_a_run_of_the_other_command_or_a_model_folder_is_refused_as_out(kinds, tmp_path, capsys, command, given,
                                                                        named, resumed_by):
    cfg = (_config_file(tmp_path, {"model": "tiny", "train": {"steps": 2, "device": "cpu"}}) if command == "train"
           else _config_file(tmp_path, {"generator": {"name": "maskgit"},
                                        "train": {"tokens": str(kinds["token-set"]), "steps": 2}}))
    before = (kinds[given] / "config.json").read_bytes()
    err = _cli([command, "--config", cfg, "--out", kinds[given], "--resume"], capsys)
    assert f"holds {named}" in err, err
    if resumed_by:
        assert f"which {resumed_by} resumes" in err, err
    assert (kinds[given] / "config.json").read_bytes() == before


# ----------------------------------------------------------------------------- pydantic errors, one line
def _one_line(e: BaseException, *words: str) -> str:
    msg = str(e)
    assert "\n" not in msg and not PYDANTIC_DUMP.search(msg), msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    return msg


@pytest.mark.parametrize("call,words", [
    (lambda: flowmo.FlowMoSpec.from_json(SPEC.to_json().replace('"image_size": 32', '"image_size": "big"')),
     ["image_size", "expected an integer", "'big'"]),
    (lambda: flowmo.FlowMoSpec.from_json("{not json"), ["not valid JSON"]),
    (lambda: flowmo.build({**SPEC.model_dump(), "imagesize": 32}), ["unexpected field imagesize", "32"]),
    (lambda: flowmo.build({k: v for k, v in SPEC.model_dump().items() if k != "encoder"}), ["encoder is missing"]),
    (lambda: SPEC.replace(encoder={"depth": 0}), ["encoder.depth", "greater than 0", "got 0"]),
    (lambda: flowmo.SamplerSpec(steps=-3), ["steps", "greater than 0", "got -3"]),
    (lambda: load_config({"model": "tiny", "train": {"steps": "many"}}), ["train.steps", "'many'"]),
    (lambda: load_config({"model": "tiny", "train": {"steps": 2, "optim": {"lr": -1.0}}}),
     ["train.optim.lr", "-1.0"]),
    (lambda: load_generator_config({"generator": {"name": "maskgit", "width": "wide"},
                                    "train": {"tokens": "t", "steps": 2}}), ["width", "'wide'"]),
], ids=["from_json-field", "from_json-not-json", "build-extra", "build-missing", "replace", "SamplerSpec",
        "load_config-type", "load_config-range", "load_generator_config"])
def test_spec_and_config_errors_are_one_line_naming_field_expected_and_given(call, words):
    with pytest.raises(ValidationError) as e:  # still pydantic's type, for except clauses
        call()
    _one_line(e.value, *words)


def test_a_damaged_model_config_is_one_line(kinds, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    cfg = json.loads((kinds["tokenizer"] / "config.json").read_text())
    cfg["encoder"]["depth"] = "three"
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model.safetensors").write_bytes((kinds["tokenizer"] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError) as e:
        flowmo.FlowMo.from_pretrained(d)
    _one_line(e.value, "not a valid FlowMo spec", "encoder.depth", "'three'")


def test_a_damaged_generator_config_is_one_line(kinds, tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    doc = json.loads((kinds["generator"] / "config.json").read_text())
    doc["config"]["mlp_ratio"] = "x"
    (d / "config.json").write_text(json.dumps(doc))
    (d / "model.safetensors").write_bytes((kinds["generator"] / "model.safetensors").read_bytes())
    with pytest.raises(ValueError) as e:
        load_generator(d)
    _one_line(e.value, "mlp_ratio", "'x'")


@pytest.mark.parametrize("argv,words", [
    (["reconstruct", "--model", "{tokenizer}", "--input", "{images}", "--output", "{out}", "--sampler",
      '{"steps": 0}'], ["invalid sampler settings", "steps", "greater than 0", "got 0"]),
    (["reconstruct", "--model", "{tokenizer}", "--input", "{images}", "--output", "{out}", "--sampler",
      '{"solver": {"name": "rk9"}}'], ["solver", "rk9"]),
    (["eval", "--model", "{tokenizer}", "--data", "{images}", "--output", "{out}", "--lpips", "none", "--no-fid",
      "--sampler", '{"stepz": 3}'], ["unknown field 'stepz'", "takes steps"]),
    (["train", "--set", "model=tiny", "--set", "train.steps=many", "--out", "{out}"], ["train.steps", "'many'"]),
    (["train-generator", "--set", "generator.name=maskgit", "--set", "generator.depth=-1", "--set",
      "train.tokens={token_set}", "--set", "train.steps=2", "--out", "{out}"], ["depth", "-1"]),
], ids=["reconstruct-sampler", "reconstruct-solver", "eval-sampler", "train-set", "train-generator-set"])
def test_command_line_validation_errors_are_one_line(kinds, tmp_path, capsys, argv, words):
    fill = {"tokenizer": kinds["tokenizer"], "images": kinds["images"], "out": tmp_path / "out",
            "token_set": kinds["token-set"]}
    for key, value in fill.items():
        argv = [a.replace("{" + key + "}", str(value)) for a in argv]
    err = _cli(argv, capsys)
    for w in words:
        assert w in err, f"{w!r} not in {err!r}"


def test_a_custom_pydantic_error_of_a_users_model_is_one_line_too():
    """A validator raising pydantic's PydanticCustomError (a type pydantic does not know) keeps its
    type and message, told in one line."""
    from pydantic import model_validator
    from pydantic_core import PydanticCustomError

    from flowmo.registry.spec_base import OneLineErrors

    class Mine(OneLineErrors):
        x: int = 0

        @model_validator(mode="after")
        def _small(self):
            if self.x > 3:
                raise PydanticCustomError("too_big", "x is {x}, more than 3", {"x": self.x})
            return self

    with pytest.raises(ValidationError) as e:
        Mine(x=5)
    _one_line(e.value, "invalid Mine", "x is 5, more than 3")
    assert [err["type"] for err in e.value.errors()] == ["too_big"]


def test_a_model_is_not_written_into_a_training_checkpoint_or_checkpoints_folder(tmp_path):
    """flowmo export / save_pretrained into another run's checkpoint replaced its weights, and the
    run then resumed from them: a checkpoint, a run's checkpoints/ and a run without config.json
    are refused, naming what they are."""
    from flowmo.data.folder_kinds import check_folder_kind

    ckpt = tmp_path / "r2" / "checkpoints" / "ckpt-00000004"
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text('{"step": 4}')
    model = flowmo.build(flowmo.flowmo_tiny())
    for target, words in ((ckpt, "is a tokenizer training checkpoint"),
                          (ckpt.parent, "is the checkpoints/ folder of a training run"),
                          (tmp_path / "r2", "holds a training run's checkpoints/")):
        with pytest.raises(ValueError, match=words):
            model.save_pretrained(target)
    assert sorted(p.name for p in ckpt.iterdir()) == ["state.json"]
    check_folder_kind(tmp_path / "r2", "tokenizer-run", "--out")  # a run's own folder resumes
