"""Spec fields whose extreme values always gave NaN (or a degenerate grid) have finite ranges:
values outside are refused naming the field, values at the ends still work."""

import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

import flowmo
from flowmo.samplers import build_grid
from flowmo.spec import MAX_ATTN_SCALE, MAX_TIME_FACTOR, POW_P_RANGE, ROPE_THETA_RANGE, SHIFT_RANGE
from flowmo.testing import check_time_grid

REFERENCE = Path("/work/shared/reference/tiny_lo/meta.json")


@pytest.mark.parametrize("changes,field", [
    ({"decoder": {"time_factor": 1e308}}, "decoder.time_factor"),
    ({"decoder": {"time_factor": MAX_TIME_FACTOR * 1.01}}, "decoder.time_factor"),
    ({"encoder": {"rope_theta": 1e-300}}, "encoder.rope_theta"),
    ({"decoder": {"rope_theta": ROPE_THETA_RANGE[0] / 2}}, "decoder.rope_theta"),
    ({"decoder": {"rope_theta": 1e300}}, "decoder.rope_theta"),
    ({"decoder": {"attn_scale": 1e300}}, "attn_scale must be 'mup', 'standard' or a number in \\(0, 100\\]"),
    ({"encoder": {"attn_scale": MAX_ATTN_SCALE + 1}}, "attn_scale"),
    ({"sampler": {"grid": {"p": 1e-3}}}, "sampler.grid.p"),
    ({"sampler": {"grid": {"p": 1e-300}}}, "sampler.grid.p"),
    ({"sampler": {"grid": {"p": 1e300}}}, "sampler.grid.p"),
    ({"sampler": {"grid": {"name": "shifted", "shift": 1e-300}}}, "sampler.grid.shift"),
    ({"sampler": {"grid": {"name": "shifted", "shift": 1e300}}}, "sampler.grid.shift"),
])
def test_values_that_always_give_nan_are_refused_naming_the_field(changes, field):
    with pytest.raises(ValidationError, match=field):
        flowmo.flowmo_tiny().replace(**changes)


def test_the_ends_of_the_ranges_give_a_finite_model():
    lo, hi = ROPE_THETA_RANGE
    spec = flowmo.flowmo_tiny().replace(
        encoder={"depth": 1, "rope_theta": lo, "attn_scale": MAX_ATTN_SCALE},
        decoder={"depth": 1, "rope_theta": hi, "time_factor": MAX_TIME_FACTOR, "attn_scale": MAX_ATTN_SCALE})
    torch.manual_seed(0)
    model = flowmo.build(spec).eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        out = model.reconstruct(x, sampler={"steps": 3}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("grid", [{"name": "pow", "p": POW_P_RANGE[0]}, {"name": "pow", "p": POW_P_RANGE[1]},
                                  {"name": "shifted", "shift": SHIFT_RANGE[0]},
                                  {"name": "shifted", "shift": SHIFT_RANGE[1]}])
def test_grids_at_the_ends_of_their_ranges_pass_the_kit(grid):
    check_time_grid(build_grid(grid), max_examples=15, max_steps=flowmo.spec.MAX_SAMPLER_STEPS)


def test_the_release_values_are_inside_the_ranges():
    release = flowmo.flowmo_lo()
    for net in (release.encoder, release.decoder):
        assert ROPE_THETA_RANGE[0] <= net.rope_theta <= ROPE_THETA_RANGE[1]
        assert 0 < net.time_factor <= MAX_TIME_FACTOR and 0 < net.softmax_scale <= MAX_ATTN_SCALE
    assert POW_P_RANGE[0] <= release.sampler.grid.p <= POW_P_RANGE[1]
    if REFERENCE.is_file():  # the recorded reference configuration's sampler
        samples = json.loads(REFERENCE.read_text())["recorded"]["samples"]
        ps = [s["pow_p"] for s in samples if s.get("pow_p") is not None]
        assert ps and all(POW_P_RANGE[0] <= p <= POW_P_RANGE[1] for p in ps)
