"""Errors that moved to where the input enters: the Evaluator's update (image layout and the
SSIM window, once per batch, not again per metric) and evaluate_model (its data reach the
evaluator's check)."""

from __future__ import annotations

import pytest
import torch

from flowmo.metrics import Evaluator, evaluate_model


def _images(*shape):
    return torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize("protocol, side", [("standard", 10), ("release", 6)])
def test_update_refuses_images_below_the_ssim_window(protocol, side):
    ev = Evaluator(lpips=(), fid=False, protocol=protocol)
    x = _images(2, 3, side, side)
    with pytest.raises(ValueError, match=f"H, W >= {side + 1}"):
        ev.update(x, x)
    ev.update(_images(2, 3, side + 1, side + 1), _images(2, 3, side + 1, side + 1))


def test_update_refuses_other_channel_counts_and_layouts():
    ev = Evaluator(lpips=(), fid=False)
    with pytest.raises(ValueError, match=r"originals must have shape \(B, 3, H, W\)"):
        ev.update(_images(2, 1, 16, 16), _images(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"originals must be a floating-point tensor \(B, C, H, W\)"):
        ev.update(_images(3, 16, 16), _images(3, 16, 16))
    with pytest.raises(ValueError, match="reconstructions must have the shape and device of originals"):
        ev.update(_images(2, 3, 16, 16), _images(1, 3, 16, 16))


def test_evaluate_model_data_of_the_wrong_layout_is_refused_by_the_evaluator():
    with pytest.raises(ValueError, match=r"originals must be a floating-point tensor \(B, C, H, W\)"):
        evaluate_model(lambda x: x, _images(4, 16, 16), lpips=(), fid=False, progress=False)
