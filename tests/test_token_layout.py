"""Token layouts: LFQ per-token, LFQ entropy-group and FSQ sequences round-trip to the tokenizer's
own indices and codes; a layout refuses tokens from another tokenizer, naming the reason."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import flowmo
from flowmo.data.token_layout import MAX_VOCAB, TokenLayout, layout_for


def _lfq(code_channels=8, group_bits=4):
    spec = flowmo.flowmo_tiny().replace(code_channels=code_channels, quantizer={"name": "lfq", "group_bits": group_bits})
    return flowmo.build(spec).eval()


def _fsq():
    spec = flowmo.flowmo_tiny().replace(code_channels=3, quantizer={"name": "fsq", "levels": [5, 4, 3]})
    return flowmo.build(spec).eval()


IMAGES = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1


def _images(model):
    s = model.spec.image_size
    return torch.nn.functional.interpolate(IMAGES, size=(s, s), mode="bilinear", align_corners=False)


def test_lfq_token_layout_round_trips_to_the_tokenizer_indices():
    model = _lfq()
    layout = layout_for(model, "token")
    assert (layout.kind, layout.groups, layout.vocab_size) == ("token", 1, 2**8)
    idx = model.tokenize(_images(model))
    seq = layout.to_sequence(idx)
    assert seq.shape == (3, model.spec.code_length) and seq.dtype == torch.int64
    assert torch.equal(layout.from_sequence(seq), idx)


def test_lfq_group_layout_is_token_major_and_decodes_to_the_same_code():
    model = _lfq(code_channels=8, group_bits=4)
    layout = layout_for(model, "group")
    assert (layout.groups, layout.vocab_size, layout.seq_len) == (2, 16, 2 * model.spec.code_length)
    images = _images(model)
    groups = model.tokenize(images, groups=True)
    seq = layout.to_sequence(groups)
    # token-major: element 2t + g is token t's group g
    for t in range(model.spec.code_length):
        for g in range(2):
            assert torch.equal(seq[:, 2 * t + g], groups[:, t, g])
    back = layout.from_sequence(seq)
    assert torch.equal(back, groups)
    # the group sequence and the per-token indices give the same code (an independent path)
    per_token = model.tokens_to_code(model.tokenize(images))
    assert torch.equal(model.quantizer.group_indices_to_codes(back).to(per_token.dtype), per_token)


def test_fsq_layout_round_trips_and_has_the_product_of_levels_as_vocabulary():
    model = _fsq()
    layout = layout_for(model)
    assert (layout.kind, layout.vocab_size) == ("token", 5 * 4 * 3)
    idx = model.tokenize(_images(model))
    assert torch.equal(layout.from_sequence(layout.to_sequence(idx)), idx)
    with pytest.raises(ValueError, match="entropy groups"):
        layout_for(model, "group")


def test_auto_picks_groups_when_the_codebook_is_too_large():
    model = flowmo.build(flowmo.flowmo_tiny())  # 18-bit tokens, 9-bit groups
    if model.quantizer.codebook_size <= MAX_VOCAB:
        assert layout_for(model).kind == "token"
    big = _lfq(code_channels=24, group_bits=8)
    assert layout_for(big).kind == "group" and layout_for(big).vocab_size == 256
    with pytest.raises(ValueError, match="'token' layout needs a codebook of at most"):
        layout_for(big, "token")
    with pytest.raises(ValueError, match="layout kind"):
        layout_for(big, "tokens")


def test_a_mismatched_tokenizer_is_refused_with_the_reason():
    a, b = _lfq(), _lfq(group_bits=2)
    layout = layout_for(a, "group")
    layout.check_tokenizer(a)
    layout.check_tokenizer(a.spec)
    with pytest.raises(ValueError, match="fingerprint"):
        layout.check_tokenizer(b)
    # same fingerprint, other layout
    other = TokenLayout("group", layout.tokens, 4, 4, layout.fingerprint)
    with pytest.raises(ValueError, match="this tokenizer gives"):
        other.check_tokenizer(a)


@given(kind=st.sampled_from(["token", "group"]), tokens=st.integers(1, 8), groups=st.integers(1, 4),
       vocab=st.integers(1, 300), n=st.integers(0, 3), seed=st.integers(0, 2**31 - 1))
def test_sequences_round_trip_and_json_round_trips(kind, tokens, groups, vocab, n, seed):
    groups = 1 if kind == "token" else groups
    layout = TokenLayout(kind, tokens, groups, vocab, "abc123")
    assert TokenLayout.from_json(layout.to_json()) == layout
    shape = (n, tokens) if kind == "token" else (n, tokens, groups)
    idx = torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))
    seq = layout.to_sequence(idx)
    assert seq.shape == (n, tokens * groups)
    assert torch.equal(layout.from_sequence(seq), idx)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 4), "integer tensor"),
    (torch.zeros(2, 5, dtype=torch.int64), r"shape \(N, 4\)"),
    (torch.full((2, 4), 7, dtype=torch.int64), r"in \[0, 7\)"),
    (torch.full((2, 4), -1, dtype=torch.int64), r"in \[0, 7\)"),
    ([[0, 1, 2, 3]], "torch.Tensor"),
])
def test_bad_indices_are_refused_naming_the_argument(bad, match):
    layout = TokenLayout("token", 4, 1, 7, "f")
    with pytest.raises((TypeError, ValueError), match=match) as e:
        layout.to_sequence(bad, name="tokens")
    assert "tokens" in str(e.value)


@pytest.mark.parametrize("kwargs, match", [
    (dict(kind="pairs"), "kind"), (dict(tokens=0), "tokens"), (dict(groups=2), "1 group"),
    (dict(vocab_size=MAX_VOCAB + 1), "MAX_VOCAB"), (dict(fingerprint=""), "fingerprint"), (dict(tokens=True), "tokens"),
])
def test_bad_layouts_are_refused(kwargs, match):
    base = dict(kind="token", tokens=4, groups=1, vocab_size=8, fingerprint="f")
    with pytest.raises(ValueError, match=match):
        TokenLayout(**{**base, **kwargs})


@pytest.mark.parametrize("text", ["", "[]", '{"kind": "token"}', "nonsense"])
def test_bad_layout_json_is_refused(text):
    with pytest.raises(ValueError, match="token layout"):
        TokenLayout.from_json(text)
