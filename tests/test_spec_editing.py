"""Editing specs (issue 15, item 6): ``replace`` merges nested dicts into nested specs and
refuses unknown keys by name; naming another component drops the old one's fields;
``interval`` / ``interval_sigma`` replace each other; the training config's file and
``--set`` overrides have exactly these semantics."""

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

import flowmo
from flowmo import FlowMoSpec, FSQSpec, GuidanceSpec, LFQSpec, MMDiTSpec, SamplerSpec
from flowmo.samplers import SAMPLER_PRESETS
from flowmo.spec import PowGridSpec, ShiftedGridSpec, SolverSpec, merge_data, replace_spec
from flowmo.train.config import apply_overrides, load_config

TINY_BACKBONE = dict(width=128, heads=4, axes_dim=(4, 14, 14))  # flowmo_tiny's encoder/decoder, but depth


def custom_sampler_spec() -> FlowMoSpec:
    """tiny with a sampler that differs from SamplerSpec's defaults in every part."""
    return flowmo.flowmo_tiny().model_copy(update={"sampler": SamplerSpec(
        steps=12, grid=ShiftedGridSpec(shift=2.0), solver=SolverSpec(name="heun"),
        guidance=GuidanceSpec(scale=2.5, interval=(0.1, 0.6)), clip=False)})


# ----------------------------------------------------------------------------- nested merges
def test_replace_merges_a_dict_into_the_nested_spec():
    spec = flowmo.flowmo_tiny()
    out = spec.replace(encoder={"depth": 3})
    assert out.encoder == MMDiTSpec(depth=3, **TINY_BACKBONE)
    assert out.decoder == spec.decoder and out.quantizer == spec.quantizer and out.sampler == spec.sampler


def test_replace_sampler_steps_keeps_solver_grid_and_guidance():
    spec = custom_sampler_spec()
    s = spec.replace(sampler={"steps": 4}).sampler
    assert s == SamplerSpec(steps=4, grid=ShiftedGridSpec(shift=2.0), solver=SolverSpec(name="heun"),
                            guidance=GuidanceSpec(scale=2.5, interval=(0.1, 0.6)), clip=False)


def test_replace_merges_two_levels_deep():
    spec = custom_sampler_spec()
    g = spec.replace(sampler={"guidance": {"scale": 1.25}}).sampler.guidance
    assert g == GuidanceSpec(scale=1.25, interval=(0.1, 0.6))  # the interval is kept
    assert spec.replace(sampler={"grid": {"shift": 4.0}}).sampler.grid == ShiftedGridSpec(shift=4.0)


def test_a_spec_object_replaces_the_field_whole():
    spec = custom_sampler_spec()
    assert spec.replace(sampler=SamplerSpec(steps=3)).sampler == SamplerSpec(steps=3)
    assert spec.replace(quantizer=LFQSpec(group_bits=6)).quantizer == LFQSpec(group_bits=6)


