"""Errors that moved to the entry point of a path (the inner re-checks were removed): each entry
still refuses the bad input with one sentence naming it."""

import json

import pytest
import torch

import flowmo
from flowmo.data.photos import held_out_photos
from flowmo.data.tokens import write_tokens
from flowmo.folders.generator_folder import read_generator_config
from flowmo.folders.release import NotACheckpointError, load_release_state_dict


def test_write_tokens_refuses_a_folder_as_its_output(tmp_path):
    spec = flowmo.flowmo_tiny()
    tokens = torch.zeros(1, spec.code_length, dtype=torch.int64)
    with pytest.raises(ValueError, match="is a folder; give a file name"):
        write_tokens(tmp_path, tokens, spec=spec, sources=["a"], groups=False)
    assert list(tmp_path.iterdir()) == []


def test_held_out_photos_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="unknown built-in photo 'camera'"):
        held_out_photos(16, holdout=("camera",))


def test_a_release_file_whose_weights_are_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"model_ema_state_dict": [1, 2, 3], "total_steps": 1}, path)
    with pytest.raises(NotACheckpointError, match="has no 'model_ema_state_dict' state dict"):
        load_release_state_dict(path)


@pytest.mark.parametrize("field, value", [("generator", 3), ("config", []), ("metadata", [])])
def test_a_generator_config_with_a_field_of_the_wrong_type_is_refused(tmp_path, field, value):
    doc = {"format": "flowmo-generator", "version": 1, "generator": "maskgit", "config": {}, "metadata": {}}
    (tmp_path / "config.json").write_text(json.dumps({**doc, field: value}))
    with pytest.raises(ValueError, match='config.json must hold "generator" \\(a name\\), "config" and "metadata"'):
        read_generator_config(tmp_path)


def test_a_step_given_with_one_checkpoint_folder_is_refused(tmp_path):
    """--step names a checkpoint of a run; given with one checkpoint folder it was silently ignored."""
    import torch

    from flowmo.folders.checkpoints import resolve_checkpoint, save_checkpoint

    run = tmp_path / "run"
    ckpt = save_checkpoint(run / "checkpoints", 2, {"model": {"w": torch.zeros(1)}}, {"step": 2})
    assert resolve_checkpoint(run, 2) == (ckpt, run)
    assert resolve_checkpoint(ckpt) == (ckpt, run)
    with pytest.raises(ValueError, match="applies to a run folder"):
        resolve_checkpoint(ckpt, 1)
    with pytest.raises(TypeError, match="step must be an int"):
        resolve_checkpoint(run, "2")


@pytest.mark.parametrize("call", ["decode", "detokenize", "reconstruct", "loss", "posttrain_loss"])
def test_a_generator_that_is_not_a_torch_generator_is_named_at_the_entry(call):
    """It failed inside torch.randn / a time sampler with a multi-line torch message."""
    m = flowmo.build("tiny")
    s = m.spec.image_size
    x = torch.zeros(1, 3, s, s)
    args = {"decode": (m.encode(x),), "detokenize": (m.tokenize(x),)}.get(call, (x,))
    with pytest.raises(TypeError, match="generator must be a torch.Generator or None, got int"):
        getattr(m, call)(*args, generator=5)
