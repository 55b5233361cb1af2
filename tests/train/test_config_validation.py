"""The training config refuses bad input at validation, naming the field: booleans and strings
for numbers, anything but true/false for booleans, NaN/infinities, out-of-range betas, huge
counts; malformed overrides and config sources get clear errors."""


import pytest
from pydantic import ValidationError

from flowmo.spec import MAX_SAMPLER_STEPS
from flowmo.train.config import (
    MAX_BATCH,
    MAX_BUILTIN_LENGTH,
    MAX_IMAGES,
    MAX_LOG_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    MAX_WORKERS,
    TrainSpec,
)
from flowmo.train.config import apply_overrides, load_config

BASE = {"model": "tiny", "train": {"steps": 2}}


def load(*overrides):
    return load_config(BASE, list(overrides))


def refused(*overrides, words=()):
    with pytest.raises(ValidationError) as e:
        load(*overrides)
    msg = str(e.value)
    for key in overrides:
        field = key.split("=", 1)[0]
        assert field in msg, f"{field!r} not in {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in {msg}"
    return msg


# every int field of TrainSpec and its sections: (dotted key, upper bound or None)
INT_FIELDS = [
    ("train.steps", MAX_STEPS),
    ("train.seed", MAX_SEED),
    ("train.freeze_encoder_at", MAX_STEPS),
    ("train.max_nonfinite", MAX_STEPS),
    ("train.dist_timeout_s", MAX_TIMEOUT_S),
    ("train.threads", 1024),
    ("train.data.workers", MAX_WORKERS),
    ("train.data.builtin_length", MAX_BUILTIN_LENGTH),
    ("train.optim.batch_size", MAX_BATCH),
    ("train.optim.grad_accum", MAX_BATCH),
    ("train.optim.warmup_steps", MAX_STEPS),
    ("train.ema.every", MAX_STEPS),
    ("train.checkpoint.every", MAX_STEPS),
    ("train.checkpoint.keep_last", MAX_STEPS),
    ("train.checkpoint.keep_every", MAX_STEPS),
    ("train.log.every", MAX_STEPS),
    ("train.log.images_every", MAX_STEPS),
    ("train.log.images", MAX_LOG_IMAGES),
    ("train.eval.every", MAX_STEPS),
    ("train.eval.images", MAX_IMAGES),
    ("train.eval.steps", MAX_SAMPLER_STEPS),
    ("model.image_size", None),
    ("model.code_length", None),
    ("model.sampler.steps", None),
    ("model.encoder.depth", None),
]


def _field(key):
    return key.split(".")[-1]


def _fields_of(model, prefix, kind):
    """Dotted keys of the fields of ``model`` (recursively) whose type is ``kind`` or Optional[kind]."""
    import typing

    def plain(t):
        return typing.get_args(t)[0] if typing.get_origin(t) is typing.Annotated else t

    out = set()
    for name, f in model.model_fields.items():
        ann = plain(f.annotation)
        args = [plain(a) for a in typing.get_args(ann) if a is not type(None)]
        if ann is kind or (typing.get_origin(ann) is typing.Union and args == [kind]):
            out.add(f"{prefix}.{name}")
        elif isinstance(ann, type) and hasattr(ann, "model_fields"):
            out |= _fields_of(ann, f"{prefix}.{name}", kind)
    return out


def test_the_lists_cover_every_int_bool_float_field_of_the_train_spec():
    found = _fields_of(TrainSpec, "train", int)
    assert len(found) == 21 and found == {k for k, _ in INT_FIELDS if k.startswith("train.")}
    assert _fields_of(TrainSpec, "train", bool) == {k for k in BOOL_FIELDS if k.startswith("train.")}
    assert _fields_of(TrainSpec, "train", float) == {k for k in FLOAT_FIELDS if k.startswith("train.")}


@pytest.mark.parametrize("key, bound", INT_FIELDS)
@pytest.mark.parametrize("text", ["true", "false", "True", "'3'", '" 4 "', "'1_000'", "'8'", "1.5", ".inf", ".nan"])
def test_int_fields_refuse_booleans_strings_fractions(key, bound, text):
    refused(f"{key}={text}")


