"""Spec fields refuse bad input: booleans/strings for numbers, lax booleans, non-finite and huge
values (each refused at validation, naming the field); FlowMoSpec.loss_terms checks what the
components declare."""

import math
from typing import ClassVar, Literal

import numpy as np
import pytest
from pydantic import ValidationError

import flowmo
from flowmo import FlowMoSpec, GuidanceSpec, MMDiTSpec, SamplerSpec
from flowmo.spec import (
    MAX_CHAIN_STEPS,
    MAX_DEPTH,
    MAX_IMAGE_SIZE,
    MAX_MLP_RATIO,
    MAX_SAMPLER_STEPS,
    MAX_TOKENS,
    MAX_WIDTH,
    FSQSpec,
    LFQSpec,
    LossTerm,
    ModeSeekingSpec,
    PosttrainSpec,
    QuantizerSpec,
    FlowLossSpec,
)


def tiny(**changes):
    data = flowmo.flowmo_tiny().model_dump()
    data.update(changes)
    return data


def backbone(**changes):
    data = {"name": "mmdit", "width": 128, "heads": 4, "depth": 1, "axes_dim": (4, 14, 14)}
    data.update(changes)
    return data


def refused(validate, *fields):
    with pytest.raises(ValidationError) as e:
        validate()
    msg = str(e.value)
    for f in fields:
        assert f in msg, f"{f!r} not in {msg}"
    return msg


# ----------------------------------------------------------------------------- ints
INT_FIELDS = [
    # (a validator taking the value, the field's name in the message)
    (lambda v: SamplerSpec(steps=v), "steps"),
    (lambda v: FlowMoSpec.model_validate(tiny(image_size=v)), "image_size"),
    (lambda v: FlowMoSpec.model_validate(tiny(patch_size=v)), "patch_size"),
    (lambda v: FlowMoSpec.model_validate(tiny(code_length=v)), "code_length"),
    (lambda v: FlowMoSpec.model_validate(tiny(code_channels=v)), "code_channels"),
    (lambda v: MMDiTSpec(**backbone(width=v)), "width"),
    (lambda v: MMDiTSpec(**backbone(heads=v)), "heads"),
    (lambda v: MMDiTSpec(**backbone(depth=v)), "depth"),
    (lambda v: MMDiTSpec(**backbone(axes_dim=(v, 14, 14))), "axes_dim"),
    (lambda v: LFQSpec(group_bits=v), "group_bits"),
    (lambda v: FSQSpec(levels=(v, 5)), "levels"),
    (lambda v: ModeSeekingSpec(k=v), "k"),
]


@pytest.mark.parametrize("make, field", INT_FIELDS)
@pytest.mark.parametrize("value", [True, False, np.True_, "3", " 4 ", "1_000", "8", b"8"])
def test_int_fields_refuse_booleans_and_strings(make, field, value):
    refused(lambda: make(value), field)


def test_bool_refusal_says_why():
    msg = refused(lambda: SamplerSpec(steps=True), "steps", "boolean")
    assert "expected an integer" in msg


@pytest.mark.parametrize("make, field", INT_FIELDS)
def test_int_fields_refuse_fractions_and_non_finite(make, field):
    for v in (1.5, math.nan, math.inf):
        refused(lambda: make(v), field)


def test_int_fields_accept_ints_numpy_ints_and_integral_floats():
    assert SamplerSpec(steps=3).steps == 3
    assert SamplerSpec(steps=np.int64(3)).steps == 3
    s = SamplerSpec(steps=3.0)  # YAML's 1e2 is a float: an integral float is accepted, stored as an int
    assert s.steps == 3 and type(s.steps) is int
    assert MMDiTSpec(**backbone(axes_dim=(4.0, 14, 14))).axes_dim == (4, 14, 14)


