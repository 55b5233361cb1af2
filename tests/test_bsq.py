"""BSQ specifics (the generic properties: the kit, run over every registered quantizer in
test_conformance_kinds.py): codes on the unit sphere, LFQ's index layout, the entropy of the
soft assignment on the sphere against a brute-force computation, gradients through the projection."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo
from flowmo.quantizers import BSQ, LFQ
from flowmo.quantizers.common import unit_sphere
from flowmo.registry import QUANTIZERS
from flowmo.spec import LFQSpec

FAST = settings(max_examples=20, deadline=None, derandomize=True, database=None)

# (channels, group_bits) combinations valid for BSQ (as for LFQ)
SHAPES = [(18, 9), (6, 3), (6, 2), (4, 4), (12, 3), (62, 2), (2, 1)]  # 1 channel is refused (no gradient)


def _bsq(channels, group_bits, **kw) -> BSQ:
    return QUANTIZERS.build({"name": "bsq", "group_bits": group_bits, **kw}, channels=channels)


@st.composite
def bsq_inputs(draw, shapes=SHAPES):
    channels, group_bits = draw(st.sampled_from(shapes))
    b, t = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([1e-30, 1e-3, 1.0, 1e4, 1e30]))
    z = torch.randn(b, t, channels, generator=g) * scale
    z = torch.where(torch.rand(b, t, channels, generator=g) < 0.2, 0.0, z)  # exact zeros map to the negative bit
    return channels, group_bits, z


@FAST
@given(bsq_inputs())
def test_codes_lie_on_the_unit_sphere_with_lfqs_indices_and_groups(ex):
    channels, group_bits, z = ex
    q, lfq = _bsq(channels, group_bits), LFQ(LFQSpec(group_bits=group_bits), channels=channels)
    out, ref = q(z), lfq(z)
    expected = torch.where(z > 0, 1.0, -1.0) / math.sqrt(channels)
    assert torch.allclose(out.values.detach(), expected, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.values.detach().double().norm(dim=-1), torch.ones(z.shape[:-1], dtype=torch.float64),
                               rtol=0, atol=1e-6)
    assert torch.equal(out.indices, ref.indices)  # the same bits -> index map
    groups = q.codes_to_group_indices(out.values)
    assert torch.equal(groups, lfq.codes_to_group_indices(ref.values))  # the same strided groups
    assert torch.equal(q.group_indices_to_codes(groups), out.values)
    assert torch.equal(q.indices_to_codes(out.indices), out.values)
    assert torch.equal(q.codes_to_indices(out.values), out.indices)
    assert all(torch.isfinite(v) for v in out.losses.values())


@FAST
@given(st.sampled_from(SHAPES), st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=6))
def test_indices_round_trip_through_the_unit_codes(shape, raw):
    channels, group_bits = shape
    q = _bsq(channels, group_bits)
    idx = torch.tensor(raw, dtype=torch.int64) % q.codebook_size
    codes = q.indices_to_codes(idx)
    assert torch.allclose(codes.double().norm(dim=-1), torch.ones(len(raw), dtype=torch.float64), atol=1e-6)
    assert torch.equal(q.codes_to_indices(codes), idx)
    assert torch.equal(q.group_indices_to_codes(q.codes_to_group_indices(codes)), codes)


@pytest.mark.parametrize("inv_temperature", [0.5, 3.0, 40.0])
def test_entropy_terms_are_those_of_the_soft_assignment_on_the_sphere(inv_temperature):
    """One group of all C = 4 bits: p(c | u) = softmax_c(-tau ||u - c||^2) over the 16 codewords
    c in {-1/2, +1/2}^4, computed here in float64 from the definition; the per-sample entropy
    is the mean of H(p(. | u)), the codebook entropy H(mean p) (in the release's form, with
    log(p + 1e-5)); each bit's marginal is sigmoid(4 tau u_d / sqrt(C))."""
    channels, tau = 4, inv_temperature
    q = _bsq(channels, channels, inv_temperature=tau)
    z = torch.randn(5, 3, channels, generator=torch.Generator().manual_seed(7))
    stats = q(z).stats
    u = F.normalize(z.double(), dim=-1).reshape(-1, channels)
    words = torch.tensor(list(itertools.product([-0.5, 0.5], repeat=channels)), dtype=torch.float64)
    p = torch.softmax(-tau * ((u[:, None, :] - words[None]) ** 2).sum(-1), dim=-1)
    per_sample = -(p * p.log()).sum(-1).mean()
    pbar = p.mean(0)
    codebook = -(pbar * torch.log(pbar + 1e-5)).sum()
    assert float(stats["per_sample_entropy"]) == pytest.approx(float(per_sample), rel=1e-4, abs=1e-6)
    assert float(stats["codebook_entropy"]) == pytest.approx(float(codebook), rel=1e-4, abs=1e-6)
    for d in range(channels):  # the assignment factorises over the bits
        marginal = p[:, words[:, d] > 0].sum(-1)
        torch.testing.assert_close(marginal, torch.sigmoid(4 * tau * u[:, d] / math.sqrt(channels)))


