"""The conformance kit: check_component passes options to the checks (apart from the wiring),
and check_backbone stays within the heads and time conditioning a backbone declares."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import flowmo
from flowmo.blocks import MMDiT
from flowmo.spec import MMDiTSpec
from flowmo.testing import check_backbone, check_component

_SMALL = MMDiTSpec(width=16, heads=1, depth=1, axes_dim=(4, 6, 6))
WIRING = {"patch_dim": 12, "txt_in_dim": 6, "txt_out_dim": 7}


# ----------------------------------------------------------------------------- options
def test_check_component_passes_options_to_the_check():
    heun = flowmo.SolverSpec(name="heun")
    report = check_component(heun, max_examples=3, options={"order": 2})
    assert "linear_in_t" in report  # the second-order property runs only with order >= 2
    assert "linear_in_t" not in check_component(heun, max_examples=3)
    with pytest.raises(AssertionError, match="check_solver: property 'linear_in_t' failed"):
        check_component(flowmo.SolverSpec(name="euler"), max_examples=3, options={"order": 2})
    fsq = flowmo.QuantizerSpec.model_validate({"name": "fsq", "levels": [3, 3]})
    assert check_component(fsq, max_examples=2, options={"forward_idempotent": False}, channels=2)


def test_check_component_refuses_options_a_check_does_not_take():
    heun = flowmo.SolverSpec(name="heun")
    with pytest.raises(TypeError, match=r"check_solver takes no option 'orde'; it takes: order"):
        check_component(heun, options={"orde": 2})
    with pytest.raises(TypeError, match="pass max_examples to check_component itself"):
        check_component(heun, options={"max_examples": 2})
    with pytest.raises(TypeError, match="options must be a dict"):
        check_component(heun, options=[("order", 2)])
    with pytest.raises(TypeError, match=r"takes no option 'patch_dim'.*wiring arguments go to check_component"):
        check_component(flowmo.BackboneSpec.model_validate({"name": "mmdit", **_SMALL.model_dump()}),
                        options={"patch_dim": 12}, **WIRING)
    with pytest.raises(TypeError, match=r"\(an ODE solver takes: none\)"):  # wiring where there is none
        check_component(heun, order=2)


# ----------------------------------------------------------------------------- backbones
def test_check_backbone_checks_an_encoder_without_time_or_image_head():
    net = MMDiT(_SMALL, **WIRING, time_conditioning=False, outputs=("txt",))
    report = check_backbone(net, **WIRING, max_examples=4)
    assert report["attributes"] == 1 and report["gradients"] >= 1
    # an image-only, time-conditioned backbone (a decoder) too
    check_backbone(MMDiT(_SMALL, **WIRING, outputs=("img",)), **WIRING, max_examples=4)
    spec = flowmo.BackboneSpec.model_validate({"name": "mmdit", **_SMALL.model_dump()})
    assert check_component(spec, max_examples=3, options={"atol": 1e-3}, **WIRING)


class _DeafEncoder(MMDiT):
    """The latent output ignores the image tokens."""

    def forward(self, img, txt, t, grid, outputs=None):
        return super().forward(torch.zeros_like(img), txt, t, grid, outputs)


class _UnusedWeight(MMDiT):
    """A parameter that never gets a gradient, in a backbone without time conditioning."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.unused = nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize("cls,prop,message", [
    (_DeafEncoder, "cross_stream", "latent output does not depend on the image tokens"),
    (_UnusedWeight, "gradients", r"\(a backbone without time conditioning\), parameters get no gradient: \['unused'\]"),
])
def test_check_backbone_catches_broken_encoders(cls, prop, message):
    with pytest.raises(AssertionError, match=f"property '{prop}' failed: .*{message}"):
        check_backbone(cls(_SMALL, **WIRING, time_conditioning=False, outputs=("txt",)), **WIRING, max_examples=4)


def test_check_backbone_checks_the_declarations():
    net = MMDiT(_SMALL, **WIRING)
    net.outputs = ("txt", "depth")
    with pytest.raises(AssertionError, match="property 'attributes' failed: outputs must be"):
        check_backbone(net, **WIRING, max_examples=2)
    net = MMDiT(_SMALL, **WIRING)
    net.time_conditioning = 1
    with pytest.raises(AssertionError, match="property 'attributes' failed: time_conditioning must be a bool"):
        check_backbone(net, **WIRING, max_examples=2)