@pytest.mark.parametrize("make, field, bound", [
    (lambda v: SamplerSpec(steps=v), "steps", MAX_SAMPLER_STEPS),
    (lambda v: FlowMoSpec.model_validate(tiny(image_size=v)), "image_size", MAX_IMAGE_SIZE),
    (lambda v: FlowMoSpec.model_validate(tiny(patch_size=v)), "patch_size", MAX_IMAGE_SIZE),
    (lambda v: FlowMoSpec.model_validate(tiny(code_length=v)), "code_length", MAX_TOKENS),
    (lambda v: FlowMoSpec.model_validate(tiny(code_channels=v)), "code_channels", MAX_TOKENS),
    (lambda v: MMDiTSpec(**backbone(width=v)), "width", MAX_WIDTH),
    (lambda v: MMDiTSpec(**backbone(heads=v)), "heads", MAX_WIDTH),
    (lambda v: MMDiTSpec(**backbone(depth=v)), "depth", MAX_DEPTH),
    (lambda v: ModeSeekingSpec(k=v), "k", MAX_CHAIN_STEPS),
])
def test_sizes_have_upper_bounds(make, field, bound):
    for v in (bound + 1, 2**63, 2**64, 10**30):
        refused(lambda: make(v), field, str(bound))


def test_upper_bounds_are_accepted():
    assert SamplerSpec(steps=MAX_SAMPLER_STEPS).steps == MAX_SAMPLER_STEPS
    assert ModeSeekingSpec(k=MAX_CHAIN_STEPS).k == MAX_CHAIN_STEPS
    assert MMDiTSpec(**backbone(depth=MAX_DEPTH)).depth == MAX_DEPTH


def test_huge_entries_of_tuples_are_refused():
    refused(lambda: MMDiTSpec(**backbone(axes_dim=(2**63, 14, 14))), "axes_dim")
    refused(lambda: FSQSpec(levels=(2**63, 5)), "levels")
    refused(lambda: FSQSpec(levels=(2,) * 63), "levels", "2**62")


def test_decode_sampler_dict_with_huge_steps_is_refused():
    model = flowmo.build(flowmo.flowmo_tiny())
    with pytest.raises(ValidationError, match="steps"):
        model._sampler_spec({"steps": 2**63})
    with pytest.raises(ValidationError, match="steps"):
        model._sampler_spec({"steps": True})


# ----------------------------------------------------------------------------- bools
BOOL_FIELDS = [
    (lambda v: SamplerSpec(clip=v), "clip"),
    (lambda v: MMDiTSpec(**backbone(qkv_bias=v)), "qkv_bias"),
    (lambda v: MMDiTSpec(**backbone(gradient_checkpointing=v)), "gradient_checkpointing"),
    (lambda v: ModeSeekingSpec(checkpoint=v), "checkpoint"),
]


@pytest.mark.parametrize("make, field", BOOL_FIELDS)
@pytest.mark.parametrize("value", ["no", "off", "false", "true", "yes", 0, 1, 0.0, None])
def test_bool_fields_accept_only_true_and_false(make, field, value):
    refused(lambda: make(value), field, "true or false")


@pytest.mark.parametrize("make, field", BOOL_FIELDS)
def test_bool_fields_accept_booleans(make, field):
    for v in (True, False, np.False_):
        make(v)


# ----------------------------------------------------------------------------- floats
FLOAT_FIELDS = [
    (lambda v: MMDiTSpec(**backbone(mlp_ratio=v)), "mlp_ratio"),
    (lambda v: MMDiTSpec(**backbone(rope_theta=v)), "rope_theta"),
    (lambda v: MMDiTSpec(**backbone(attn_scale=v)), "attn_scale"),
    (lambda v: MMDiTSpec(**backbone(time_factor=v)), "time_factor"),
    (lambda v: LFQSpec(temperature=v), "temperature"),
    (lambda v: LFQSpec(entropy_weight=v), "entropy_weight"),
    (lambda v: GuidanceSpec(scale=v), "scale"),
    (lambda v: GuidanceSpec(interval=(v, 0.9)), "interval"),
    (lambda v: ModeSeekingSpec(weight=v), "weight"),
    (lambda v: ModeSeekingSpec(flow_weight=v), "flow_weight"),
    (lambda v: FlowMoSpec.model_validate(tiny(time_sampler={"name": "fat_logit_normal", "std": v})), "std"),
    (lambda v: FlowMoSpec.model_validate(tiny(flow_loss={"name": "rectified_flow", "cfg_dropout": v})), "cfg_dropout"),
]