def test_freeze_encoder_at_false_is_an_error_not_zero():
    msg = refused("train.freeze_encoder_at=false", words=["boolean", "null"])
    assert "freeze_encoder_at" in msg
    assert load("train.freeze_encoder_at=null").train.freeze_encoder_at is None


@pytest.mark.parametrize("key, bound", [(k, b) for k, b in INT_FIELDS if b is not None])
def test_int_fields_have_upper_bounds(key, bound):
    for v in (bound + 1, 2**63, 2**64):
        refused(f"{key}={v}", words=[str(bound)])


@pytest.mark.parametrize("key, bound", [(k, b) for k, b in INT_FIELDS if b is not None])
def test_upper_bounds_themselves_are_accepted(key, bound):
    extra = [f"train.steps={max(bound, 2)}"] if key == "train.freeze_encoder_at" else []
    c = load(f"{key}={bound}", *extra)
    node = c
    for k in key.split("."):
        node = getattr(node, k)
    assert node == bound and type(node) is int


def test_integral_floats_are_accepted_as_ints():
    c = load("train.steps=1e3", "train.optim.batch_size=4.0")
    assert c.train.steps == 1000 and type(c.train.steps) is int
    assert c.train.optim.batch_size == 4


# ----------------------------------------------------------------------------- bools
BOOL_FIELDS = [
    "train.renormalize", "train.compile", "train.data.hflip", "train.ema.enabled", "train.log.tensorboard", "train.log.progress",
    "train.eval.enabled", "train.ema.warmup", "model.sampler.clip", "model.encoder.qkv_bias",
]


@pytest.mark.parametrize("key", BOOL_FIELDS)
@pytest.mark.parametrize("text", ["no", "off", "yes", "on", "0", "1", "'true'", "null", "0.0"])
def test_bool_fields_accept_only_true_and_false(key, text):
    refused(f"{key}={text}", words=["true or false"])


@pytest.mark.parametrize("key", BOOL_FIELDS)
def test_bool_fields_accept_true_and_false(key):
    for text, value in (("true", True), ("false", False), ("False", False)):
        node = load(f"{key}={text}")
        for k in key.split("."):
            node = getattr(node, k)
        assert node is value


def test_bool_fields_in_a_yaml_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\ntrain: {steps: 2, data: {hflip: no}}\n")
    with pytest.raises(ValidationError, match="hflip"):
        load_config(cfg)
    cfg.write_text("model: tiny\ntrain: {steps: 2, data: {hflip: false}, log: {tensorboard: FALSE}}\n")
    c = load_config(cfg)
    assert c.train.data.hflip is False and c.train.log.tensorboard is False


# ----------------------------------------------------------------------------- floats
FLOAT_FIELDS = [
    "train.optim.lr", "train.optim.eps", "train.optim.weight_decay", "train.optim.grad_clip", "train.optim.final_lr_fraction",
    "train.ema.decay",
    "model.sampler.guidance.scale", "model.encoder.mlp_ratio",
]


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("text", [".inf", "-.inf", ".nan", "true", "false", "'1e-3'", "'0.5'"])
def test_float_fields_refuse_non_finite_booleans_and_strings(key, text):
    refused(f"{key}={text}")


def test_float_fields_accept_ints():
    c = load("train.optim.lr=1", "train.optim.grad_clip=2", "train.optim.weight_decay=0")
    assert (c.train.optim.lr, c.train.optim.grad_clip, c.train.optim.weight_decay) == (1.0, 2.0, 0.0)


@pytest.mark.parametrize("text", ["[.nan, 0.9]", "[0.9, .inf]", "[2, -1]", "[1, 0.9]", "[0.9, 1.0]", "[-0.1, 0.9]",
                                  "[true, 0.9]", "['0.9', 0.9]", "[0.9]", "[0.9, 0.9, 0.9]"])
