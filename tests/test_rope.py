"""RoPE: the cached (cos, sin) table and its application equal the rotation written out."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flowmo.blocks.rope import apply_rope, rope_angles, rope_freqs


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 9), half=st.integers(1, 6), batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_apply_rope_is_the_pairwise_rotation(n, half, batch, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, n, 2 * half, generator=g)
    angles = torch.rand(n, half, generator=g) * 20 - 10
    out = apply_rope(x, rope_freqs(angles))
    expected = torch.empty_like(x)
    for i in range(n):
        for k in range(half):
            c, s = math.cos(angles[i, k].item()), math.sin(angles[i, k].item())
            x0, x1 = x[..., i, 2 * k], x[..., i, 2 * k + 1]
            expected[..., i, 2 * k] = x0 * c - x1 * s
            expected[..., i, 2 * k + 1] = x0 * s + x1 * c
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # a rotation keeps the norm of every pair
    torch.testing.assert_close(out.unflatten(-1, (-1, 2)).norm(dim=-1), x.unflatten(-1, (-1, 2)).norm(dim=-1),
                               rtol=1e-5, atol=1e-5)


def test_zero_position_is_the_identity():
    angles = rope_angles(torch.zeros(3, 3, dtype=torch.long), (2, 4, 4))
    x = torch.randn(2, 3, 10)
    torch.testing.assert_close(apply_rope(x, rope_freqs(angles)), x)


def test_apply_rope_refuses_a_table_of_the_wrong_form():
    x = torch.randn(1, 4, 8)
    freqs = rope_freqs(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="freqs must be float32"):
        apply_rope(x, freqs.double())
    with pytest.raises(ValueError, match=r"freqs has 3 angle pairs .* sum\(axes_dim\) must equal the head dim"):
        apply_rope(x, freqs[:, :3])
    with pytest.raises(ValueError, match="freqs must be float32"):
        apply_rope(x, torch.polar(torch.ones(4, 4), torch.zeros(4, 4)))


def test_a_table_first_built_under_inference_mode_serves_training():
    import flowmo

    torch.manual_seed(0)
    m = flowmo.build("tiny")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.inference_mode():
        m.eval().reconstruct(x, sampler={"steps": 1})
    m.train().loss(x).total.backward()  # the cached RoPE tables are ordinary tensors