@pytest.mark.parametrize("make, field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [True, False, "0.5", "1e-3", "inf", "nan", math.nan, math.inf, -math.inf])
def test_float_fields_refuse_booleans_strings_and_non_finite(make, field, value):
    refused(lambda: make(value), field)


def test_float_fields_accept_ints():
    assert MMDiTSpec(**backbone(mlp_ratio=2)).mlp_ratio == 2.0
    assert GuidanceSpec(scale=3).scale == 3.0
    assert MMDiTSpec(**backbone(attn_scale=1)).softmax_scale == 1.0
    assert MMDiTSpec(**backbone(attn_scale="standard")).attn_scale == "standard"


def test_mlp_ratio_range():
    refused(lambda: MMDiTSpec(**backbone(mlp_ratio=MAX_MLP_RATIO * 2)), "mlp_ratio", str(int(MAX_MLP_RATIO)))
    refused(lambda: MMDiTSpec(**backbone(mlp_ratio=1e-4)), "mlp_ratio", ">= 1")
    assert MMDiTSpec(**backbone(mlp_ratio=1 / 128)).mlp_ratio == 1 / 128


@pytest.mark.parametrize("sig", [5, "ab", [1], [1, 2, 3], [True, 2], ["0.1", "1"], [0.1, math.inf],
                                 [math.nan, 1.0], [-1, 1], [2, 1]])
def test_guidance_interval_sigma_is_checked(sig):
    with pytest.raises(ValidationError, match="interval_sigma"):
        GuidanceSpec(interval_sigma=sig)


def test_guidance_interval_sigma_still_works():
    g = GuidanceSpec(interval_sigma=(0.17, 1.02))
    assert g.interval == pytest.approx((0.17 / 1.17, 1.02 / 2.02))
    assert GuidanceSpec(interval_sigma=None).interval is None


def test_presets_still_validate():
    for name in flowmo.PRESETS:
        spec = flowmo.get_preset(name)
        assert FlowMoSpec.model_validate_json(spec.to_json()) == spec


# ----------------------------------------------------------------------------- loss_terms
class _DeclaringQuantizerSpec(QuantizerSpec):
    """A user quantizer whose loss_terms() returns whatever the test sets in ``declared``."""

    name: Literal["test_declaring_q"] = "test_declaring_q"
    declared: ClassVar[object] = []

    def loss_terms(self):
        return type(self).declared


class _DeclaringFlowSpec(FlowLossSpec):
    name: Literal["test_declaring_flow"] = "test_declaring_flow"
    declared: ClassVar[object] = []

    def loss_terms(self):
        return type(self).declared


class _DeclaringPosttrainSpec(PosttrainSpec):
    name: Literal["test_declaring_post"] = "test_declaring_post"
    declared: ClassVar[object] = []

    def loss_terms(self):
        return type(self).declared


@pytest.fixture
def declaring():
    regs = [(flowmo.QUANTIZERS, "test_declaring_q", _DeclaringQuantizerSpec),
            (flowmo.FLOW_LOSSES, "test_declaring_flow", _DeclaringFlowSpec),
            (flowmo.POSTTRAIN_OBJECTIVES, "test_declaring_post", _DeclaringPosttrainSpec)]
    for reg, name, spec in regs:
        reg.add(name, lambda spec, **wiring: None, spec=spec)  # only the spec is used here
    try:
        yield
    finally:
        for reg, name, spec in regs:
            reg.unregister(name)
            spec.declared = []


def _spec(part: str) -> FlowMoSpec:
    field = {"quantizer": "quantizer", "flow": "flow_loss", "post": "posttrain"}[part]
    name = {"quantizer": "test_declaring_q", "flow": "test_declaring_flow", "post": "test_declaring_post"}[part]
    return FlowMoSpec.model_validate(tiny(**{field: {"name": name}}))


BAD_DECLARATIONS = [
    ("abc", "list of LossTerm"),
    (5, "list of LossTerm"),
    ({"a": 1.0}, "list of LossTerm"),
    (LossTerm("a", 1.0, "x"), "one LossTerm"),
    (["just a string"], "entry 0"),
    ([{"name": "a", "weight": 1.0, "what": "x"}], "entry 0"),
    ([("a", 1.0)], "entry 0"),
    ([LossTerm("a", math.nan, "x")], "finite"),
    ([LossTerm("a", math.inf, "x")], "finite"),
    ([LossTerm("a", True, "x")], "finite"),
    ([LossTerm("a", "0.5", "x")], "finite"),
    ([LossTerm("a", 10**400, "x")], "finite"),
    ([LossTerm(5, 1.0, "x")], "name"),
    ([LossTerm("", 1.0, "x")], "name"),
    ([LossTerm("a", 1.0, None)], "description"),
    ([LossTerm("a", 1.0, "x"), LossTerm("a", 2.0, "y")], "twice"),
]


@pytest.mark.parametrize("part, field", [("quantizer", "quantizer"), ("flow", "flow_loss"), ("post", "posttrain")])
@pytest.mark.parametrize("declared, words", BAD_DECLARATIONS)
def test_malformed_declarations_are_refused(declaring, part, field, declared, words):
    cls = {"quantizer": _DeclaringQuantizerSpec, "flow": _DeclaringFlowSpec, "post": _DeclaringPosttrainSpec}[part]
    cls.declared = declared
    spec = _spec(part)
    with pytest.raises(ValueError) as e:
        spec.loss_terms("1b")
    msg = str(e.value)
    assert field in msg and "test_declaring" in msg and words in msg, msg


def test_triples_and_numpy_weights_are_accepted(declaring):
    _DeclaringQuantizerSpec.declared = [("a", np.float32(0.5), "x"), ["b", 2, "y"], LossTerm("c", 0.0, "z")]
    terms = _spec("quantizer").loss_terms("1a")
    q = [t for t in terms if t.name.startswith("quantizer/")]
    assert q == [LossTerm("quantizer/a", 0.5, "x"), LossTerm("quantizer/b", 2.0, "y"), LossTerm("quantizer/c", 0.0, "z")]
    assert all(type(t) is LossTerm and type(t.weight) is float for t in terms)


def test_a_name_declared_by_two_components_is_refused(declaring):
    _DeclaringPosttrainSpec.declared = [LossTerm("diffusion", 1.0, "mine")]
    spec = _spec("post")
    with pytest.raises(ValueError, match="'diffusion'.*flow_loss 'rectified_flow'"):
        spec.loss_terms("1b")
    spec.loss_terms("1a")  # the post-training objective is not part of stage 1A
    # with flow_weight 0 the flow loss's terms are not part of stage 1B: no collision
    assert [t.name for t in spec.replace(posttrain={"name": "test_declaring_post", "flow_weight": 0.0}).loss_terms("1b")] \
        == ["quantizer/entropy", "quantizer/commitment", "diffusion"]

    _DeclaringFlowSpec.declared = [LossTerm("quantizer/entropy", 1.0, "mine")]
    with pytest.raises(ValueError, match="quantizer 'lfq'.*'quantizer/entropy'.*flow_loss 'test_declaring_flow'"):
        _spec("flow").loss_terms("1a")

    _DeclaringPosttrainSpec.declared = [LossTerm("quantizer/commitment", 1.0, "mine")]
    with pytest.raises(ValueError, match="posttrain 'test_declaring_post'.*'quantizer/commitment'"):
        _spec("post").loss_terms("1b")


def test_none_still_means_undeclared(declaring):
    _DeclaringFlowSpec.declared = None
    with pytest.raises(ValueError, match="does not declare"):
        _spec("flow").loss_terms("1a")


@pytest.mark.parametrize("stage", ["1c", 1, None, ["1a"]])
def test_loss_terms_stage_is_checked(stage):
    with pytest.raises(ValueError, match="stage"):
        flowmo.flowmo_tiny().loss_terms(stage)


def test_builtin_declarations_unchanged():
    spec = flowmo.flowmo_tiny()
    assert [t.name for t in spec.loss_terms("1a")] == ["diffusion", "quantizer/entropy", "quantizer/commitment"]
    assert [t.name for t in spec.loss_terms("1b")] == ["diffusion", "quantizer/entropy", "quantizer/commitment",
                                                       "mode_seeking"]
