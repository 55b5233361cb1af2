"""The same-bits thumbnail baseline (examples.photo_demo.baselines)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.photo_demo.baselines import thumbnail_baseline, thumbnail_side
from flowmo.metrics.pixel import psnr, ssim


@given(bits=st.integers(24, 10**7), h=st.integers(1, 4096), w=st.integers(1, 4096))
@settings(max_examples=200, deadline=None)
def test_side_is_the_largest_that_fits(bits, h, w):
    k = thumbnail_side(bits, h, w)
    assert 1 <= k <= min(h, w)
    assert 24 * k * k <= bits
    # one pixel more per side no longer fits, unless the image side caps it
    assert k == min(h, w) or 24 * (k + 1) ** 2 > bits


@pytest.mark.parametrize("bits, k", [(24, 1), (95, 1), (96, 2), (215, 2), (216, 3), (576, 4), (600, 5), (864, 6)])
def test_side_examples(bits, k):
    assert thumbnail_side(bits, 32, 32) == k


@pytest.mark.parametrize("bits, h, w, match", [
    (23, 32, 32, "bits must be >= 24"), (0, 32, 32, "bits"), (-5, 32, 32, "bits"),
    (True, 32, 32, "bits must be an int"), (576.0, 32, 32, "bits must be an int"), ("576", 32, 32, "bits"),
    (576, 0, 32, "height and width"), (576, 32, -1, "height and width"), (576, 3.5, 32, "height"),
])
def test_side_bad_input(bits, h, w, match):
    with pytest.raises(ValueError, match=match):
        thumbnail_side(bits, h, w)


@pytest.mark.parametrize("images, match", [
    (torch.zeros(2, 1, 8, 8), r"\(B, 3, H, W\)"), (torch.zeros(3, 8, 8), r"\(B, 3, H, W\)"),
    (np.zeros((1, 3, 8, 8)), "ndarray"), (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "floating point"),
    (torch.zeros(0, 3, 8, 8), "empty"), (torch.full((1, 3, 8, 8), float("nan")), "finite"),
])
def test_baseline_bad_images(images, match):
    with pytest.raises(ValueError, match=match):
        thumbnail_baseline(images, 96)


def test_numpy_ints_and_meta_tensors():
    assert thumbnail_side(np.int64(576), np.int32(32), np.uint8(32)) == 4
    with pytest.raises(ValueError, match="meta"):
        thumbnail_baseline(torch.empty(1, 3, 32, 32, device="meta"), 576)


def test_constant_images_are_kept_to_8_bits():
    # a flat image is coded exactly by any thumbnail (up to 8-bit rounding of its value)
    x = torch.full((2, 3, 16, 12), 0.3)
    t = thumbnail_baseline(x, 24 * 9)
    level = round((0.3 + 1) * 127.5) / 127.5 - 1
    assert t.side == 3 and t.bits == 216
    torch.testing.assert_close(t.images, torch.full_like(x, level), atol=1e-6, rtol=0)


def test_full_size_thumbnail_is_the_image_in_8_bits():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = thumbnail_baseline(x, 24 * 64 + 100)
    assert t.side == 8 and t.bits == 24 * 64
    expected = np.round((x.numpy().astype(np.float64) + 1) * 127.5) / 127.5 - 1
    np.testing.assert_allclose(t.images.numpy(), expected, atol=1e-6)


def test_thumbnail_pixels_are_block_means_rounded_to_8_bits():
    # with k dividing the sides, downsampling is the mean of each block (written out in numpy)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 12, 12, generator=g) * 2 - 1
    t = thumbnail_baseline(x, 24 * 9 + 5)
    blocks = x.numpy().astype(np.float64).reshape(2, 3, 3, 4, 3, 4).mean(axis=(3, 5))
    expected = np.round((blocks + 1) * 127.5) / 127.5 - 1
    assert t.side == 3 and t.thumbnail.shape == (2, 3, 3, 3)
    np.testing.assert_allclose(t.thumbnail.numpy(), expected, atol=1e-6)
    assert t.images.shape == x.shape and float(t.images.abs().max()) <= 1


def test_held_out_calibration_matches_the_issue():
    """Issue 10 lists the thumbnail figures on the held-out 32 px crops (computed by its author):
    2x2 17.95 dB / 0.256, 3x3 18.85 / 0.300, 4x4 19.70 / 0.356, 6x6 21.09 / 0.475, 8x8 22.79 / 0.613."""
    pytest.importorskip("skimage", reason="needs the built-in photos (scikit-image)")
    from flowmo.data.photos import held_out_photos

    x = held_out_photos(32)
    for bits, side, p, s in [(96, 2, 17.95, 0.256), (216, 3, 18.85, 0.300), (384, 4, 19.70, 0.356),
                             (864, 6, 21.09, 0.475), (1536, 8, 22.79, 0.613)]:
        t = thumbnail_baseline(x, bits)
        assert t.side == side
        assert math.isclose(float(psnr(x, t.images).mean()), p, abs_tol=0.01)
        assert math.isclose(float(ssim(x, t.images).mean()), s, abs_tol=0.001)
