"""Images from a generator folder and a tokenizer folder: load_generator, generate_images (shapes,
ranges, seeds, the token -> code -> image path in both layouts), and refusing a mismatched
tokenizer with the reason."""

from __future__ import annotations

import math

import pytest
import torch

import flowmo
from flowmo.samplers.noise import image_noise
from flowmo.data.token_layout import TokenLayout, layout_for
from flowmo.generators import (AutoregressiveGenerator, GeneratedImages, MaskGiT, generate_images, load_generator,
                               resolve_classes)

SMALL = {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0}
CLASSES = ["cat", "dog", "frog"]
FAST = {"steps": 2}


def tiny_tokenizer(**changes):
    spec = flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2}, **changes)
    torch.manual_seed(0)
    return flowmo.build(spec).eval()


def generator_folder(path, tokenizer, kind="token", cls=MaskGiT, classes=CLASSES, **meta):
    layout = layout_for(tokenizer, kind)
    torch.manual_seed(1)
    g = cls(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=len(classes), **SMALL)
    metadata = {"layout": layout.to_json(), "tokenizer_fingerprint": tokenizer.spec.fingerprint(),
                "classes": list(classes), "tokenizer_spec": tokenizer.spec.model_dump(mode="json")}
    metadata.update(meta)
    g.save_pretrained(path, metadata=metadata)
    return path


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.mark.parametrize("kind", ["token", "group"])
def test_images_are_the_decoded_sequences(tmp_path, tok, kind):
    g = load_generator(generator_folder(tmp_path / "g", tok, kind))
    assert g.metadata["classes"] == CLASSES
    out = generate_images(g, tok, [0, 2, 1, 2, 0], steps=4, seed=7, batch_size=2, sampler=FAST)
    assert isinstance(out, GeneratedImages)
    layout = layout_for(tok, kind)
    assert out.images.shape == (5, 3, 32, 32) and out.images.dtype == torch.float32
    assert float(out.images.min()) >= -1 and float(out.images.max()) <= 1
    assert out.tokens.shape == (5, layout.seq_len) and out.tokens.dtype == torch.int64
    assert int(out.tokens.min()) >= 0 and int(out.tokens.max()) < layout.vocab_size
    assert out.labels.tolist() == [0, 2, 1, 2, 0]
    assert (out.steps, out.forward_passes, out.nfe) == (4, 3 * 4, 4)  # 3 batches of 4 unguided passes
    # independently: the sequences as tokenizer indices -> codes -> decoded from image_noise(seed, i)
    n, t = 5, tok.spec.code_length
    if kind == "token":
        code = tok.quantizer.indices_to_codes(out.tokens.reshape(n, t))
    else:
        code = tok.quantizer.group_indices_to_codes(out.tokens.reshape(n, t, layout.groups))
    noise = image_noise(7, range(n), (3, 32, 32))
    with torch.no_grad():  # in the same batches of 2 (the kernels' rounding depends on the batch size)
        parts = [tok.decode(code[a:a + 2].float(), noise=noise[a:a + 2], sampler=FAST) for a in (0, 2, 4)]
    assert torch.equal(out.images, torch.cat([p.images for p in parts]).clamp(-1, 1))
    assert out.decoder_calls == parts[0].decoder_calls >= 2


def test_the_same_seed_gives_the_same_images(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok))
    a = generate_images(g, tok, [1, 1, 0], seed=3, sampler=FAST)
    b = generate_images(g, tok, [1, 1, 0], seed=3, sampler=FAST)
    c = generate_images(g, tok, [1, 1, 0], seed=4, sampler=FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.images, c.images)
    # an explicit rng draws the tokens; the seed still draws the decoding noise
    d = generate_images(g, tok, [1, 1, 0], seed=3, rng=torch.Generator().manual_seed(3), sampler=FAST)
    assert torch.equal(a.images, d.images)


def test_guidance_and_unconditional_generation(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok, cls=AutoregressiveGenerator))
    guided = generate_images(g, tok, [0, 1], cfg_scale=3.0, top_k=4, temperature=0.5, sampler=FAST)
    assert guided.nfe == 2 * g.seq_len and guided.forward_passes == g.seq_len
    free = generate_images(g, tok, None, num_images=3, sampler=FAST)
    assert free.images.shape[0] == 3 and free.labels.tolist() == [g.null_class] * 3
    with pytest.raises(ValueError, match="num_images is required"):
        generate_images(g, tok, None)
    with pytest.raises(ValueError, match="cfg_scale must be 1 without labels"):
        generate_images(g, tok, None, num_images=2, cfg_scale=2.0)
    with pytest.raises(ValueError, match=r"labels must hold class labels in \[0, 3\)"):
        generate_images(g, tok, [0, 3])
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, "):
        generate_images(g, tok, [0], seed=-1)
    with pytest.raises(TypeError, match="labels must be a sequence of ints"):
        generate_images(g, tok, ["cat"])


