"""The high-frequency share on images whose spectra are known by construction."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.sharpness import high_frequency_share, sharpness_ratio


def _wave(fy: int, fx: int, n: int = 32) -> torch.Tensor:
    """A grey cosine with fy, fx cycles per image: all its power at radius sqrt(fy^2 + fx^2) / n."""
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return torch.cos(2 * math.pi * (fy * y + fx * x) / n)[None]


@pytest.mark.parametrize("fy, fx, share", [(1, 0, 0.0), (3, 4, 0.0), (8, 0, 0.0), (9, 0, 1.0), (16, 16, 1.0),
                                           (6, 6, 1.0)])
def test_a_single_frequency_is_all_high_or_all_low(fy, fx, share):
    # radius in cycles per pixel: sqrt(fy^2 + fx^2) / 32 against the cutoff 0.25 (= 8 / 32)
    assert float(high_frequency_share(_wave(fy, fx))) == pytest.approx(share, abs=1e-12)


def test_a_mix_splits_by_power_and_rgb_is_measured_in_grey():
    img = _wave(2, 0) + 0.5 * _wave(12, 0)  # power 1 : 0.25
    assert float(high_frequency_share(img)) == pytest.approx(0.25 / 1.25, rel=1e-12)
    rgb = img[:, None].expand(1, 3, 32, 32)  # grey in all channels: the luma weights sum to 1
    assert float(high_frequency_share(rgb)) == pytest.approx(0.25 / 1.25, rel=1e-9)
    assert float(high_frequency_share(torch.zeros(1, 3, 8, 8))) == 0.0  # flat: no power


@given(st.integers(0, 2**31 - 1))
def test_blurring_lowers_the_share_and_noise_raises_it(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 32, 32, generator=g, dtype=torch.float64) * 2 - 1
    k = torch.full((3, 1, 3, 3), 1 / 9, dtype=torch.float64)
    blurred = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="circular"), k, groups=3)
    assert sharpness_ratio(blurred, x) < 1.0
    smooth = torch.nn.functional.conv2d(torch.nn.functional.pad(blurred, (1, 1, 1, 1), mode="circular"), k, groups=3)
    assert sharpness_ratio(smooth + 0.3 * torch.randn(smooth.shape, generator=g, dtype=torch.float64), smooth) > 1.0


def test_bad_input_is_refused_naming_the_argument():
    with pytest.raises(TypeError, match="images"):
        high_frequency_share(torch.zeros(1, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        high_frequency_share(torch.zeros(1, 2, 4, 4))
    with pytest.raises(ValueError, match="NaN"):
        high_frequency_share(torch.full((1, 4, 4), float("nan")))
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_share(torch.zeros(1, 4, 4), cutoff=0.8)
    with pytest.raises(ValueError, match="one shape"):
        sharpness_ratio(torch.zeros(1, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="no power above the cutoff"):
        sharpness_ratio(torch.zeros(1, 4, 4), torch.zeros(1, 4, 4))
