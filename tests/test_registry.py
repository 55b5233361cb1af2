"""The generic registry and the per-kind registries."""

import pytest

import flowmo
from flowmo import Registry, RegistryError


def test_register_get_create_and_list():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(x=1):
        return ("alpha", x)

    reg.add("beta", lambda: "beta")
    assert reg.create("alpha", x=3) == ("alpha", 3)
    assert reg.get("beta").factory() == "beta"
    assert reg.names() == ["alpha", "beta"] and reg.names("a*") == ["alpha"]
    assert "alpha" in reg and len(reg) == 2 and list(reg) == ["alpha", "beta"]


def test_duplicate_and_unknown_names_fail_clearly():
    reg = Registry("widget")
    reg.add("alpha", object)
    with pytest.raises(RegistryError, match="already registered"):
        reg.add("alpha", object)
    with pytest.raises(RegistryError, match=r"unknown widget 'gamma'; registered: alpha"):
        reg.get("gamma")
    with pytest.raises(RegistryError, match="non-empty"):
        reg.register("")
    reg.unregister("alpha")
    assert "alpha" not in reg


def test_spec_name_must_match_registration():
    from flowmo.spec import LFQSpec

    reg = Registry("quantizer")
    with pytest.raises(RegistryError, match="must default to 'other'"):
        reg.add("other", object, spec=LFQSpec)
    with pytest.raises(RegistryError, match="'name' field"):
        reg.add("x", object, spec=dict)


def test_builtin_components_are_registered():
    assert {"lfq", "fsq"} <= set(flowmo.QUANTIZERS)
    assert {"uniform", "logit_normal", "fat_logit_normal"} <= set(flowmo.TIME_SAMPLERS)
    assert {"linear", "pow", "shifted"} <= set(flowmo.TIME_GRIDS)
    assert {"euler", "heun"} <= set(flowmo.SOLVERS)
    assert {"mse", "l1"} <= set(flowmo.PERCEPTUAL_DISTANCES)
    assert "mmdit" in flowmo.BACKBONES and "rectified_flow" in flowmo.FLOW_LOSSES
    assert "mode_seeking" in flowmo.POSTTRAIN_OBJECTIVES
    assert set(flowmo.REGISTRIES) == {"backbone", "quantizer", "time_sampler", "flow_loss", "time_grid",
                                      "solver", "posttrain", "perceptual"}