def test_a_mismatched_tokenizer_is_refused_naming_the_fingerprint(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok))
    other = tiny_tokenizer(code_length=8)
    fp, other_fp = tok.spec.fingerprint(), other.spec.fingerprint()
    assert fp != other_fp
    with pytest.raises(ValueError, match=rf"fingerprint {fp}, not by this one \({other_fp}\)"):
        generate_images(g, other, [0], sampler=FAST)
    # a tokenizer with the same spec but another quantizer layout is refused too (the folder's layout is 'group')
    g2 = load_generator(generator_folder(tmp_path / "g2", tok, "group"))
    g2.metadata["layout"] = TokenLayout("group", 16, 2, 4, other_fp).to_json()
    g2.metadata["tokenizer_fingerprint"] = other_fp
    with pytest.raises(ValueError, match="fingerprint"):
        generate_images(g2, tok, [0], sampler=FAST)


def test_a_tokenizer_of_the_same_spec_with_other_weights_is_refused(tmp_path, tok):
    from flowmo.state_dicts import weights_digest

    retrained = flowmo.build(tok.spec).eval()  # the same spec, other (fresh) weights
    torch.nn.init.normal_(next(retrained.parameters()))
    assert retrained.spec.fingerprint() == tok.spec.fingerprint() and weights_digest(retrained) != weights_digest(tok)
    g = load_generator(generator_folder(tmp_path / "g", tok, tokenizer_weights=weights_digest(tok)))
    assert generate_images(g, tok, [0], sampler=FAST).images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="same architecture, other weights"):
        generate_images(g, retrained, [0], sampler=FAST)
    # one changed value is other weights
    nudged = flowmo.build(tok.spec).eval()
    nudged.load_state_dict(tok.state_dict())
    with torch.no_grad():
        p = next(nudged.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(1e9))
    with pytest.raises(ValueError, match="same architecture, other weights"):
        generate_images(g, nudged, [0], sampler=FAST)
    # the token digest (what flowmo tokenize records now): a decoder post-trained with the encoder
    # frozen (a few-step decoder) makes the same tokens and is accepted; another encoder is not
    from flowmo.state_dicts import token_weights_digest

    g2 = load_generator(generator_folder(tmp_path / "g2", tok, tokenizer_weights=token_weights_digest(tok)))
    student = flowmo.build(tok.spec).eval()
    student.load_state_dict(tok.state_dict())
    with torch.no_grad():
        next(student.decoder.parameters()).add_(0.25)
    assert generate_images(g2, student, [0], sampler=FAST).images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="same architecture, other weights"):
        generate_images(g2, nudged, [0], sampler=FAST)
    # a folder without the digest (written before it existed) checks the spec only
    old = load_generator(generator_folder(tmp_path / "old", tok))
    assert generate_images(old, retrained, [0], sampler=FAST).images.shape == (1, 3, 32, 32)
    # a malformed record is refused as damage
    old.metadata["tokenizer_weights"] = "xyz"
    with pytest.raises(ValueError, match="tokenizer_weights.*the folder is damaged"):
        generate_images(old, tok, [0], sampler=FAST)


def test_inconsistent_or_missing_records_are_refused(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok, tokenizer_fingerprint="0123456789abcdef"))
    with pytest.raises(ValueError, match="names the tokenizer fingerprint 0123456789abcdef but its layout"):
        generate_images(g, tok, [0], sampler=FAST)
    g.metadata = {}
    with pytest.raises(ValueError, match="records no token layout"):
        generate_images(g, tok, [0], sampler=FAST)
    # an explicit layout serves a generator without records; one that does not fit it is refused
    out = generate_images(g, tok, [0], layout=layout_for(tok), sampler=FAST)
    assert out.images.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match=r"sequences of 32 tokens in \[0, 4\).*models 16 tokens in \[0, 16\)"):
        generate_images(g, tok, [0], layout=layout_for(tok, "group"), sampler=FAST)
    g.metadata = {"layout": {"kind": "token"}}
    with pytest.raises(ValueError, match="recorded token layout is malformed"):
        generate_images(g, tok, [0], sampler=FAST)


def test_resolve_classes(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok))
    assert resolve_classes(["frog", "0", 1], g) == [2, 0, 1]
    with pytest.raises(ValueError, match="unknown class 'horse'.*cat, dog, frog"):
        resolve_classes(["horse"], g)
    with pytest.raises(ValueError, match=r"class index 3 is out of range.*\[0, 3\)"):
        resolve_classes(["3"], g)
    with pytest.raises(ValueError, match="given twice"):
        resolve_classes(["cat", "0"], g)
    with pytest.raises(ValueError, match="non-empty list"):
        resolve_classes([], g)
    assert resolve_classes(["all"], g) == [0, 1, 2]


def test_a_seed_beyond_the_generator_range_is_refused_naming_it(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok))
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 9223372036854775807\]"):
        generate_images(g, tok, [0], steps=1, seed=2**64)


def test_loaded_generators_keep_their_records_when_saved_again(tmp_path, tok):
    g = load_generator(generator_folder(tmp_path / "g", tok))
    g.save_pretrained(tmp_path / "again")
    again = load_generator(tmp_path / "again")
    assert again.metadata == g.metadata and again.metadata["classes"] == CLASSES
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), again.state_dict().values()))
    assert math.isfinite(float(generate_images(again, tok, [2], sampler=FAST).images.sum()))
