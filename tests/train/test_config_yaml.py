"""Config YAML follows YAML 1.2 for booleans and floats, in files and in --set overrides."""

import pytest

from flowmo.train.config import load_config
from flowmo.train.config import parse_yaml


@pytest.mark.parametrize("text, value", [
    ("off", "off"), ("on", "on"), ("yes", "yes"), ("no", "no"), ("Off", "Off"),
    ("true", True), ("False", False), ("TRUE", True),
    ("1e-3", 1e-3), ("5E+2", 500.0), ("-3e2", -300.0), ("1.0e-4", 1e-4), ("10", 10), ("abc1e3", "abc1e3"),
])
def test_yaml_12_scalars(text, value):
    assert parse_yaml(f"v: {text}") == {"v": value}


def test_autocast_off_and_exponent_lr_in_a_file_and_an_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: tiny\ntrain: {steps: 2, autocast: off, optim: {lr: 3e-4}}\n")
    c = load_config(cfg)
    assert c.train.autocast == "off" and c.train.optim.lr == 3e-4
    c = load_config({"model": "tiny", "train": {"steps": 2}}, ["train.autocast=off", "train.optim.lr=2e-3"])
    assert c.train.autocast == "off" and c.train.optim.lr == 2e-3


def test_a_key_given_twice_is_refused_naming_the_file_and_line(tmp_path):
    cfg = tmp_path / "twice.yaml"
    cfg.write_text("model: tiny\ntrain: {steps: 2}\ntrain: {steps: 3}\n")
    with pytest.raises(ValueError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "twice.yaml" in msg and "duplicate key" in msg and "line 3" in msg and "\n" not in msg, msg
    with pytest.raises(ValueError, match="override 'train.optim={lr: 1, lr: 2}'.*duplicate key"):
        load_config({"model": "tiny", "train": {"steps": 2}}, ["train.optim={lr: 1, lr: 2}"])
