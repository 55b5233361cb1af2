"""LFQ and FSQ specifics (the generic properties live in test_conformance.py)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.quantizers import FSQ, LFQ, lfq_entropy_terms
from flowmo.spec import FSQSpec, LFQSpec

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None)

# (channels, group_bits) combinations valid for LFQ
LFQ_SHAPES = [(18, 9), (56, 14), (62, 2), (62, 1), (6, 3), (6, 2), (4, 4), (12, 3), (1, 1)]


def _lfq(channels, group_bits, **kw):
    return LFQ(LFQSpec(group_bits=group_bits, **kw), channels=channels)


@st.composite
def lfq_inputs(draw, shapes=LFQ_SHAPES, max_tokens=3):
    channels, group_bits = draw(st.sampled_from(shapes))
    b, t = draw(st.integers(1, 2)), draw(st.integers(1, max_tokens))
    seed = draw(st.integers(0, 2**32 - 1))
    z = torch.randn(b, t, channels, generator=torch.Generator().manual_seed(seed))
    # exact zeros (which map to -1) at some positions
    z = torch.where(torch.rand(b, t, channels, generator=torch.Generator().manual_seed(seed + 1)) < 0.2, 0.0, z)
    return channels, group_bits, z


# ----------------------------------------------------------------------------- LFQ layout
def _expected_group_indices(z_token, channels, group_bits):
    """Per the release: bit j of group h is channel j * (C / G) + h, bit 0 least significant."""
    groups = channels // group_bits
    out = []
    for h in range(groups):
        idx = 0
        for j in range(group_bits):
            if z_token[j * groups + h] > 0:
                idx += 2**j
        out.append(idx)
    return out


def _expected_token_index(z_token):
    return sum(2**j for j, x in enumerate(z_token) if x > 0)


@FAST
@given(lfq_inputs())
def test_lfq_group_layout_is_strided(ex):
    channels, group_bits, z = ex
    q = _lfq(channels, group_bits)
    got = q.codes_to_group_indices(z)
    assert got.dtype == torch.int64 and got.shape == z.shape[:-1] + (channels // group_bits,)
    for bi, ti in itertools.product(range(z.shape[0]), range(z.shape[1])):
        assert got[bi, ti].tolist() == _expected_group_indices(z[bi, ti].tolist(), channels, group_bits)


def test_lfq_group_layout_worked_example():
    # 6 channels, 2 groups of 3 bits: group 0 = channels (0, 2, 4), group 1 = channels (1, 3, 5)
    q = _lfq(6, 3)
    z = torch.tensor([[[1.0, -1.0, -1.0, 1.0, 1.0, 1.0]]])
    # group 0: bits (c0, c2, c4) = (1, 0, 1) -> 1 + 4 = 5; group 1: (c1, c3, c5) = (0, 1, 1) -> 2 + 4 = 6
    assert q.codes_to_group_indices(z).tolist() == [[[5, 6]]]
    assert q.to_groups(torch.arange(6.0)).tolist() == [[0.0, 2.0, 4.0], [1.0, 3.0, 5.0]]
    assert torch.equal(q.from_groups(q.to_groups(torch.arange(6.0))), torch.arange(6.0))


@FAST
@given(lfq_inputs())
def test_lfq_token_index_bit_order(ex):
    channels, group_bits, z = ex
    q = _lfq(channels, group_bits).eval()
    out = q(z)
    for bi, ti in itertools.product(range(z.shape[0]), range(z.shape[1])):
        assert int(out.indices[bi, ti]) == _expected_token_index(z[bi, ti].tolist())
    assert torch.equal(q.codes_to_indices(z), out.indices)


def test_lfq_index_worked_example_and_zero_maps_to_minus_one():
    q = _lfq(4, 2).eval()
    z = torch.tensor([[[0.5, 0.0, -0.0, 3.0], [0.0, 0.0, 0.0, 0.0], [1e-30, -1e-30, 1.0, 1.0]]])
    out = q(z)
    assert out.indices.tolist() == [[1 + 8, 0, 1 + 4 + 8]]
    assert out.values.tolist() == [[[1.0, -1.0, -1.0, 1.0], [-1.0] * 4, [1.0, -1.0, 1.0, 1.0]]]
    assert q.indices_to_codes(torch.tensor([9])).tolist() == [[1.0, -1.0, -1.0, 1.0]]


@FAST
@given(st.sampled_from(LFQ_SHAPES), st.data())
def test_lfq_group_indices_codes_roundtrip(shape, data):
    channels, group_bits = shape
    q = _lfq(channels, group_bits)
    n = data.draw(st.integers(1, 4))
    flat = data.draw(st.lists(st.integers(0, 2**group_bits - 1), min_size=n * q.groups, max_size=n * q.groups))
    gi = torch.tensor(flat, dtype=torch.int64).reshape(n, q.groups)
    codes = q.group_indices_to_codes(gi)
    assert codes.shape == (n, channels) and set(codes.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(q.codes_to_group_indices(codes), gi)
    # and the other way round, from arbitrary codes
    z = torch.randn(n, channels, generator=torch.Generator().manual_seed(n))
    assert torch.equal(q.group_indices_to_codes(q.codes_to_group_indices(z)), torch.where(z > 0, 1.0, -1.0))


@FAST
@given(st.sampled_from([(18, 9), (56, 14), (62, 2), (6, 3)]), st.data())
def test_lfq_token_indices_codes_roundtrip_full_range(shape, data):
    channels, group_bits = shape
    q = _lfq(channels, group_bits)
    flat = data.draw(st.lists(st.integers(0, 2**channels - 1), min_size=1, max_size=6))
    idx = torch.tensor(flat, dtype=torch.int64)
    assert torch.equal(q.codes_to_indices(q.indices_to_codes(idx)), idx)
    top = torch.tensor([2**channels - 1])
    assert q.indices_to_codes(top).eq(1).all()


# ----------------------------------------------------------------------------- LFQ losses
@FAST
@given(lfq_inputs(shapes=[(18, 9), (56, 14), (62, 2), (6, 3), (4, 1)], max_tokens=4),
       st.sampled_from([0.01, 0.3, 1.0, 5.0]))
def test_lfq_entropy_terms_within_bounds(ex, scale):
    channels, group_bits, z = ex
    q = _lfq(channels, group_bits).train()
    out = q(z * scale)
    bound = group_bits * math.log(2)
    per_sample, codebook = out.stats["per_sample_entropy"], out.stats["codebook_entropy"]
    assert 0.0 <= float(per_sample) <= bound + 1e-4
    # -sum pbar log(pbar + 1e-5) >= -log(1 + 1e-5) ~ -1e-5, and <= the entropy of pbar <= G ln 2
    assert -1e-5 <= float(codebook) <= bound + 1e-4


@pytest.mark.parametrize("channels,group_bits", [(18, 9), (56, 14), (62, 2)])
def test_lfq_per_sample_entropy_vanishes_for_large_inputs(channels, group_bits):
    q = _lfq(channels, group_bits).train()
    z = torch.randn(2, 8, channels, generator=torch.Generator().manual_seed(0))
    z = torch.sign(z) * (z.abs() + 1.0) * 10  # every |x| >= 10: logits gaps >= 400
    out = q(z)
    assert float(out.stats["per_sample_entropy"]) < 1e-6


def test_lfq_uniform_softmax_has_maximal_entropy():
    # x = 0: every codeword equally likely -> both entropies are G ln 2 (codebook: up to the 1e-5 eps)
    q = _lfq(6, 3).train()
    out = q(torch.zeros(1, 4, 6))
    assert float(out.stats["per_sample_entropy"]) == pytest.approx(3 * math.log(2), abs=1e-6)
    assert float(out.stats["codebook_entropy"]) == pytest.approx(3 * math.log(2), abs=1e-3)
    assert float(out.stats["codebook_entropy"]) <= 3 * math.log(2)


def test_lfq_losses_are_the_same_in_train_and_eval_mode():
    """A loaded model is in eval mode: a fine-tuning loop that forgets .train() must still get the
    entropy and commitment terms (and their gradients)."""
    q = _lfq(18, 9)
    z = torch.randn(2, 3, 18)
    out = {}
    for mode in (True, False):
        zz = z.clone().requires_grad_(True)
        o = q.train(mode)(zz)
        o.loss.backward()
        out[mode] = o, zz.grad
    (tr, g_tr), (ev, g_ev) = out[True], out[False]
    assert set(tr.losses) == set(ev.losses) == {"entropy", "commitment"}
    assert set(tr.stats) == set(ev.stats) == {"per_sample_entropy", "codebook_entropy", "commitment"}
    for k in tr.losses:
        assert torch.equal(tr.losses[k], ev.losses[k]), k
    for k in tr.stats:
        assert torch.equal(tr.stats[k], ev.stats[k]), k
    assert torch.equal(g_tr, g_ev) and bool(g_ev.abs().sum() > 0)


@FAST
@given(lfq_inputs(shapes=[(18, 9), (6, 3), (62, 2)]),
       st.floats(0.0, 10.0), st.floats(0.0, 10.0), st.sampled_from([0.05, 0.1, 1.0]))
def test_lfq_loss_weights_applied(ex, entropy_weight, commit_weight, temperature):
    channels, group_bits, z = ex
    q = _lfq(channels, group_bits, entropy_weight=entropy_weight, commit_weight=commit_weight,
             temperature=temperature).train()
    out = q(z)
    s = out.stats
    torch.testing.assert_close(out.losses["entropy"],
                               entropy_weight * (s["per_sample_entropy"] - s["codebook_entropy"]))
    torch.testing.assert_close(out.losses["commitment"], commit_weight * s["commitment"])
    # the unweighted terms, computed independently
    qv = torch.where(z > 0, 1.0, -1.0)
    torch.testing.assert_close(s["commitment"], (z - qv).pow(2).mean())
    per, cb = lfq_entropy_terms(q.to_groups(z).reshape(-1, group_bits), q.group_codebook, temperature)
    torch.testing.assert_close(s["per_sample_entropy"], per)
    torch.testing.assert_close(s["codebook_entropy"], cb)
    torch.testing.assert_close(out.loss, out.losses["entropy"] + out.losses["commitment"])


def test_lfq_entropy_terms_against_brute_force():
    # tiny case, computed with plain python over all 2^G codewords
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    cb = torch.tensor([[1.0 if (k >> j) & 1 else -1.0 for j in range(3)] for k in range(8)])
    per, ent = lfq_entropy_terms(x, cb, 0.5)
    ps = []
    for row in x.tolist():
        logits = [2 * sum(a * b for a, b in zip(row, c)) / 0.5 for c in cb.tolist()]
        m = max(logits)
        e = [math.exp(v - m) for v in logits]
        ps.append([v / sum(e) for v in e])
    exp_per = sum(-sum(p * math.log(p) for p in row if p > 0) for row in ps) / len(ps)
    pbar = [sum(row[k] for row in ps) / len(ps) for k in range(8)]
    exp_cb = -sum(p * math.log(p + 1e-5) for p in pbar)
    assert float(per) == pytest.approx(exp_per, rel=1e-5, abs=1e-6)
    assert float(ent) == pytest.approx(exp_cb, rel=1e-5, abs=1e-6)


def test_lfq_entropy_memory_for_62_channels():
    q = _lfq(62, 2).train()
    assert q.codebook_size == 2**62
    assert tuple(q.group_codebook.shape) == (4, 2)  # per group: 2^G codewords, never 2^C
    z = torch.randn(4, 64, 62, requires_grad=True)
    out = q(z)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()
    assert int(out.indices.max()) < 2**62


def test_lfq_straight_through_values_exact_for_large_bfloat16():
    q = _lfq(4, 2).eval()
    z = torch.tensor([[[300.0, -1e4, 3e38, -2.0]]], dtype=torch.bfloat16)
    assert q(z).values.tolist() == [[[1.0, -1.0, 1.0, -1.0]]]


# ----------------------------------------------------------------------------- FSQ
def _fsq(levels):
    return FSQ(FSQSpec(levels=tuple(levels)), channels=len(levels))


@FAST
@given(st.lists(st.integers(2, 12), min_size=1, max_size=4), st.integers(0, 2**32 - 1),
       st.sampled_from([0.01, 1.0, 5.0, 100.0]))
def test_fsq_values_within_unit_interval(levels, seed, scale):
    q = _fsq(levels)
    z = torch.randn(3, 5, len(levels), generator=torch.Generator().manual_seed(seed)) * scale
    out = q(z)
    assert out.values.abs().max() <= 1.0
    assert out.losses == {}


@pytest.mark.parametrize("L", [2, 3, 4, 5, 7, 8, 16, 255, 1000, 2000])
def test_fsq_reaches_exactly_L_values(L):
    q = _fsq([L])
    z = torch.linspace(-12, 12, 200_001).reshape(1, -1, 1)
    out = q(z)
    values = out.values.unique()
    assert len(values) == L
    assert len(out.indices.unique()) == L
    assert float(values.min()) == -1.0 and float(values.max()) <= 1.0


@pytest.mark.parametrize("L,expected", [
    (2, [-1.0, 0.0]),
    (3, [-1.0, 0.0, 1.0]),
    (4, [-1.0, -0.5, 0.0, 0.5]),
    (5, [-1.0, -0.5, 0.0, 0.5, 1.0]),
    (6, [-1.0, -2 / 3, -1 / 3, 0.0, 1 / 3, 2 / 3]),
    (8, [-1.0, -0.75, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75]),
])
def test_fsq_odd_even_levels(L, expected):
    q = _fsq([L])
    out = q(torch.linspace(-10, 10, 10_001).reshape(1, -1, 1))
    torch.testing.assert_close(out.values.unique(), torch.tensor(expected))
    codebook = q.indices_to_codes(torch.arange(L)).flatten()
    torch.testing.assert_close(codebook, torch.tensor(expected))
    # zero input -> the zero code (the shifted bound centres even levels too)
    assert float(q(torch.zeros(1, 1, 1)).values) == 0.0


@FAST
@given(st.lists(st.integers(2, 9), min_size=1, max_size=5), st.data())
def test_fsq_index_is_mixed_radix_channel0_least_significant(levels, data):
    q = _fsq(levels)
    digits = [data.draw(st.integers(0, n - 1)) for n in levels]
    expected, radix = 0, 1
    for d, n in zip(digits, levels):
        expected += d * radix
        radix *= n
    half = [n // 2 for n in levels]
    codes = torch.tensor([[(d - h) / h for d, h in zip(digits, half)]])
    assert q.codes_to_indices(codes).tolist() == [expected]
    torch.testing.assert_close(q.indices_to_codes(torch.tensor([expected])), codes)
    assert q.codebook_size == radix


def test_fsq_index_worked_example():
    q = _fsq([8, 5, 3])
    # levels (digits) 3, 4, 1 -> 3 + 8 * 4 + 40 * 1 = 75
    codes = torch.tensor([(3 - 4) / 4, (4 - 2) / 2, (1 - 1) / 1])
    assert int(q.codes_to_indices(codes)) == 75
    torch.testing.assert_close(q.indices_to_codes(torch.tensor(75)), codes)


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("make", [lambda: _lfq(18, 9), lambda: _fsq([8, 8, 8, 5, 5, 5])],
                         ids=["lfq", "fsq"])
def test_bad_inputs_are_rejected(make):
    q = make()
    C = q.channels
    with pytest.raises(ValueError, match=r"\bz\b.*shape"):
        q(torch.zeros(2, 3, C + 1))
    with pytest.raises(TypeError, match=r"\bz\b.*floating"):
        q(torch.zeros(2, 3, C, dtype=torch.int64))
    with pytest.raises(TypeError, match=r"\bz\b"):
        q([[0.0] * C])
    with pytest.raises(ValueError, match=r"codes.*shape"):
        q.codes_to_indices(torch.zeros(2, C - 1))
    with pytest.raises(TypeError, match=r"codes"):
        q.codes_to_indices(torch.zeros(2, C, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"indices.*\[0, "):
        q.indices_to_codes(torch.tensor([q.codebook_size]))
    with pytest.raises(ValueError, match=r"indices"):
        q.indices_to_codes(torch.tensor([-1]))
    with pytest.raises(TypeError, match=r"indices.*integer"):
        q.indices_to_codes(torch.tensor([0.0]))
    with pytest.raises(TypeError, match=r"indices"):
        q.indices_to_codes(torch.tensor([True]))


def test_lfq_bad_group_indices_are_rejected():
    q = _lfq(18, 9)
    with pytest.raises(ValueError, match="group_indices"):
        q.group_indices_to_codes(torch.tensor([[0, 512]]))
    with pytest.raises(ValueError, match="group_indices"):
        q.group_indices_to_codes(torch.tensor([[0, 1, 2]]))
    with pytest.raises(TypeError, match="group_indices"):
        q.group_indices_to_codes(torch.tensor([[0.0, 1.0]]))


@pytest.mark.parametrize("channels,group_bits", [(63, 9), (18, 4)])
def test_lfq_bad_channel_counts(channels, group_bits):
    with pytest.raises(ValueError, match="code_channels"):
        _lfq(channels, group_bits)


def test_fsq_levels_must_match_channels():
    with pytest.raises(ValueError, match="levels"):
        FSQ(FSQSpec(levels=(8, 5)), channels=3)