def test_lists_and_scalars_replace_whole():
    spec = flowmo.flowmo_tiny().replace(code_channels=6, quantizer={"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]})
    assert spec.replace(quantizer={"levels": [3, 3, 3, 3, 3, 3]}).quantizer.levels == (3, 3, 3, 3, 3, 3)
    assert spec.replace(code_length=8).code_length == 8


def test_a_dict_into_a_field_that_is_none_starts_from_nothing():
    spec = flowmo.flowmo_tiny()
    assert spec.flow_loss.perceptual is None
    fl = spec.replace(flow_loss={"perceptual": {"name": "l1"}}).flow_loss
    assert fl.perceptual.name == "l1" and fl.cfg_dropout == spec.flow_loss.cfg_dropout
    assert spec.replace(flow_loss={"perceptual": "l1"}).flow_loss == fl  # a name means {"name": ...}
    assert fl.replace(perceptual=None) == spec.flow_loss


# ----------------------------------------------------------------------------- component switches
def test_switching_the_quantizer_drops_the_old_fields():
    spec = flowmo.flowmo_tiny()  # LFQ, group_bits 9
    out = spec.replace(code_channels=6, quantizer={"name": "fsq"})
    assert out.quantizer == FSQSpec(levels=(8, 8, 8, 5, 5, 5)) and type(out.quantizer) is FSQSpec
    assert spec.replace(code_channels=6, quantizer="fsq") == out
    given_levels = spec.replace(code_channels=2, quantizer={"name": "fsq", "levels": [4, 4]})
    assert given_levels.quantizer == FSQSpec(levels=(4, 4))


def test_switching_back_gives_the_new_components_defaults_not_the_old_fields():
    spec = flowmo.flowmo_tiny().replace(quantizer={"temperature": 0.5})
    fsq = spec.replace(code_channels=6, quantizer="fsq")
    back = fsq.replace(code_channels=18, quantizer="lfq")
    assert back.quantizer == LFQSpec() and back.quantizer.temperature == 0.1


def test_the_same_name_keeps_the_fields():
    spec = flowmo.flowmo_tiny().replace(quantizer={"temperature": 0.5})
    assert spec.replace(quantizer={"name": "lfq", "commit_weight": 0.0}).quantizer == \
        LFQSpec(group_bits=9, temperature=0.5, commit_weight=0.0)
    assert spec.replace(quantizer="lfq").quantizer == spec.quantizer


def test_switching_a_nested_component():
    spec = flowmo.flowmo_tiny().replace(sampler={"grid": {"p": 0.5}})
    assert spec.replace(sampler={"grid": {"name": "shifted"}}).sampler.grid == ShiftedGridSpec(shift=3.0)
    assert spec.replace(sampler={"grid": {"name": "shifted", "shift": 1.5}}).sampler.grid == ShiftedGridSpec(shift=1.5)
    assert spec.replace(sampler={"solver": "heun"}).sampler.solver == SolverSpec(name="heun")


# ----------------------------------------------------------------------------- alternatives
def test_interval_sigma_replaces_interval():
    spec = flowmo.flowmo_tiny()
    g = spec.replace(sampler={"guidance": {"interval_sigma": [0.2, 1.0]}}).sampler.guidance
    assert g.interval == pytest.approx((0.2 / 1.2, 1.0 / 2.0)) and g.scale == 1.5
    assert spec.replace(sampler={"guidance": {"interval_sigma": None}}).sampler.guidance.interval is None


def test_interval_replaces_interval_sigma_in_a_config_file():
    raw = {"model": {"preset": "tiny", "sampler": {"guidance": {"interval_sigma": [0.2, 1.0]}}}, "train": {"steps": 2}}
    assert load_config(raw).model.sampler.guidance.interval == pytest.approx((0.2 / 1.2, 0.5))
    c = load_config(raw, ["model.sampler.guidance.interval=[0.1,0.3]"])
    assert c.model.sampler.guidance.interval == (0.1, 0.3)
    full = {"model": {**flowmo.flowmo_tiny().model_dump(mode="json")}, "train": {"steps": 2}}
    full["model"]["sampler"]["guidance"] = {"interval_sigma": [0.2, 1.0]}
    assert load_config(full, ["model.sampler.guidance.interval=[0.1,0.3]"]).model.sampler.guidance.interval == (0.1, 0.3)


def test_both_alternatives_in_one_change_are_refused():
    with pytest.raises(ValidationError, match="not both"):
        flowmo.flowmo_tiny().replace(sampler={"guidance": {"interval": [0.1, 0.2], "interval_sigma": [0.1, 0.2]}})


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("changes, words", [
    ({"extra_field": 1}, ["FlowMoSpec", "'extra_field'", "code_length"]),
    ({"encoder": {"dpth": 3}}, ["encoder", "'dpth'", "backbone 'mmdit'", "depth"]),
    ({"sampler": {"guidance": {"intervl": [0, 1]}}}, ["sampler.guidance", "'intervl'", "interval_sigma"]),
    ({"sampler": {"stepz": 3, "clipp": True}}, ["sampler", "'stepz', 'clipp'", "fields"]),
    ({"code_channels": 6, "quantizer": {"name": "fsq", "group_bits": 3}}, ["quantizer", "'fsq'", "'group_bits'", "levels"]),
    ({"sampler": {"grid": {"name": "linear", "p": 2}}}, ["sampler.grid", "'linear'", "'p'"]),
])
def test_unknown_keys_are_refused_naming_them(changes, words):
    with pytest.raises(ValueError) as e:
        flowmo.flowmo_tiny().replace(**changes)
    assert not isinstance(e.value, ValidationError)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_invalid_results_are_validation_errors_naming_the_field():
    with pytest.raises(ValidationError, match="unknown quantizer 'rvq'"):
        flowmo.flowmo_tiny().replace(quantizer={"name": "rvq"})
    with pytest.raises(ValidationError, match="levels has 6 entries but code_channels is 18"):
        flowmo.flowmo_tiny().replace(quantizer="fsq")
    with pytest.raises(ValidationError, match="depth"):
        flowmo.flowmo_tiny().replace(encoder={"depth": 0})
    with pytest.raises(ValidationError, match="unknown sampler preset 'slow'"):
        flowmo.flowmo_tiny().replace(sampler="slow")


def test_replace_spec_argument_types():
    with pytest.raises(TypeError, match="changes must be a mapping"):
        replace_spec(flowmo.flowmo_tiny(), [("code_length", 8)])
    with pytest.raises(TypeError, match="spec must be a spec"):
        replace_spec({"code_length": 8}, {})
    with pytest.raises(TypeError, match="sampler: the changes must be a mapping"):
        merge_data(SamplerSpec, {}, "fast", where="sampler")


def test_component_and_sampler_specs_have_replace():
    spec = flowmo.flowmo_tiny()
    assert spec.quantizer.replace(group_bits=6) == LFQSpec(group_bits=6)
    assert spec.sampler.replace(steps=2) == SamplerSpec(steps=2)
    assert type(spec.quantizer.replace(name="fsq", levels=[5, 5])) is FSQSpec
    assert spec.replace() == spec


def test_decode_sampler_dicts_merge_the_same_way():
    model = flowmo.build(custom_sampler_spec()).eval()
    code = model.tokens_to_code(torch_zeros_tokens(model))
    assert model._sampler_spec({"steps": 4}) == model.spec.sampler.replace(steps=4)
    assert model._sampler_spec({"guidance": {"scale": 1.0}}).guidance.interval == (0.1, 0.6)
    out = model.decode(code, sampler={"steps": 3, "guidance": {"scale": 1.0}})
    assert out.decoder_calls == 2 * 3  # heun kept: two calls per step, no guidance


def torch_zeros_tokens(model):
    import torch

    return torch.zeros(1, model.spec.code_length, dtype=torch.int64)


# ----------------------------------------------------------------------------- property
def _deep_merge(base: dict, changes: dict) -> dict:
    """A plain recursive dict merge, written independently of flowmo.spec.merge_data."""
    out = copy.deepcopy(base)
    for k, v in changes.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_backbone_changes = st.fixed_dictionaries({}, optional={
    "depth": st.integers(0, 3), "mlp_ratio": st.sampled_from([0.5, 2.0, -1.0]), "qkv_bias": st.booleans(),
    "attn_scale": st.sampled_from(["mup", "standard", 0.5]), "rope_theta": st.sampled_from([100.0, 0.0]),
})
_changes = st.fixed_dictionaries({}, optional={
    "code_length": st.integers(0, 20),
    "patch_size": st.sampled_from([2, 3, 4]),
    "encoder": _backbone_changes,
    "decoder": _backbone_changes,
    "quantizer": st.fixed_dictionaries({}, optional={
        "group_bits": st.sampled_from([3, 6, 9, 7]), "temperature": st.sampled_from([0.05, 1.0, 0.0])}),
    "time_sampler": st.fixed_dictionaries({}, optional={
        "mean": st.floats(-1, 1), "uniform_fraction": st.sampled_from([0.0, 0.5, 2.0])}),
    "flow_loss": st.fixed_dictionaries({}, optional={"cfg_dropout": st.sampled_from([0.0, 0.3, 1.5])}),
    "sampler": st.fixed_dictionaries({}, optional={
        "steps": st.integers(0, 40), "clip": st.booleans(),
        "grid": st.fixed_dictionaries({}, optional={"p": st.sampled_from([0.25, 0.5, -1.0])}),
        "guidance": st.fixed_dictionaries({}, optional={
            "scale": st.floats(0, 4), "interval": st.sampled_from([None, (0.1, 0.9), (0.9, 0.1)])}),
    }),
    "posttrain": st.fixed_dictionaries({}, optional={"k": st.integers(0, 9), "weight": st.sampled_from([0.0, 0.5])}),
})


@given(_changes)
@settings(max_examples=150, deadline=None)
def test_replace_with_nested_dicts_equals_validating_the_merged_dict(changes):
    spec = flowmo.flowmo_tiny()
    try:
        expected = FlowMoSpec.model_validate(_deep_merge(spec.model_dump(), changes))
    except ValidationError:
        with pytest.raises(ValidationError):
            spec.replace(**changes)
        return
    assert spec.replace(**changes) == expected


# ----------------------------------------------------------------------------- the training config
BASE = {"model": "tiny", "train": {"steps": 2}}


def test_set_interval_sigma_on_a_preset():  # the example
    c = load_config(BASE, ["model.sampler.guidance.interval_sigma=[0.2,1.0]"])
    assert c.model.sampler.guidance == GuidanceSpec(scale=1.5, interval=(0.2 / 1.2, 0.5))
    assert c.model.sampler.steps == 25 and c.model.sampler.grid == PowGridSpec(p=0.25)


@pytest.mark.parametrize("order", [0, 1])
def test_set_quantizer_name_fsq(order):  # the example (with code channels FSQ's 6 levels fit)
    sets = ["model.quantizer.name=fsq", "model.code_channels=6"]
    c = load_config(BASE, sets[::-1] if order else sets)
    assert c.model.quantizer == FSQSpec(levels=(8, 8, 8, 5, 5, 5)) and c.model.code_channels == 6
    c = load_config(BASE, ["model.quantizer.name=fsq", "model.quantizer.levels=[4,4]", "model.code_channels=2"])
    assert c.model.quantizer == FSQSpec(levels=(4, 4))
    # in order: before the switch, levels is not a field of the preset's LFQ
    with pytest.raises(ValueError, match="quantizer 'lfq'.*unknown field 'levels'"):
        load_config(BASE, ["model.quantizer.levels=[4,4]", "model.quantizer.name=fsq"])


def test_set_quantizer_name_fsq_is_not_refused_for_lfqs_fields():
    with pytest.raises(ValidationError) as e:
        load_config(BASE, ["model.quantizer.name=fsq"])  # tiny has 18 channels; FSQ's default levels are 6
    msg = str(e.value)
    assert "levels has 6 entries but code_channels is 18" in msg and "group_bits" not in msg


def test_set_sampler_steps_keeps_the_files_solver_and_grid():
    raw = {"model": {"preset": "tiny", "sampler": {"solver": {"name": "heun"}, "grid": {"name": "shifted", "shift": 2.0}}},
           "train": {"steps": 2}}
    s = load_config(raw, ["model.sampler.steps=4"]).model.sampler
    assert s == SamplerSpec(steps=4, solver=SolverSpec(name="heun"), grid=ShiftedGridSpec(shift=2.0))


def test_file_overrides_of_a_preset_switch_components():
    raw = {"model": {"preset": "tiny", "code_channels": 6, "quantizer": {"name": "fsq"}}, "train": {"steps": 2}}
    assert load_config(raw).model.quantizer == FSQSpec()


@pytest.mark.parametrize("overrides", [
    ["model.sampler.guidance.interval_sigma=[0.2,1.0]"],
    ["model.code_channels=6", "model.quantizer={name: fsq}"],
    ["model.encoder={depth: 2}", "model.sampler.solver=heun"],
    ["model.sampler={steps: 3, grid: {name: shifted}}", "model.sampler.grid.shift=1.5"],
    ["model.sampler=fast", "model.sampler.steps=5"],
    ["model.flow_loss.perceptual.name=l1"],
    ["model.quantizer=fsq", "model.quantizer.levels=[3,3]", "model.code_channels=2"],
])
def test_set_has_exactly_the_semantics_of_replace(overrides):
    """Each override is one FlowMoSpec.replace of the nested change it spells, in order."""
    from flowmo.train.config import parse_yaml

    got = load_config(BASE, overrides).model
    data = flowmo.flowmo_tiny().model_dump()
    for item in overrides:
        path, text = item.split("=", 1)
        change = parse_yaml(text)
        for k in reversed(path.split(".")[1:]):
            change = {k: change}
        data = merge_data(FlowMoSpec, data, change)  # replace's merge; validated once, as load_config does
    assert got == FlowMoSpec.model_validate(data)
    if len(overrides) == 1:
        assert got == flowmo.flowmo_tiny().replace(**change)


@pytest.mark.parametrize("item, words", [
    ("model.encoder.dpth=3", ["'model.encoder.dpth=3'", "model.encoder", "'dpth'"]),
    ("model.sampler.guidance.intervl=[0,1]", ["model.sampler.guidance", "'intervl'"]),
    ("train.optim.lrr=1", ["train.optim", "'lrr'"]),
    ("nope=1", ["'nope'"]),
    ("model.preset=small", ["model=NAME"]),
])
def test_set_unknown_keys_are_refused_naming_them(item, words):
    with pytest.raises(ValueError) as e:
        apply_overrides(BASE, [item])
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_file_unknown_model_keys_are_refused_naming_them():
    with pytest.raises(ValidationError, match="model.encoder .*'dpth'"):
        load_config({"model": {"preset": "tiny", "encoder": {"dpth": 3}}, "train": {"steps": 2}})


def test_set_model_to_a_preset_name_replaces_the_model():
    c = load_config(BASE, ["model.code_length=8", "model=small", "model.code_length=4"])
    assert c.model == flowmo.flowmo_small().replace(code_length=4)


def test_sampler_preset_names_in_configs():
    assert load_config({"model": {"preset": "tiny", "sampler": "fast"}, "train": {"steps": 2}}).model.sampler == \
        SAMPLER_PRESETS["fast"]
