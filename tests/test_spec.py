"""Specs: validation with messages naming the fields, JSON round trips, dispatch by name."""

import json

import pytest
from hypothesis import given, settings
from pydantic import ValidationError

import flowmo
from flowmo import FlowMoSpec, GuidanceSpec, LFQSpec, MMDiTSpec, QuantizerSpec, SamplerSpec
from flowmo.spec import FSQSpec, sigma_to_t

from strategies import small_specs


def tiny(**changes):
    data = flowmo.flowmo_tiny().model_dump()
    data.update(changes)
    return data


@given(small_specs())
@settings(max_examples=40, deadline=None)
def test_json_round_trip(spec):
    again = FlowMoSpec.model_validate_json(spec.to_json())
    assert again == spec
    assert type(again.quantizer) is type(spec.quantizer)
    assert json.loads(again.to_json()) == json.loads(spec.to_json())
    assert again.fingerprint() == spec.fingerprint()


@pytest.mark.parametrize("name", list(flowmo.PRESETS))
def test_presets_round_trip(name):
    spec = flowmo.get_preset(name)
    assert FlowMoSpec.from_json(spec.to_json()) == spec


def test_release_presets_sizes():
    lo, hi = flowmo.flowmo_lo(), flowmo.flowmo_hi()
    assert (lo.encoder.width, lo.encoder.heads, lo.encoder.depth, lo.encoder.axes_dim) == (768, 12, 8, (8, 28, 28))
    assert (lo.decoder.width, lo.decoder.heads, lo.decoder.depth, lo.decoder.axes_dim) == (1152, 12, 16, (12, 42, 42))
    assert (lo.image_size, lo.patch_size, lo.code_length) == (256, 4, 256)
    assert (lo.code_channels, lo.quantizer.group_bits, hi.code_channels, hi.quantizer.group_bits) == (18, 9, 56, 14)
    assert lo.bits_per_pixel == pytest.approx(0.0703, abs=1e-4)
    assert hi.bits_per_pixel == pytest.approx(0.219, abs=1e-3)
    assert lo.decoder.softmax_scale == 8 / 96


@pytest.mark.parametrize(
    "changes, fields",
    [
        ({"encoder": {"name": "mmdit", "width": 130, "heads": 4, "depth": 1, "axes_dim": (4, 14, 14)}}, ["encoder", "width", "heads"]),
        ({"decoder": {"name": "mmdit", "width": 128, "heads": 4, "depth": 1, "axes_dim": (4, 12, 14)}}, ["decoder", "axes_dim", "head dim"]),
        ({"decoder": {"name": "mmdit", "width": 128, "heads": 4, "depth": 1, "axes_dim": (3, 15, 14)}}, ["decoder", "axes_dim", "even"]),
        ({"image_size": 30}, ["image_size", "patch_size"]),
        ({"code_channels": 20}, ["code_channels", "group_bits"]),
        ({"quantizer": {"name": "fsq", "levels": (8, 5)}}, ["quantizer", "levels", "code_channels"]),
        ({"quantizer": {"name": "rvq"}}, ["quantizer", "unknown", "lfq", "fsq", "bsq", "vq"]),
        ({"quantizer": {"group_bits": 9}}, ["quantizer", "name"]),
        ({"patch_size": 0}, ["patch_size"]),
        ({"extra_field": 1}, ["extra_field"]),
        ({"code_channels": 63, "quantizer": {"name": "lfq", "group_bits": 9}}, ["code_channels", "62"]),
    ],
)
def test_invalid_specs_name_the_fields(changes, fields):
    with pytest.raises(ValidationError) as e:
        FlowMoSpec.model_validate(tiny(**changes))
    msg = str(e.value)
    for f in fields:
        assert f in msg, f"{f!r} not in {msg}"


def test_dispatch_by_name_gives_concrete_specs():
    assert isinstance(QuantizerSpec.model_validate({"name": "fsq", "levels": [5, 5]}), FSQSpec)
    assert isinstance(QuantizerSpec.model_validate("lfq"), LFQSpec)
    with pytest.raises(ValidationError, match="unexpected|extra"):
        QuantizerSpec.model_validate({"name": "lfq", "levels": [5]})


def test_guidance_interval_in_sigma_or_t():
    g = GuidanceSpec.model_validate({"scale": 1.5, "interval_sigma": (0.17, 1.02)})
    assert g.interval == pytest.approx((0.17 / 1.17, 1.02 / 2.02))
    assert GuidanceSpec() == g  # the release's default
    assert GuidanceSpec.model_validate({"interval_sigma": None}).interval is None
    assert sigma_to_t(1.0) == 0.5
    with pytest.raises(ValidationError, match="interval"):
        GuidanceSpec(interval=(0.6, 0.2))
    with pytest.raises(ValidationError, match="not both"):
        GuidanceSpec.model_validate({"interval": (0.1, 0.2), "interval_sigma": (0.1, 0.2)})


def test_sampler_defaults_are_the_release():
    s = SamplerSpec()
    assert (s.steps, s.grid.name, s.grid.p, s.solver.name, s.guidance.scale, s.clip) == (25, "pow", 0.25, "euler", 1.5, True)


def test_replace_revalidates():
    spec = flowmo.flowmo_tiny()
    assert spec.replace(code_length=8).code_length == 8
    with pytest.raises(ValidationError):
        spec.replace(image_size=31)


def test_fingerprint_tracks_architecture_only():
    spec = flowmo.flowmo_tiny()
    assert spec.replace(sampler={"steps": 3}).fingerprint() == spec.fingerprint()
    assert spec.replace(code_length=8).fingerprint() != spec.fingerprint()
    ckpt = spec.replace(decoder={**spec.decoder.model_dump(), "gradient_checkpointing": True})
    assert ckpt.fingerprint() == spec.fingerprint()


def test_mmdit_spec_scales():
    b = MMDiTSpec(width=128, heads=4, depth=1, axes_dim=(4, 14, 14))
    assert b.softmax_scale == 8 / 32
    assert MMDiTSpec(width=128, heads=4, depth=1, axes_dim=(4, 14, 14), attn_scale="standard").softmax_scale == 32**-0.5
    assert MMDiTSpec(width=128, heads=4, depth=1, axes_dim=(4, 14, 14), attn_scale=0.3).softmax_scale == 0.3