def test_betas_are_finite_and_in_0_1(text):
    refused(f"train.optim.betas={text}")


def test_betas_accepted():
    assert load("train.optim.betas=[0, 0.999]").train.optim.betas == (0.0, 0.999)


@pytest.mark.parametrize("key, text", [
    ("train.optim.lr", "0"), ("train.optim.lr", "-1e-4"), ("train.optim.eps", "0"), ("train.optim.weight_decay", "-1"),
    ("train.optim.grad_clip", "0"), ("train.ema.decay", "1"), ("train.ema.decay", "-0.5"),
])
def test_float_ranges(key, text):
    refused(f"{key}={text}")


# ----------------------------------------------------------------------------- overrides and sources
@pytest.mark.parametrize("item", ["train.steps=[1", "train.steps={a: 1", "train.device='cpu", "train.steps=a: b: c",
                                  "train.device=@x"])
def test_malformed_yaml_override_is_a_value_error_naming_it(item):
    with pytest.raises(ValueError) as e:
        apply_overrides(BASE, [item])
    assert not isinstance(e.value, ValidationError)
    assert repr(item) in str(e.value) and "YAML" in str(e.value)


@pytest.mark.parametrize("item", ["train..steps=1", ".steps=1", "train.=1", "=1", " . =1"])
def test_empty_key_parts_are_refused(item):
    with pytest.raises(ValueError, match="empty part"):
        apply_overrides(BASE, [item])


def test_overrides_must_be_a_list_of_strings():
    with pytest.raises(TypeError, match="list of"):
        apply_overrides(BASE, "train.steps=3")
    with pytest.raises(TypeError, match="list of"):
        load_config(BASE, "train.steps=3")
    with pytest.raises(TypeError, match="string"):
        apply_overrides(BASE, [5])
    with pytest.raises(TypeError, match="mapping"):
        apply_overrides([1], [])
    assert apply_overrides(BASE, ("train.steps=3",))["train"]["steps"] == 3
    assert apply_overrides(BASE, (s for s in ["train.steps=4"]))["train"]["steps"] == 4


def test_malformed_override_through_the_cli_is_a_usage_error():
    from flowmo.cli import _describe, _exit_code

    try:
        load_config(BASE, ["train.steps=[1"])
    except Exception as e:  # noqa: BLE001
        assert _exit_code(e) == 2 and "train.steps=[1" in _describe(e)
    else:
        raise AssertionError("not refused")


@pytest.mark.parametrize("source", [5, 1.5, b"config.yaml", ["a.yaml"], object()])
def test_load_config_source_type(source):
    with pytest.raises(TypeError, match="source must be a config file path"):
        load_config(source)


def test_load_config_folder_and_missing_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        load_config(tmp_path)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_config(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("name, text, words", [
    ("bad.yaml", "model: tiny\ntrain: {steps: [1\n", "not valid YAML"),
    ("bad.json", '{"model": "tiny", ', "not valid JSON"),
    ("bin.yaml", b"\xff\xfe\x00model", "not UTF-8"),
    ("list.yaml", "- 1\n- 2\n", "mapping"),
])
def test_unparsable_files_are_value_errors_naming_the_file(tmp_path, name, text, words):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError) as e:
        load_config(p)
    assert words in str(e.value) and name in str(e.value)


def test_preset_must_be_a_name():
    with pytest.raises(ValueError, match="preset"):
        load_config({"model": {"preset": ["tiny"]}, "train": {"steps": 2}})


def test_defaults_and_shipped_configs_still_load():
    from pathlib import Path

    c = load()
    assert c.train.freeze_encoder_at is None and c.train.data.hflip is True
    for p in sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml")):
        load_config(p)


def test_init_from_in_a_stage_1a_run_is_refused_not_ignored(tmp_path):
    """Stage 1A starts from fresh weights: an init_from there used to be recorded and silently
    not loaded."""
    msg = refused(f"train.init_from={tmp_path}", words=["stage '1a'", "train.stage=1b", "--resume"])
    assert "\n" not in msg.strip()
