"""The model card save_pretrained writes: the Hub's metadata header and the model in words."""

import pytest
import yaml

import flowmo
from flowmo.folders.card import card_weights, model_card


def _header_and_body(text):
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_save_pretrained_writes_a_card_with_the_hub_header_and_the_spec_in_words(tmp_path):
    spec = flowmo.get_preset("tiny")  # 32 x 32, 16 tokens of 18 LFQ bits
    m = flowmo.FlowMo(spec)
    folder = m.save_pretrained(tmp_path / "m", card={"license": "mit", "name": "user/tok",
                                                      "evaluation": {"eval/psnr": 19.8364}})
    head, body = _header_and_body((folder / "README.md").read_text())
    assert head["library_name"] == "flowmo" and head["license"] == "mit" and "image-tokenizer" in head["tags"]
    assert "16 per image, 18 bits each" in body and "288 bits per image" in body
    assert f"{288 / (32 * 32):.4g} bits per pixel" in body
    assert f"parameters: {sum(p.numel() for p in m.parameters()):,}" in body
    assert "25 euler steps on the pow p=0.25 grid, classifier-free guidance 1.5" in body
    assert "eval/psnr: 19.84" in body and "from_pretrained('user/tok')" in body
    assert "## Training\n\nnot recorded" in body
    assert flowmo.FlowMo.from_pretrained(folder).spec == spec  # the card does not disturb loading


def test_an_exported_run_card_records_its_training_and_held_out_figures(tmp_path):
    from flowmo.train import Trainer, load_config
    from flowmo.train.export import export_checkpoint

    cfg = load_config({"model": "tiny", "train": {
        "steps": 2, "seed": 1, "data": {"folder": None, "builtin_length": 8}, "optim": {"batch_size": 2},
        "checkpoint": {"every": 2}, "log": {"every": 1, "tensorboard": False, "progress": False},
        "eval": {"enabled": True, "images": 2, "every": 2}}})
    Trainer(cfg, tmp_path / "run").fit()
    folder = export_checkpoint(tmp_path / "run", tmp_path / "model")
    _, body = _header_and_body((folder / "README.md").read_text())
    assert "- stage: 1a" in body and "- steps: 2" in body and "built-in photos" in body
    # the EMA weights (the default export), named, with the figures of those weights only
    assert "- weights: ema (the exponential moving average" in body and "with warm-up" in body
    assert "eval/ema/psnr:" in body and "eval/ema/ssim:" in body and "eval/raw/" not in body
    assert card_weights(body) == "ema"


def test_presets_are_listed_and_bad_arguments_refused():
    spec = flowmo.get_preset("tiny").replace(sampler_presets={"distillation-2": {"steps": 2, "guidance": {"scale": 1}}})
    text = model_card(spec)
    assert "preset `distillation-2`: 2 euler steps" in text and "no guidance" in text
    for bad in ("", "two\nlines", 3):
        with pytest.raises(ValueError, match="license"):
            model_card(spec, license=bad)
    with pytest.raises(TypeError, match="training"):
        model_card(spec, training=[("steps", 1)])


def test_card_fields_are_checked_and_a_shard_run_names_its_shards(tmp_path):
    from flowmo.train import load_config
    from flowmo.train.export import _card_facts

    m = flowmo.FlowMo(flowmo.get_preset("tiny"))
    with pytest.raises(ValueError, match="unknown field.*licence"):
        m.save_pretrained(tmp_path / "a", card={"licence": "mit"})
    with pytest.raises(TypeError, match="card must be a dict"):
        m.save_pretrained(tmp_path / "b", card="mit")
    cfg = load_config({"model": "tiny", "train": {"steps": 1, "data": {"shards": "s/train-{000..003}.tar"},
                                                  "eval": {"images": 4}}})
    facts = _card_facts(cfg, tmp_path, 0, "ema")
    assert "tar shards" in facts["training"]["data"] and "train-{000..003}.tar" in facts["training"]["data"]


def test_a_bad_card_writes_nothing(tmp_path):
    m = flowmo.FlowMo(flowmo.get_preset("tiny"))
    with pytest.raises(ValueError, match="license"):
        m.save_pretrained(tmp_path / "new", card={"license": ""})
    assert not (tmp_path / "new").exists()


def test_card_weights_reads_the_weights_line_of_the_training_section():
    spec = flowmo.get_preset("tiny")
    for words, expected in (("ema (the exponential moving average ...)", "ema"), ("raw (the trained weights)", "raw"),
                            ("raw", "raw"), ("averaged somehow", None)):
        assert card_weights(model_card(spec, training={"steps": 3, "weights": words})) == expected
    assert card_weights(model_card(spec)) is None  # training not recorded
    assert card_weights(model_card(spec, evaluation={"weights": "ema"})) is None  # not the Training section
