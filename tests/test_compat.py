"""Loading the released checkpoints: key layout of both presets, EMA/raw choice, conversion, refusals."""

import json
import os
import pickle

import pytest
import torch

import flowmo
from flowmo import StateDictMismatchError
from flowmo.folders.convert import convert_release_checkpoint, load_release_checkpoint
from flowmo.folders.release import (
    NotACheckpointError,
    infer_release_spec,
    load_release_state_dict,
    map_release_state_dict,
    spec_from_release_config,
)
from flowmo.state_dicts import check_state_dict

from conftest import reference_file


@pytest.mark.parametrize("name", ["flowmo_lo", "flowmo_hi"])
def test_release_keys_map_onto_presets(name):
    info = json.loads(reference_file(f"{name}_keys.json").read_text())
    shapes = info["state_dict_shapes"]
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    mapped = map_release_state_dict(state)
    with torch.device("meta"):
        model = flowmo.build(flowmo.get_preset(name))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(expected, mapped, name)  # no missing, unexpected or mis-shaped key
    assert set(expected) == set(shapes)
    assert sum(p.numel() for p in model.parameters()) == info["n_params"]
    assert sum(p.numel() for p in model.encoder.parameters()) == info["encoder_params"]
    # the spec inferred from the shapes and the release's config overrides agree with the preset
    assert infer_release_spec(mapped) == flowmo.get_preset(name)
    assert spec_from_release_config(info["config_overrides"]) == flowmo.get_preset(name)


def _tiny_release_file(tmp_path, spec=None, **extra):
    spec = spec or flowmo.flowmo_tiny()
    ema, raw = flowmo.build(spec), flowmo.build(spec)
    payload = {"model_ema_state_dict": ema.state_dict(), "model_state_dict": raw.state_dict(), "total_steps": 7}
    payload.update(extra)
    path = tmp_path / "flowmo_tiny.pth"
    torch.save(payload, path)
    return path, ema, raw


def test_ema_by_default_raw_on_request(tmp_path):
    spec = flowmo.flowmo_tiny()
    path, ema, raw = _tiny_release_file(tmp_path)
    m = load_release_checkpoint(path, spec=spec)
    assert not m.training
    for k, v in m.state_dict().items():
        assert torch.equal(v, ema.state_dict()[k])
    m_raw = load_release_checkpoint(path, spec=spec, weights="raw")
    for k, v in m_raw.state_dict().items():
        assert torch.equal(v, raw.state_dict()[k])
    with pytest.raises(ValueError, match="weights"):
        load_release_state_dict(path, weights="best")


def test_wrapper_prefixes_are_stripped():
    sd = {"module.encoder._orig_mod.img_in.weight": torch.zeros(1), "_orig_mod.decoder.txt_in.bias": torch.zeros(1)}
    assert set(map_release_state_dict(sd)) == {"encoder.img_in.weight", "decoder.txt_in.bias"}


def test_convert_then_from_pretrained_is_identical(tmp_path):
    spec = flowmo.flowmo_tiny()
    path, ema, _ = _tiny_release_file(tmp_path)
    out = convert_release_checkpoint(path, tmp_path / "converted", spec=spec)
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    loaded = flowmo.FlowMo.from_pretrained(out)
    assert loaded.spec == spec
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    ema.eval()
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), ema.encode(x))


def test_infer_spec_needs_group_bits_for_unknown_channels():
    spec = flowmo.release_spec(mup_width=2, enc_mup_width=2, enc_depth=1, dec_depth=1, context_dim=20,
                               codebook_size_for_entropy=10, image_size=32, code_length=8)
    with torch.device("meta"):
        sd = flowmo.build(spec).state_dict()
    with pytest.raises(ValueError, match="codebook_size_for_entropy"):
        infer_release_spec(sd)
    assert infer_release_spec(sd, codebook_size_for_entropy=10, image_size=32, code_length=8) == spec


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    spec = flowmo.flowmo_tiny()
    sd = flowmo.build(spec).state_dict()
    bad = dict(sd)
    bad.pop("decoder.img_in.bias")
    bad["decoder.extra.weight"] = torch.zeros(3)
    bad["encoder.txt_in.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad.pth"
    torch.save({"model_ema_state_dict": bad}, path)
    with pytest.raises(StateDictMismatchError) as e:
        load_release_checkpoint(path, spec=spec)
    msg = str(e.value)
    assert "decoder.img_in.bias" in msg and "decoder.extra.weight" in msg and "encoder.txt_in.weight" in msg


def test_file_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_release_state_dict(tmp_path / "absent.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(os.urandom(256))
    with pytest.raises(NotACheckpointError, match="refused|not a readable"):
        load_release_state_dict(junk)
    path, _, _ = _tiny_release_file(tmp_path)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(NotACheckpointError):
        load_release_state_dict(truncated)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(NotACheckpointError, match="not a checkpoint dict"):
        load_release_state_dict(listing)
    other = tmp_path / "other.pth"
    torch.save({"optimizer": {"lr": 1}}, other)
    with pytest.raises(NotACheckpointError, match="model_ema_state_dict"):
        load_release_state_dict(other)


class _Payload:
    """Unpickling this calls open(path, 'w'): a file appears if the loader runs code."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model_ema_state_dict": _Payload(str(marker))}, f)
    with pytest.raises(NotACheckpointError, match="weights_only"):
        load_release_state_dict(path)
    assert not marker.exists()
    # the same payload inside torch.save's zip format
    path2 = tmp_path / "evil_zip.pth"
    torch.save({"model_ema_state_dict": _Payload(str(marker))}, path2)
    assert not marker.exists()
    with pytest.raises(NotACheckpointError):
        load_release_state_dict(path2)
    assert not marker.exists()
