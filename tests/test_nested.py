"""Ordered, variable-rate tokens (issue 27): nested token dropout in the Stage 1A loss
(spec.nested_dropout) and decoding a prefix of the tokens: absent tokens do not reach the
decoder, a full-length prefix is ordinary decoding, the draws of k, save/load, training."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None)


def nested_spec(**nd) -> flowmo.FlowMoSpec:
    return flowmo.flowmo_tiny().replace(nested_dropout=nd)


@pytest.fixture(scope="module")
def model() -> flowmo.FlowMo:
    torch.manual_seed(0)
    return flowmo.build(nested_spec()).eval()


def _images(b=2, seed=1):
    return torch.rand(b, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.mark.parametrize("distribution,t,min_tokens,expected", [
    ("pow2", 16, 1, [1, 2, 4, 8, 16]), ("pow2", 12, 1, [1, 2, 4, 8, 12]), ("pow2", 256, 4, [4, 8, 16, 32, 64, 128, 256]),
    ("uniform", 5, 2, [2, 3, 4, 5]), ("pow2", 1, 1, [1]),
])
def test_the_choices_of_k(distribution, t, min_tokens, expected):
    assert flowmo.NestedDropoutSpec(distribution=distribution, min_tokens=min_tokens).choices(t) == expected


def test_the_spec_is_off_by_default_round_trips_and_checks_min_tokens():
    assert flowmo.flowmo_tiny().nested_dropout is None and flowmo.flowmo_lo().nested_dropout is None
    spec = nested_spec(distribution="uniform", min_tokens=2)
    assert flowmo.FlowMoSpec.from_json(spec.to_json()) == spec
    assert spec.fingerprint() == flowmo.flowmo_tiny().fingerprint()  # a training option: same architecture
    with pytest.raises(ValueError, match=r"nested_dropout.min_tokens \(17\) must be at most code_length \(16\)"):
        nested_spec(min_tokens=17)
    with pytest.raises(ValueError, match="distribution"):
        nested_spec(distribution="geometric")


@FAST
@given(st.integers(0, 2**31 - 1), st.integers(1, 6))
def test_absent_tokens_do_not_reach_the_decoder(model, seed, k):
    """A changed absent token gives bitwise the same velocity."""
    g = torch.Generator().manual_seed(seed)
    code = model.tokens_to_code(torch.randint(0, 2**18, (2, 16), generator=g))
    other = code.clone()
    other[:, k:] = model.tokens_to_code(torch.randint(0, 2**18, (2, 16), generator=g))[:, k:]
    kept = torch.tensor([k, k])
    x, t = torch.randn(2, 3, 32, 32, generator=g), torch.rand(2, generator=g)
    with torch.no_grad():
        a = model.decoder_velocity(x, t, model.conditioning(code, num_tokens=kept))
        b = model.decoder_velocity(x, t, model.conditioning(other, num_tokens=kept))
        c = model.decoder_velocity(x, t, model.conditioning(other))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_a_full_length_prefix_is_ordinary_decoding_and_a_prefix_is_its_padded_tokens(model):
    x, noise = _images(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {"noise": noise, "sampler": {"steps": 2}}
    tokens = model.tokenize(x)
    full = model.detokenize(tokens, **kw)
    assert torch.equal(model.detokenize(tokens, num_tokens=16, **kw), full)
    assert torch.equal(model.detokenize(tokens, num_tokens=torch.tensor([16, 16]), **kw), full)
    prefix = model.detokenize(tokens[:, :4], **kw)
    assert torch.equal(prefix, model.detokenize(tokens, num_tokens=4, **kw))
    code = model.tokens_to_code(tokens)
    assert torch.equal(model.decode(code[:, :4], **kw).images, prefix)
    assert not torch.equal(prefix, full)
    mixed = model.detokenize(tokens, num_tokens=torch.tensor([4, 16]), **kw)  # per image
    assert torch.equal(mixed[0], prefix[0]) and torch.equal(mixed[1], full[1])


def test_the_draws_of_k_come_from_the_generator_in_loss_draws_order(model):
    g = lambda: torch.Generator().manual_seed(7)
    k = model.draw_num_tokens(4000, generator=g())
    assert torch.equal(k, model.draw_num_tokens(4000, generator=g()))
    counts = {c: int((k == c).sum()) for c in (1, 2, 4, 8, 16)}
    assert sum(counts.values()) == 4000 and all(abs(n - 800) < 4 * math.sqrt(800) for n in counts.values())
    model.train()
    try:
        x = _images()
        draws = model.loss_draws(x, g())
        assert set(draws) == {"quantizer_noise", "t", "noise", "cfg_dropout", "num_tokens"}
        assert torch.equal(model.loss(x, generator=g()).total, model.loss(x, **draws).total)
        plain = flowmo.build(flowmo.flowmo_tiny())  # off: no draw of k, the draws before are unchanged
        assert "num_tokens" not in plain.loss_draws(x, g())
        assert torch.equal(plain.loss_draws(x, g())["noise"], draws["noise"])
    finally:
        model.eval()


def test_the_loss_conditions_on_the_kept_prefix(model):
    """num_tokens=k for every image equals the loss of codes whose tokens after k are changed."""
    x = _images()
    draws = model.loss_draws(x, torch.Generator().manual_seed(3))
    one = {**draws, "num_tokens": torch.tensor([1, 1])}
    full = {**draws, "num_tokens": False}
    assert not torch.equal(model.loss(x, **one).total, model.loss(x, **full).total)
    assert torch.equal(model.loss(x, **full).total, model.loss(x, **{**draws, "num_tokens": torch.tensor([16, 16])}).total)


@pytest.mark.parametrize("call,error,words", [
    (lambda m: m.detokenize(torch.zeros(1, 16, dtype=torch.int64), num_tokens=0), ValueError, r"num_tokens must be in \[1, 16\]"),
    (lambda m: m.detokenize(torch.zeros(1, 16, dtype=torch.int64), num_tokens=1.5), TypeError, "num_tokens must be an int"),
    (lambda m: m.detokenize(torch.zeros(1, 16, dtype=torch.int64), num_tokens=torch.tensor([0])), ValueError,
     r"num_tokens must lie in \[1, 16\]"),
    (lambda m: m.detokenize(torch.zeros(1, 4, dtype=torch.int64), num_tokens=8), ValueError,
     "num_tokens must be at most 4: the input is a prefix of 4"),
    (lambda m: m.loss(_images(), num_tokens=torch.tensor([1, 17])), ValueError, r"num_tokens must lie in \[1, 16\]"),
    (lambda m: flowmo.build(flowmo.flowmo_tiny()).loss(_images(), num_tokens=torch.tensor([1, 2])), ValueError,
     "num_tokens is for a model with spec.nested_dropout"),
    (lambda m: flowmo.build(flowmo.flowmo_tiny()).draw_num_tokens(2), ValueError, "trained with nested dropout"),
])
def test_bad_num_tokens_are_named(model, call, error, words):
    with pytest.raises(error, match=words):
        call(model)


def test_a_nested_model_saves_loads_and_trains(tmp_path):
    from flowmo.train import Trainer, load_config

    from conftest import random_png_folder

    folder = random_png_folder(tmp_path / "png", 4, seed=1)
    config = {"model": {"preset": "tiny", "nested_dropout": {"distribution": "pow2"}},
              "train": {"steps": 2, "seed": 3, "device": "cpu", "data": {"folder": str(folder)},
                        "optim": {"lr": 1e-3, "batch_size": 2}, "ema": {"decay": 0.9, "every": 1},
                        "checkpoint": {"every": 1, "keep_last": 1},
                        "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
                        "eval": {"enabled": False}}}
    trainer = Trainer(load_config(config), tmp_path / "run")
    assert math.isfinite(trainer.fit()["last_terms"]["total"])
    model = trainer.model.eval()
    path = model.save_pretrained(tmp_path / "m")
    loaded = flowmo.FlowMo.from_pretrained(path)
    assert loaded.spec.nested_dropout == model.spec.nested_dropout
    assert "ordered tokens (trained with nested dropout" in (path / "README.md").read_text()
    x, noise = _images(), torch.randn(2, 3, 32, 32)
    tokens = model.tokenize(x)
    assert torch.equal(loaded.detokenize(tokens[:, :2], noise=noise), model.detokenize(tokens[:, :2], noise=noise))


def test_the_cli_writes_and_decodes_prefixes(model, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from flowmo import cli
    from flowmo.cli.io import load_image
    from flowmo.data.tokens import read_tokens
    from flowmo.samplers.noise import image_noise

    folder = model.save_pretrained(tmp_path / "m")
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    imgs = [str(tmp_path / f"{i}.png") for i in range(3)]
    run = lambda *argv: cli.main([str(a) for a in argv])
    assert run("tokenize", "--model", folder, "--input", *imgs, "--output", tmp_path / "t.safetensors", "--num-tokens", 4) == 0
    tf = read_tokens(tmp_path / "t.safetensors")
    x = torch.stack([load_image(p, 32) for p in imgs])
    assert torch.equal(tf.tokens, model.tokenize(x)[:, :4])
    assert run("detokenize", "--model", folder, "--tokens", tmp_path / "t.safetensors", "--output", tmp_path / "d",
               "--steps", 2) == 0
    assert run("reconstruct", "--model", folder, "--input", *imgs, "--output", tmp_path / "r", "--steps", 2,
               "--num-tokens", 4) == 0
    for i in range(3):
        d, r = (np.asarray(Image.open(tmp_path / k / f"{i}.png")) for k in ("d", "r"))
        y = model.detokenize(tf.tokens[i:i + 1], noise=image_noise(0, [i], (3, 32, 32)), sampler={"steps": 2})[0]
        expected = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
        assert np.array_equal(d, expected) and np.array_equal(r, expected)
    capsys.readouterr()
    assert run("detokenize", "--model", folder, "--tokens", tmp_path / "t.safetensors", "--output", tmp_path / "e",
               "--num-tokens", 5) == 2
    assert "--num-tokens (5) must be at most the tokens per image (4)" in capsys.readouterr().err
    assert run("tokenize", "--model", folder, "--input", *imgs, "--output", tmp_path / "u.safetensors", "--tiled",
               "--num-tokens", 4) == 2
    assert "not with --tiled" in capsys.readouterr().err


def test_a_model_without_nested_dropout_refuses_short_tokens_but_takes_num_tokens():
    torch.manual_seed(0)
    plain = flowmo.build(flowmo.flowmo_tiny()).eval()
    tokens = plain.tokenize(_images())
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, 16\), got \(2, 4\): only a model trained "
                                         "with nested dropout"):
        plain.detokenize(tokens[:, :4])  # refused, not a silent prefix
    with pytest.raises(ValueError, match=r"code must have shape \(batch, 16, 18\), got \(2, 4, 18\): only a model"):
        plain.decode(plain.tokens_to_code(tokens)[:, :4])
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, 16\)"):
        plain.tokens_to_code(tokens[:, :4])
    noise = torch.randn(2, 3, 32, 32)
    assert plain.detokenize(tokens, num_tokens=4, noise=noise).shape == (2, 3, 32, 32)  # deliberate: allowed


def test_a_prefix_takes_a_smaller_num_tokens_and_shape_errors_name_the_shape_given(model):
    x, noise = _images(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    tokens = model.tokenize(x)
    kw = {"noise": noise, "sampler": {"steps": 1}}
    two = model.detokenize(tokens, num_tokens=2, **kw)
    assert torch.equal(model.detokenize(tokens[:, :4], num_tokens=2, **kw), two)
    mixed = model.detokenize(tokens[:, :4], num_tokens=torch.tensor([2, 4]), **kw)
    assert torch.equal(mixed[0], two[0]) and torch.equal(mixed[1], model.detokenize(tokens[:, :4], **kw)[1])
    assert torch.equal(model.tokens_to_code(tokens[:, :4]), model.tokens_to_code(tokens)[:, :4])  # a nested model
    with pytest.raises(ValueError, match=r"num_tokens must be at most 4: the input is a prefix of 4 tokens, got 5"):
        model.detokenize(tokens[:, :4], num_tokens=5)
    with pytest.raises(ValueError, match=r"num_tokens must lie in \[1, 4\] \(the input is a prefix of 4 tokens\), got values in \[2, 5\]"):
        model.detokenize(tokens[:, :4], num_tokens=torch.tensor([2, 5]))
    code = model.tokens_to_code(tokens)
    with pytest.raises(ValueError, match=r"got \(2, 4, 5\)"):
        model.decode(code[:, :4, :5])
    with pytest.raises(ValueError, match=r"got \(2, 4, 2\)"):
        model.detokenize(torch.zeros(2, 4, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"got torch.float32 \(2, 4\)"):
        model.detokenize(tokens[:, :4].float())
    with pytest.raises(ValueError, match=r"got \(0, 4\)"):
        model.detokenize(tokens[:0, :4])
    with pytest.raises(ValueError, match=r"got values in \[[1-9]\d+, "):  # the values given (no padding's 0)
        model.detokenize(tokens[:, :4] + 2**18)


def test_conditioning_and_draw_num_tokens_check_their_arguments(model):
    code = model.tokens_to_code(model.tokenize(_images()))
    assert torch.equal(model.conditioning(code, num_tokens=4), model.conditioning(code, num_tokens=torch.tensor([4, 4])))
    assert model.conditioning(code, num_tokens=4)[:, 4:].abs().sum() == 0
    for bad, error, words in (([4, 4], TypeError, r"num_tokens must be an int or a \(2,\) integer tensor"),
                              (torch.tensor([4.5, 4.0]), TypeError, "integer tensor"),
                              (torch.tensor([0, 4]), ValueError, r"num_tokens must lie in \[1, 16\]"),
                              (17, ValueError, r"num_tokens must be in \[1, 16\]")):
        with pytest.raises(error, match=words):
            model.conditioning(code, num_tokens=bad)
    with pytest.raises(ValueError, match=r"code must have shape \(batch, 16, 18\)"):
        model.conditioning(code[:, :4], num_tokens=4)
    with pytest.raises(ValueError, match="num_tokens applies to a code"):
        model.conditioning(None, 2, num_tokens=4)
    with pytest.raises(ValueError, match="batch must be the number of samples"):
        model.conditioning(None)
    for bad in (-1, True, 2.0):
        with pytest.raises(ValueError, match="batch must be the number of images"):
            model.draw_num_tokens(bad)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        model.draw_num_tokens(2, generator=0)
    with pytest.raises(TypeError, match="num_tokens must be True"):
        model.train().loss(_images(), num_tokens=None)
    model.eval()


def test_the_draws_make_no_host_sync_and_uniform_covers_min_to_t():
    from flowmo.testing.syncs import count_host_syncs

    torch.manual_seed(0)
    m = flowmo.build(nested_spec(distribution="uniform", min_tokens=3)).train()
    k = m.draw_num_tokens(5000, generator=torch.Generator().manual_seed(0))
    assert set(k.tolist()) == set(range(3, 17))
    x = _images()
    with count_host_syncs() as syncs:
        draws = m.loss_draws(x, torch.Generator().manual_seed(1))
        m.loss(x, **draws, check_values=False).total.backward()
    assert syncs.count == 0, syncs.report()


def test_full_probability_keeps_all_tokens_that_often_and_zero_changes_no_draw():
    g = lambda: torch.Generator().manual_seed(11)
    half = flowmo.build(nested_spec(full_probability=0.5)).draw_num_tokens(6000, generator=g())
    off = flowmo.build(nested_spec()).draw_num_tokens(6000, generator=g())
    full = half == 16
    # T with probability 0.5 + 0.5 / 5; elsewhere the choice drawn first, as without the option
    assert abs(int(full.sum()) - 3600) < 4 * math.sqrt(6000 * 0.6 * 0.4)
    assert torch.equal(half[~full], off[~full])
    assert torch.equal(flowmo.build(nested_spec(full_probability=1.0)).draw_num_tokens(50, generator=g()),
                       torch.full((50,), 16))
    assert torch.equal(flowmo.build(nested_spec(full_probability=0.0)).draw_num_tokens(50, generator=g()), off[:50])


# ----------------------------------------------------------------------------- generators on prefixes
def _group_layout_model():
    torch.manual_seed(0)
    return flowmo.build(nested_spec().replace(code_channels=4, quantizer={"group_bits": 2})).eval()


def test_a_layout_of_prefixes_checks_against_its_tokenizer():
    from flowmo.data.token_layout import layout_for

    m = _group_layout_model()
    full = layout_for(m, "group")
    four = layout_for(m, "group", 4)
    assert (four.tokens, four.groups, four.seq_len, four.vocab_size) == (4, 2, 8, full.vocab_size)
    assert four == full.prefix(4) and full.prefix(16) == full
    four.check_tokenizer(m)
    full.check_tokenizer(m)
    with pytest.raises(ValueError, match=r"num_tokens must be in \[1, 16\]"):
        layout_for(m, "group", 17)
    with pytest.raises(ValueError, match=r"num_tokens must be in \[1, 4\]"):
        four.prefix(5)
    with pytest.raises(TypeError, match="num_tokens must be an int"):
        four.prefix(2.0)
    longer = flowmo.data.token_layout.TokenLayout("group", 17, 2, full.vocab_size, full.fingerprint)
    with pytest.raises(ValueError, match="but this tokenizer gives"):
        longer.check_tokenizer(m)


@pytest.mark.parametrize("use_cache", [True, False])
def test_an_autoregressive_generator_stops_after_length_tokens_with_the_same_draws(use_cache):
    from flowmo.generators import AutoregressiveGenerator

    torch.manual_seed(0)
    g = AutoregressiveGenerator(vocab_size=16, seq_len=10, num_classes=3, width=32, depth=1, heads=2)
    rng = lambda: torch.Generator().manual_seed(5)
    labels = torch.tensor([0, 2])
    whole = g.generate(labels, cfg_scale=2.0, generator=rng(), use_cache=use_cache)
    for length in (1, 3, 10):
        part = g.generate(labels, cfg_scale=2.0, generator=rng(), use_cache=use_cache, length=length)
        assert torch.equal(part.tokens, whole.tokens[:, :length])
        assert (part.steps, part.forward_passes, part.nfe) == (length, length, 2 * length)
    assert g.generate(labels, generator=rng(), length=3, steps=3).tokens.shape == (2, 3)
    for bad, error, words in ((0, ValueError, r"length must be an int in \[1, 10\]"), (11, ValueError, "length"),
                              (2.0, TypeError, "length must be an int"), (True, TypeError, "length")):
        with pytest.raises(error, match=words):
            g.generate(labels, length=bad)
    with pytest.raises(ValueError, match="steps must be None or length = 3"):
        g.generate(labels, length=3, steps=10)


def test_a_prefix_of_an_unordered_tokenizers_tokens_decodes_in_either_layout():
    """An ordinary model (no nested dropout) decodes a generated prefix too, the rest absent."""
    from flowmo.data.token_layout import layout_for
    from flowmo.generators import sequences_to_code

    torch.manual_seed(0)
    m = flowmo.build(flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2})).eval()
    tokens = m.tokenize(_images())
    for kind in ("token", "group"):
        layout = layout_for(m, kind, 3)
        seq = layout.to_sequence(m.tokenize(_images(), groups=kind == "group")[:, :3])
        assert torch.equal(sequences_to_code(m, layout, seq), m.tokens_to_code(tokens)[:, :3])


def test_generate_images_decodes_the_first_k_tokens_with_the_rest_absent():
    from flowmo.data.token_layout import layout_for
    from flowmo.generators import AutoregressiveGenerator, MaskGiT, generate_images, sequences_to_code
    from flowmo.samplers.noise import image_noise

    m = _group_layout_model()
    layout = layout_for(m, "group")
    meta = {"layout": layout.to_json(), "tokenizer_fingerprint": m.spec.fingerprint()}
    torch.manual_seed(1)
    ar = AutoregressiveGenerator(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=2, width=32,
                                 depth=1, heads=2)
    ar.metadata = meta
    kw = {"seed": 3, "sampler": {"steps": 2}}
    whole = generate_images(ar, m, [0, 1], **kw)
    four = generate_images(ar, m, [0, 1], num_tokens=4, **kw)
    assert torch.equal(four.tokens, whole.tokens[:, :8]) and four.nfe == 8
    code = sequences_to_code(m, layout.prefix(4), four.tokens)
    assert code.shape == (2, 4, 4)
    expected = m.decode(torch.cat((code, torch.zeros(2, 12, 4)), 1), num_tokens=4,
                        noise=image_noise(3, [0, 1], (3, 32, 32)), sampler={"steps": 2}).images.clamp(-1, 1)
    assert torch.equal(four.images, expected) and not torch.equal(four.images, whole.images)
    assert torch.equal(generate_images(ar, m, [0, 1], num_tokens=16, **kw).images, whole.images)
    mg = MaskGiT(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=2, width=32, depth=1, heads=2)
    mg.metadata = meta
    with pytest.raises(ValueError, match="samples all at once: it cannot stop early"):
        generate_images(mg, m, [0], num_tokens=4)
    with pytest.raises(ValueError, match=r"num_tokens must be in \[1, 16\]"):
        generate_images(ar, m, [0], num_tokens=17)
    with pytest.raises(ValueError, match="steps must be None or 8 with num_tokens=4: an autoregressive generator makes "
                                         "one step per sequence element \\(2 per token\\)"):
        generate_images(ar, m, [0], num_tokens=4, steps=4)
    assert generate_images(ar, m, [0, 1], num_tokens=4, steps=8, **kw).nfe == 8


def test_a_token_set_of_prefixes_trains_a_generator_that_generates_and_decodes_them(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image

    from flowmo import cli
    from flowmo.cli.io import load_image
    from flowmo.data.token_set_reader import read_token_set
    from flowmo.generators import generate_images, load_generator

    m = _group_layout_model()
    folder = m.save_pretrained(tmp_path / "m")
    tree = tmp_path / "tree"
    for c in ("a", "b"):
        (tree / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.random.default_rng(i + 7 * (c == "b")).integers(0, 256, (32, 32, 3), dtype=np.uint8)
                            ).save(tree / c / f"{i}.png")
    run = lambda *argv: cli.main([str(a) for a in argv])
    assert run("tokenize", "--model", folder, "--classes", "--input", tree, "--output", tmp_path / "set",
               "--layout", "group", "--num-tokens", 4, "-q") == 0
    ts = read_token_set(tmp_path / "set")
    x = torch.stack([load_image(tree / c / f"{i}.png", 32) for c in ("a", "b") for i in range(2)])
    assert ts.layout.tokens == 4 and torch.equal(ts.sequences, m.tokenize(x, groups=True)[:, :4].reshape(4, 8))
    cfg = {"generator": {"name": "autoregressive", "width": 32, "depth": 1, "heads": 2},
           "train": {"tokens": str(tmp_path / "set"), "steps": 2, "device": "cpu", "optim": {"batch_size": 2},
                     "log": {"tensorboard": False, "progress": False}}}
    (tmp_path / "g.json").write_text(json.dumps(cfg))
    assert run("train-generator", "--config", tmp_path / "g.json", "--out", tmp_path / "run", "--export",
               tmp_path / "gen", "-q") == 0
    gen = load_generator(tmp_path / "gen")
    assert gen.seq_len == 8
    assert run("generate", "--generator", tmp_path / "gen", "--tokenizer", folder, "--classes", "a", "b",
               "--per-class", 1, "--decoder-steps", 2, "--out", tmp_path / "g1", "-q") == 0
    expected = generate_images(gen, m, [0, 1], sampler={"steps": 2}).images
    for i, name in enumerate(("0_a_000.png", "1_b_000.png")):
        png = np.asarray(Image.open(tmp_path / "g1" / name))
        assert np.array_equal(png, ((expected[i] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy())
    assert run("generate", "--generator", tmp_path / "gen", "--tokenizer", folder, "--classes", "a", "--per-class", 1,
               "--decoder-steps", 2, "--num-tokens", 2, "--out", tmp_path / "g2", "-q") == 0
    settings = json.loads((tmp_path / "g2" / "generate.json").read_text())["settings"]
    assert (settings["num_tokens"], settings["tokens_per_image"], settings["tokenizer_tokens"]) == (2, 2, 16)
    settings = json.loads((tmp_path / "g1" / "generate.json").read_text())["settings"]
    assert (settings["num_tokens"], settings["tokens_per_image"]) == (None, 4)  # a generator of prefixes
    capsys.readouterr()
    assert run("generate", "--generator", tmp_path / "gen", "--tokenizer", folder, "--classes", "a", "--per-class", 1,
               "--num-tokens", 5, "--out", tmp_path / "g3", "-q") == 2
    assert "--num-tokens (5) must be at most the 4 tokens per image the generator models" in capsys.readouterr().err


# ----------------------------------------------------------------------------- an ordered (causal) encoder
def test_a_causal_mmdit_makes_no_latent_token_depend_on_a_later_one():
    from flowmo.blocks import MMDiT, latent_causal_mask

    spec = flowmo.flowmo_tiny().encoder
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(2, 16, 48, generator=g), torch.randn(2, 6, 18, generator=g)
    for attention in ("causal", "full"):
        torch.manual_seed(0)
        net = MMDiT(spec.model_copy(update={"latent_attention": attention}), patch_dim=48, txt_in_dim=18,
                    txt_out_dim=18, time_conditioning=False, outputs=("img", "txt")).eval()
        with torch.no_grad():
            base_img, base_txt = net(img, txt, None, (4, 4))
            for j in range(6):
                other = txt.clone()
                other[:, j] = torch.randn(2, 18, generator=g)
                out_img, out_txt = net(img, other, None, (4, 4))
                same = torch.equal(out_txt[:, :j], base_txt[:, :j]) and torch.equal(out_img, base_img)
                assert same == (attention == "causal") or j == 0, (attention, j)
                assert not torch.equal(out_txt[:, j], base_txt[:, j])
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="latent must be a number of tokens"):
            latent_causal_mask(bad, 4)
    mask = latent_causal_mask(3, 2)
    assert mask.tolist() == [[1, 0, 0, 1, 1], [1, 1, 0, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 0, 0, 1, 1]]


def test_the_causal_encoder_is_in_the_fingerprint_and_refused_in_the_decoder():
    spec = flowmo.flowmo_tiny()
    causal = spec.replace(encoder={"latent_attention": "causal"})
    assert causal.fingerprint() != spec.fingerprint()
    assert "latent_attention" not in spec.architecture()["encoder"]  # the default: the fingerprints before it stand
    assert flowmo.FlowMoSpec.model_validate_json(causal.to_json()) == causal
    with pytest.raises(ValueError, match="decoder.latent_attention must be 'full'"):
        spec.replace(decoder={"latent_attention": "causal"})
    with pytest.raises(ValueError, match="latent_attention"):
        spec.replace(encoder={"latent_attention": "left"})


def test_a_causal_encoder_compiles_without_a_graph_break_and_checks_its_mask():
    from flowmo.blocks import DoubleStreamBlock

    torch.manual_seed(0)
    m = flowmo.build(flowmo.flowmo_tiny().replace(encoder={"latent_attention": "causal"})).eval()
    x = _images()
    with torch.no_grad():
        compiled = torch.compile(m._encode, fullgraph=True, backend="aot_eager")(x)  # past the input checks
        torch.testing.assert_close(compiled, m.encode(x), atol=1e-5, rtol=0)
    block = DoubleStreamBlock(32, 2, modulation=False)
    img, txt = torch.randn(1, 4, 32), torch.randn(1, 2, 32)
    freqs = flowmo.blocks.rope_freqs(torch.zeros(6, 8))  # head dim 16
    with pytest.raises(ValueError, match=r"mask must be None or a bool \(6, 6\) tensor"):
        block(img, txt, None, freqs, torch.ones(5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="of torch.float32"):
        block(img, txt, None, freqs, torch.ones(6, 6))


# ----------------------------------------------------------------------------- evaluation at a rate
def test_evaluate_model_and_flowmo_eval_decode_the_first_k_tokens(model, tmp_path, capsys):
    import csv
    import json

    import numpy as np
    from PIL import Image

    from flowmo import cli
    from flowmo.cli.io import load_image
    from flowmo.metrics.pixel import psnr
    from flowmo.metrics.run import evaluate_model
    from flowmo.samplers.noise import image_noise

    kw = dict(lpips=(), fid=False, progress=False, sampler={"steps": 2}, seed=3)
    x = _images(3)
    four = evaluate_model(model, x, num_tokens=4, **kw)
    y = model.detokenize(model.tokenize(x), num_tokens=4, noise=image_noise(3, [0, 1, 2], (3, 32, 32)),
                         sampler={"steps": 2}).clamp(-1, 1)
    assert four["psnr"] == pytest.approx(psnr(x, y).mean().item(), abs=1e-6)
    full = evaluate_model(model, x, **kw)
    assert four["bits_per_pixel"] == pytest.approx(full["bits_per_pixel"] / 4)
    assert evaluate_model(model, x, num_tokens=16, **kw)["psnr"] == full["psnr"]
    for bad, error in ((0, ValueError), (17, ValueError), (2.0, TypeError), (True, TypeError)):
        with pytest.raises(error, match=r"num_tokens must be an int in \[1, 16\]"):
            evaluate_model(model, x, num_tokens=bad, **kw)
    with pytest.raises(ValueError, match="num_tokens needs a FlowMo model and tiled=False"):
        evaluate_model(lambda im: im, x, num_tokens=2, **kw)
    kl = flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": "kl"})).eval()
    assert evaluate_model(kl, x, num_tokens=2, **kw)["bits_per_pixel"] is None  # a continuous code's prefix
    from flowmo.metrics.evaluator import Evaluator

    ev = Evaluator(lpips=(), fid=False)  # reused: each call reports its own rate
    kw.pop("lpips"), kw.pop("fid")
    assert evaluate_model(model, x, evaluator=ev, **kw)["bits_per_pixel"] == full["bits_per_pixel"]
    ev.reset()
    assert evaluate_model(model, x, evaluator=ev, num_tokens=4, **kw)["bits_per_pixel"] == four["bits_per_pixel"]

    folder = model.save_pretrained(tmp_path / "m")
    (tmp_path / "in").mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "in" / f"{i}.png")
    run = lambda *argv: cli.main([str(a) for a in argv])
    base = ["eval", "--model", folder, "--data", tmp_path / "in", "--lpips", "none", "--no-fid", "--steps", 2,
            "--seed", 3, "--quiet"]
    assert run(*base, "--num-tokens", 2, "--output", tmp_path / "ev") == 0
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["protocol"]["num_tokens"] == 2
    assert record["metrics"]["bits_per_pixel"] == pytest.approx(model.spec.bits_per_pixel * 2 / 16)
    for row in csv.DictReader(open(tmp_path / "ev" / "per_image.csv")):
        i = int(row["id"])
        img = load_image(tmp_path / "in" / row["image"], 32)[None]
        rec = model.detokenize(model.tokenize(img), num_tokens=2, noise=image_noise(3, [i], (3, 32, 32)),
                               sampler={"steps": 2}).clamp(-1, 1)
        assert float(row["psnr"]) == pytest.approx(psnr(img, rec).item(), abs=1e-5)
    capsys.readouterr()
    assert run(*base, "--num-tokens", 17, "--output", tmp_path / "ev2") == 2
    assert "--num-tokens (17) must be at most the tokens per image (16)" in capsys.readouterr().err
    assert run(*base, "--num-tokens", 2, "--tiled", "--output", tmp_path / "ev3") == 2
    assert "not with --tiled" in capsys.readouterr().err


def test_the_cli_decodes_an_unordered_models_prefix_file_with_a_note(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from flowmo import cli
    from flowmo.samplers.noise import image_noise

    torch.manual_seed(0)
    plain = flowmo.build(flowmo.flowmo_tiny()).eval()
    folder = plain.save_pretrained(tmp_path / "m")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "0.png")
    run = lambda *argv: cli.main([str(a) for a in argv])
    capsys.readouterr()
    assert run("tokenize", "--model", folder, "--input", tmp_path / "0.png", "--output", tmp_path / "t.safetensors",
               "--num-tokens", 4) == 0
    assert "trained without nested dropout" in capsys.readouterr().err
    assert run("detokenize", "--model", folder, "--tokens", tmp_path / "t.safetensors", "--output", tmp_path / "d",
               "--steps", 1) == 0
    assert "4 of its 16 tokens decode poorly" in capsys.readouterr().err
    from flowmo.cli.io import load_image

    x = load_image(tmp_path / "0.png", 32)[None]
    y = plain.detokenize(plain.tokenize(x), num_tokens=4, noise=image_noise(0, [0], (3, 32, 32)), sampler={"steps": 1})
    png = np.asarray(Image.open(tmp_path / "d" / "0.png"))
    assert np.array_equal(png, ((y[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy())