@FAST
@given(bsq_inputs(shapes=[(18, 9), (6, 3), (4, 4)]), st.floats(0.0, 5.0), st.floats(0.0, 3.0), st.floats(0.0, 5.0))
def test_loss_weights_are_applied(ex, entropy_weight, gamma, commit_weight):
    channels, group_bits, z = ex
    q = _bsq(channels, group_bits, entropy_weight=entropy_weight, gamma=gamma, commit_weight=commit_weight)
    out = q(z)
    s = out.stats
    torch.testing.assert_close(out.losses["entropy"],
                               entropy_weight * (s["per_sample_entropy"] - gamma * s["codebook_entropy"]))
    u = unit_sphere(z).double()
    commit = (u - torch.where(z > 0, 1.0, -1.0).double() / math.sqrt(channels)).pow(2).sum(-1).mean()
    torch.testing.assert_close(s["commitment"].double(), commit, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.losses["commitment"], commit_weight * s["commitment"])
    assert [t.name for t in flowmo.QuantizerSpec.model_validate({"name": "bsq"}).loss_terms()] == ["entropy",
                                                                                                   "commitment"]


def test_the_gradient_flows_through_the_projection_and_the_code_is_scale_invariant():
    q = _bsq(6, 3)
    z = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    w = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))
    (q(z).values * w).sum().backward()
    ref = z.detach().clone().requires_grad_(True)
    (F.normalize(ref, dim=-1) * w).sum().backward()
    torch.testing.assert_close(z.grad, ref.grad)
    with torch.no_grad():
        a, b = q(z), q(z * 1e6)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.values, b.values)
    for k in a.losses:
        torch.testing.assert_close(a.losses[k], b.losses[k])


def test_unit_sphere_is_finite_for_any_finite_input():
    """Norm 1 from subnormal to the float32 maximum (no overflow or underflow of the squares), 0
    for the zero vector; the gradient (of magnitude 1 / ||z||) is finite down to ||z|| ~ 1e-38,
    the identity at the zero vector."""
    z = torch.tensor([[3e38, -3e38, 1.0], [1e-20, 0.0, -1e-20], [0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], requires_grad=True)
    u = unit_sphere(z)
    torch.testing.assert_close(u.norm(dim=-1), torch.tensor([1.0, 1.0, 0.0, 1.0]))
    torch.testing.assert_close(u[3], torch.tensor([0.6, 0.8, 0.0]))
    u.sum().backward()
    assert torch.isfinite(z.grad).all() and torch.equal(z.grad[2], torch.ones(3))  # identity at the zero vector
    torch.testing.assert_close(unit_sphere(torch.tensor([1e-40, 0.0, -1e-40])).norm(), torch.tensor(1.0))


def test_the_spec_refuses_channels_bsq_cannot_take():
    tiny = flowmo.flowmo_tiny()
    assert tiny.replace(quantizer={"name": "bsq"}).bits_per_token == 18
    with pytest.raises(ValueError, match=r"code_channels \(18\) must be divisible by quantizer.group_bits \(4\)"):
        tiny.replace(quantizer={"name": "bsq", "group_bits": 4})
    with pytest.raises(ValueError, match=r"must be <= 62 for BSQ"):
        tiny.replace(code_channels=64, quantizer={"name": "bsq", "group_bits": 8})
    with pytest.raises(ValueError, match="inv_temperature"):
        tiny.replace(quantizer={"name": "bsq", "inv_temperature": 0.0})


@pytest.mark.parametrize("quantizer", [{"name": "bsq", "group_bits": 1}, {"name": "vq", "l2_normalize": True}])
def test_one_channel_on_the_unit_sphere_is_refused_where_the_spec_is_built(quantizer):
    """z / |z| of one channel is its sign: the encoder would get no gradient (the trainer would
    then freeze it without a word)."""
    with pytest.raises(ValueError, match=r"code_channels \(1\) must be >= 2 .*no gradient to the encoder"):
        flowmo.flowmo_tiny().replace(code_channels=1, quantizer=quantizer)
    with pytest.raises(ValueError, match=r"code_channels \(1\) must be >= 2"):
        QUANTIZERS.build(quantizer, channels=1)
