"""MaskGIT's cosine schedule: hand-worked counts, invariants, and the training mask draws."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from flowmo.generators.schedule import (cosine_gamma, decoding_mask_count, decoding_schedule, random_mask,
                                        sample_mask_counts, training_mask_count)


def test_gamma_hand_values():
    assert cosine_gamma(0.0) == 1.0
    assert cosine_gamma(1.0) == 0.0
    assert cosine_gamma(0.5) == pytest.approx(math.sqrt(0.5), abs=1e-15)
    assert cosine_gamma(1 / 3) == pytest.approx(math.sqrt(3) / 2, abs=1e-15)


@pytest.mark.parametrize("r, length, expected", [
    (0.0, 16, 16),      # gamma = 1: everything masked
    (0.5, 16, 12),      # 16 * 0.7071 = 11.31 -> 12
    (2 / 3, 10, 5),     # 10 * cos(pi/3) = 5 exactly (not 6 from float rounding)
    (0.25, 16, 15),     # 16 * 0.9239 = 14.78 -> 15
    (0.9, 16, 3),       # 16 * 0.1564 = 2.50 -> 3
    (1.0, 16, 1),       # gamma = 0: at least one token masked
    (0.999, 4, 1),      # 4 * 0.0016 -> 1
])
def test_training_mask_count_hand(r, length, expected):
    assert training_mask_count(r, length) == expected


@pytest.mark.parametrize("length, steps, expected", [
    (16, 4, [14, 11, 6, 0]),   # floor(16 * [0.9239, 0.7071, 0.3827]) = 14, 11, 6
    (4, 4, [3, 2, 1, 0]),      # floor(4 * [0.9239, 0.7071, 0.3827]) = 3, 2, 1
    (10, 2, [7, 0]),           # floor(10 * 0.7071) = 7
    (2, 3, None),              # steps > length refused (below)
    (6, 3, [5, 3, 0]),         # floor(6 * cos(pi/6) = 5.196) = 5, floor(6 * cos(pi/3) = 3.0) = 3 exactly
    (5, 5, [4, 3, 2, 1, 0]),   # floor(5*cos(pi/5)) = floor(4.045) = 4 is clamped to 4 - 1 = 3
    (7, 1, [0]),               # one step decodes everything
])
def test_decoding_schedule_hand(length, steps, expected):
    if expected is None:
        with pytest.raises(ValueError, match="steps"):
            decoding_schedule(length, steps)
        return
    assert decoding_schedule(length, steps) == expected
    assert [decoding_mask_count(t, steps, length) for t in range(steps)] == expected


def test_decoding_schedule_strictly_decreasing_clamp():
    # 100 tokens, 100 steps: floor(100 cos(pi/200)) = 99 and floor(100 cos(pi/100)) = 99 -> 98
    assert decoding_schedule(100, 100)[:3] == [99, 98, 97]


@given(st.integers(1, 300), st.data())
def test_decoding_schedule_invariants(length, data):
    steps = data.draw(st.integers(1, length))
    s = decoding_schedule(length, steps)
    assert len(s) == steps and s[-1] == 0
    prev = length
    for t, n in enumerate(s):
        assert n < prev                                   # each step decodes at least one token
        assert n >= steps - 1 - t                         # enough left for the remaining steps
        if t < steps - 1:                                 # never above the cosine count
            assert n <= math.floor(length * math.cos(math.pi / 2 * (t + 1) / steps) + 1e-9)
        prev = n


@given(st.floats(0, 1), st.integers(1, 1000))
def test_training_count_range(r, length):
    n = training_mask_count(r, length)
    assert 1 <= n <= length
    assert n >= length * math.cos(math.pi * r / 2) - 1e-6


def test_sample_mask_counts_follow_the_draws():
    g = torch.Generator().manual_seed(3)
    counts = sample_mask_counts(500, 32, generator=g)
    r = torch.rand(500, generator=torch.Generator().manual_seed(3)).numpy().astype(np.float64)
    expected = np.clip(np.ceil(np.cos(np.pi * r / 2) * 32 - 1e-6), 1, 32)
    assert counts.dtype == torch.int64
    # float32 cos vs float64 cos may differ only where the product is within float error of an integer
    assert (counts.numpy() == expected).mean() > 0.99
    # E[gamma(r)] = 2 / pi for r ~ U(0, 1): about 64% of the tokens masked on average
    assert abs(counts.double().mean().item() / 32 - 2 / math.pi) < 0.05


def test_random_mask_counts_and_uniformity():
    g = torch.Generator().manual_seed(0)
    counts = torch.tensor([0, 1, 3, 8] * 500)
    m = random_mask(counts, 8, generator=g)
    assert m.dtype == torch.bool and m.shape == (2000, 8)
    assert torch.equal(m.sum(1), counts)
    freq = m[2::4].float().mean(0)  # rows with 3 of 8 masked: each position 3/8 of the time
    assert torch.allclose(freq, torch.full((8,), 3 / 8), atol=0.08)


def test_same_seed_same_mask():
    a = random_mask(torch.tensor([3, 5]), 9, generator=torch.Generator().manual_seed(7))
    b = random_mask(torch.tensor([3, 5]), 9, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("call, name", [
    (lambda: cosine_gamma(1.5), "r"),
    (lambda: cosine_gamma("x"), "r"),
    (lambda: training_mask_count(0.5, 0), "length"),
    (lambda: decoding_schedule(8, 0), "steps"),
    (lambda: decoding_schedule(8, 9), "steps"),
    (lambda: decoding_schedule(0, 1), "length"),
    (lambda: decoding_mask_count(4, 4, 8), "step"),
    (lambda: sample_mask_counts(-1, 4), "batch"),
])
def test_bad_arguments_named(call, name):
    with pytest.raises((TypeError, ValueError), match=name):
        call()
