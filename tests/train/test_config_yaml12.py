"""Config parsing faults a break-it review found: YAML 1.1 integers (010 -> 8, 0777, 1:00 -> 60),
an empty or dict ``imports:``, and ``--set model={...}`` on a preset."""

import pytest
from pydantic import ValidationError

import flowmo
from flowmo.folders.imports import import_modules
from flowmo.train.config import load_config
from flowmo.train.config import parse_yaml

BASE = {"model": "tiny", "train": {"steps": 10}}


# ----------------------------------------------------------------------------- 5. YAML 1.2 numbers
@pytest.mark.parametrize("text,value", [
    ("010", 10), ("0777", 777), ("08", 8), ("+8", 8), ("-3", -3), ("0", 0), ("100_000", 100000),
    ("0x10", 16), ("0xff", 255), ("0o17", 15),
    ("1e3", 1000.0), ("-.5", -0.5), (".5", 0.5), ("1.5", 1.5), ("5E+2", 500.0), ("1.", 1.0),
])
def test_numbers_follow_yaml_1_2(text, value):
    got = parse_yaml(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("text", ["1:00", "1:30.5", "0b101", "190:20:30", "0O17", "0X10"])
def test_yaml_1_1_only_numbers_stay_strings(text):
    assert parse_yaml(text) == text


def test_a_leading_zero_is_decimal_in_files_and_overrides(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\ntrain: {steps: 010, seed: 0777}\n")
    c = load_config(cfg, ["model.code_length=010", "model.sampler.steps=0x10"])
    assert (c.train.steps, c.train.seed, c.model.code_length, c.model.sampler.steps) == (10, 777, 10, 16)


@pytest.mark.parametrize("override,field", [("model.code_length=1:00", "model.code_length"),
                                            ("train.seed=0b101", "train.seed"),
                                            ("model.sampler.guidance.scale=1:30.5", "model.sampler.guidance.scale")])
def test_base_60_and_binary_are_refused_naming_the_field(override, field):
    with pytest.raises(ValidationError, match=rf"{field}: expected (an integer|a number), got the string"):
        load_config(BASE, [override])


# ----------------------------------------------------------------------------- 12. imports
def test_an_empty_imports_entry_means_no_modules(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("imports:\nmodel: tiny\ntrain: {steps: 1}\n")
    assert load_config(cfg).imports == ()
    assert load_config(BASE, ["imports=null"]).imports == ()


@pytest.mark.parametrize("override", ["imports={json: 1}", "imports=3", "imports=json"])
def test_imports_that_are_not_a_list_are_refused(override):
    with pytest.raises(TypeError, match="imports must be a list of module names"):
        load_config(BASE, [override])


@pytest.mark.parametrize("names", [None, {"json": 1}, "json"])
def test_import_modules_refuses_what_is_not_a_list(names):
    with pytest.raises(TypeError, match="--import must be a list of module names"):
        import_modules(names)


# ----------------------------------------------------------------------------- 13. --set model={...}
def test_a_dict_set_on_the_model_edits_the_preset():
    c = load_config(BASE, ["model={code_length: 8}"])
    assert c.model == flowmo.flowmo_tiny().replace(code_length=8)
    c = load_config({"model": {"preset": "tiny", "code_length": 4}, "train": {"steps": 1}},
                    ["model={sampler: {steps: 3}}"])
    assert c.model == flowmo.flowmo_tiny().replace(code_length=4, sampler={"steps": 3})


def test_a_dict_naming_a_preset_replaces_the_model_section():
    c = load_config(BASE, ["model.code_length=8", "model={preset: small, code_length: 16}"])
    assert c.model == flowmo.flowmo_small().replace(code_length=16)


def test_a_dict_set_on_the_model_refuses_unknown_fields():
    with pytest.raises(ValueError, match="override 'model={code_lenght: 8}': model: unknown field 'code_lenght'"):
        load_config(BASE, ["model={code_lenght: 8}"])
