"""The generic registry and the per-kind registries: one-line registration, derived specs,
explicit specs, re-registration, wiring, interfaces, build."""

from typing import Annotated, Literal, Optional

import pytest
import torch
from pydantic import Field, ValidationError

import flowmo
from flowmo import Registry, RegistryError
from flowmo.quantizers import Quantizer, QuantizerOutput
from flowmo.registry import UnknownComponentError
from flowmo.samplers import TimeGrid


@pytest.fixture
def cleanup():
    """Names registered by a test, removed afterwards: [(registry, name), ...]."""
    added = []
    yield added
    for reg, name in added:
        if name in reg:
            reg.unregister(name)


class _Sign(Quantizer):
    """A sign quantizer with a derived spec: ``scale`` and ``flip`` are its configuration."""

    def __init__(self, *, scale: float = 1.0, flip: bool = False, tag: Optional[str] = None,
                 widths: tuple[int, ...] = (1, 2), channels: int):
        super().__init__()
        self.scale, self.flip, self.tag, self.widths = scale, flip, tag, widths
        self.channels, self.codebook_size = channels, 2**channels

    def forward(self, z):
        q = torch.where(z > 0, 1.0, -1.0).to(z.dtype)
        return QuantizerOutput(q + (z - z.detach()), self.codes_to_indices(q))

    def codes_to_indices(self, codes):
        return ((codes > 0).long() << torch.arange(self.channels)).sum(-1)

    def indices_to_codes(self, indices):
        return ((indices[..., None] >> torch.arange(self.channels)) & 1).float() * 2 - 1


# ----------------------------------------------------------------------------- the generic registry
def test_register_get_build_create_and_list():
    reg = Registry("widget")

    @reg.register("alpha")
    def alpha(*, x: int = 1):
        return ("alpha", x)

    @reg.register("beta")
    def beta():
        return "beta"

    assert reg.build({"name": "alpha", "x": 3}) == ("alpha", 3)
    assert reg.build("alpha") == ("alpha", 1)
    assert reg.create("alpha", x=5) == ("alpha", 5)  # the raw factory call
    assert reg.get("beta").factory() == "beta"
    assert reg.names() == ["alpha", "beta"] and reg.names("a*") == ["alpha"]
    assert "alpha" in reg and len(reg) == 2 and list(reg) == ["alpha", "beta"]
    assert [e.name for e in reg.entries()] == ["alpha", "beta"]


def test_unknown_names_and_bad_names_fail_clearly():
    reg = Registry("widget")
    reg.register("alpha")(lambda: 1)
    with pytest.raises(UnknownComponentError, match=r"unknown widget 'gamma'; registered: alpha.*--import") as e:
        reg.get("gamma")
    assert (e.value.kind, e.value.name) == ("widget", "gamma") and isinstance(e.value, ValueError)
    with pytest.raises(RegistryError, match="non-empty"):
        reg.register("")
    with pytest.raises(RegistryError, match="class or factory"):
        reg.add("x", 3)
    reg.unregister("alpha")
    assert "alpha" not in reg


# ----------------------------------------------------------------------------- derived specs
def test_one_line_registration_derives_the_spec_from_keyword_only_arguments(cleanup):
    flowmo.QUANTIZERS.register("test_reg_sign")(_Sign)
    cleanup.append((flowmo.QUANTIZERS, "test_reg_sign"))
    entry = flowmo.QUANTIZERS.get("test_reg_sign")
    assert entry.derived and entry.fields == ("scale", "flip", "tag", "widths")
    assert entry.module == __name__ and not entry.builtin
    spec_cls = entry.spec
    assert issubclass(spec_cls, flowmo.QuantizerSpec)
    assert set(spec_cls.model_fields) == {"name", "scale", "flip", "tag", "widths"}  # no wiring (channels)
    s = spec_cls()
    assert (s.name, s.scale, s.flip, s.tag, s.widths) == ("test_reg_sign", 1.0, False, None, (1, 2))
    # by name wherever a quantizer is taken, and through JSON
    spec = flowmo.flowmo_tiny().replace(quantizer={"name": "test_reg_sign", "scale": 2, "widths": [3]})
    assert type(spec.quantizer) is spec_cls and spec.quantizer.scale == 2.0 and spec.quantizer.widths == (3,)
    assert flowmo.FlowMoSpec.from_json(spec.to_json()) == spec
    # build passes the fields as keyword arguments, plus the wiring
    q = flowmo.QUANTIZERS.build(spec.quantizer, channels=5)
    assert isinstance(q, _Sign) and (q.scale, q.widths, q.channels) == (2.0, (3,), 5)
    model = flowmo.build(spec)
    assert isinstance(model.quantizer, _Sign) and model.quantizer.channels == spec.code_channels


def test_derived_specs_are_strict_and_forbid_unknown_fields(cleanup):
    flowmo.QUANTIZERS.register("test_reg_sign")(_Sign)
    cleanup.append((flowmo.QUANTIZERS, "test_reg_sign"))
    ok = {"name": "test_reg_sign"}
    for bad, where in [({"scale": True}, "scale"), ({"scale": "2"}, "scale"), ({"flip": 1}, "flip"),
                       ({"widths": [True]}, "widths"), ({"other": 1}, "other"), ({"scale": float("nan")}, "scale")]:
        with pytest.raises(ValidationError, match=where):
            flowmo.QuantizerSpec.model_validate({**ok, **bad})


def test_a_kind_base_called_with_a_name_is_the_registered_spec():
    assert type(flowmo.QuantizerSpec(name="fsq", levels=(4, 4))) is flowmo.FSQSpec
    assert flowmo.SolverSpec(name="heun") == flowmo.SolverSpec.model_validate({"name": "heun"})
    assert type(flowmo.PerceptualSpec(name="l1")) is flowmo.PERCEPTUAL_DISTANCES.spec_type("l1")


@pytest.mark.parametrize("make,match", [
    (lambda: (lambda x: 0), "'x' must be keyword-only"),
    (lambda: (lambda *, x: 0), "'x' has no type annotation"),
    (lambda: _fn_with_name, "'name' is reserved"),
    (lambda: _fn_with_bad_default, "default value 0 of 'k' is invalid for its annotation: Input should be greater than 0"),
    (lambda: _fn_with_tensor_arg, "cannot form a spec"),
])
def test_derived_spec_registration_refuses_what_cannot_be_a_spec(make, match):
    reg = Registry("widget")
    with pytest.raises(RegistryError, match=match):
        reg.add("w", make())
    assert "w" not in reg


def _fn_with_name(*, name: str = "a"):
    return name


def _fn_with_bad_default(*, k: Annotated[int, Field(gt=0)] = 0):
    return k


def _fn_with_tensor_arg(*, t: torch.Tensor = None):
    return t


# ----------------------------------------------------------------------------- explicit specs
class _WidgetSpec(flowmo.QuantizerSpec):
    name: Literal["test_reg_explicit"] = "test_reg_explicit"
    scale: float = 1.0


def test_explicit_spec_must_be_of_the_kind_and_named_alike(cleanup):
    with pytest.raises(RegistryError, match=r"spec PowGridSpec must be a subclass of flowmo\.spec\.QuantizerSpec"):
        flowmo.QUANTIZERS.add("test_reg_explicit", _Sign, spec=flowmo.PowGridSpec)
    with pytest.raises(RegistryError, match="must be a subclass of flowmo.spec.QuantizerSpec"):
        flowmo.QUANTIZERS.add("test_reg_explicit", _Sign, spec=dict)
    with pytest.raises(RegistryError, match="must default to 'other'"):
        flowmo.QUANTIZERS.add("other", _Sign, spec=_WidgetSpec)
    assert "test_reg_explicit" not in flowmo.QUANTIZERS and "other" not in flowmo.QUANTIZERS

    @flowmo.QUANTIZERS.register("test_reg_explicit", spec=_WidgetSpec)
    def make(spec, *, channels):  # an explicit spec: the factory gets the spec object
        return _Sign(scale=spec.scale, channels=channels)

    cleanup.append((flowmo.QUANTIZERS, "test_reg_explicit"))
    q = flowmo.QUANTIZERS.build({"name": "test_reg_explicit", "scale": 4}, channels=3)
    assert isinstance(q, _Sign) and q.scale == 4.0 and q.channels == 3


# ----------------------------------------------------------------------------- re-registration
def test_registering_the_same_object_again_is_harmless(cleanup):
    flowmo.QUANTIZERS.register("test_reg_sign")(_Sign)
    cleanup.append((flowmo.QUANTIZERS, "test_reg_sign"))
    spec_cls = flowmo.QUANTIZERS.spec_type("test_reg_sign")
    flowmo.QUANTIZERS.register("test_reg_sign")(_Sign)  # a module imported twice, a cell run twice
    assert flowmo.QUANTIZERS.spec_type("test_reg_sign") is spec_cls


CELL = '''
import flowmo
from flowmo.samplers import TimeGrid

@flowmo.TIME_GRIDS.register("test_reg_cell")
class CellGrid(TimeGrid):
    def __init__(self, *, power: float = VALUE):
        self.power = power
    def __call__(self, steps):
        return self.fractions(steps) ** self.power
'''


def test_a_notebook_cell_run_twice_replaces_its_own_registration(cleanup):
    cleanup.append((flowmo.TIME_GRIDS, "test_reg_cell"))
    first, second = {"__name__": "notebook"}, {"__name__": "notebook"}
    exec(CELL.replace("VALUE", "2.0"), first)
    exec(CELL.replace("VALUE", "3.0"), second)  # a new class object with the same module and name
    assert first["CellGrid"] is not second["CellGrid"]
    assert flowmo.TIME_GRIDS.get("test_reg_cell").factory is second["CellGrid"]
    assert flowmo.TIME_GRIDS.build("test_reg_cell").power == 3.0


def test_a_different_object_under_a_taken_name_is_refused_unless_replace(cleanup):
    class OtherGrid(TimeGrid):
        def __call__(self, steps):
            return self.fractions(steps)

    with pytest.raises(RegistryError, match="'pow' is already registered.*replace=True"):
        flowmo.TIME_GRIDS.register("pow")(OtherGrid)
    assert flowmo.TIME_GRIDS.get("pow").factory is flowmo.samplers.PowGrid
    flowmo.TIME_GRIDS.register("test_reg_replace")(OtherGrid)
    cleanup.append((flowmo.TIME_GRIDS, "test_reg_replace"))

    class ThirdGrid(OtherGrid):
        pass

    with pytest.raises(RegistryError, match="already registered"):
        flowmo.TIME_GRIDS.register("test_reg_replace")(ThirdGrid)
    flowmo.TIME_GRIDS.register("test_reg_replace", replace=True)(ThirdGrid)
    assert flowmo.TIME_GRIDS.get("test_reg_replace").factory is ThirdGrid


# ----------------------------------------------------------------------------- wiring and interfaces
def test_each_kind_declares_its_wiring_and_interface():
    assert flowmo.QUANTIZERS.wiring == ("channels",)
    assert flowmo.BACKBONES.wiring == ("patch_dim", "txt_in_dim", "txt_out_dim")
    for key in ("time_sampler", "flow_loss", "time_grid", "solver", "posttrain", "perceptual"):
        assert flowmo.REGISTRIES[key].wiring == ()
    assert flowmo.QUANTIZERS.interface is Quantizer and flowmo.TIME_GRIDS.interface is TimeGrid
    for reg in flowmo.REGISTRIES.values():
        assert reg.interface is not None and issubclass(reg.spec_base, flowmo.spec.ComponentSpec)
        for entry in reg.entries():
            assert issubclass(entry.spec, reg.spec_base)


def test_wiring_is_required_at_registration_and_exact_at_build(cleanup):
    class NoChannels(_Sign):
        def __init__(self, *, scale: float = 1.0):
            super().__init__(scale=scale, channels=2)

    with pytest.raises(RegistryError, match="must take the keyword argument.*channels"):
        flowmo.QUANTIZERS.register("test_reg_nochan")(NoChannels)
    flowmo.QUANTIZERS.register("test_reg_sign")(_Sign)
    cleanup.append((flowmo.QUANTIZERS, "test_reg_sign"))
    with pytest.raises(TypeError, match="missing channels"):
        flowmo.QUANTIZERS.build("test_reg_sign")
    with pytest.raises(TypeError, match="unexpected extra"):
        flowmo.QUANTIZERS.build("test_reg_sign", channels=2, extra=1)
    with pytest.raises(TypeError, match="must be a QuantizerSpec"):
        flowmo.QUANTIZERS.build(flowmo.PowGridSpec(), channels=2)


def test_a_class_must_derive_from_the_interface_and_a_factory_must_return_one(cleanup):
    class NotAQuantizer(torch.nn.Module):
        def __init__(self, *, channels: int):
            super().__init__()

    with pytest.raises(RegistryError, match=r"must derive from flowmo\.quantizers\.base\.Quantizer"):
        flowmo.QUANTIZERS.register("test_reg_notq")(NotAQuantizer)

    @flowmo.QUANTIZERS.register("test_reg_factory")
    def factory(*, channels: int):
        return torch.nn.Identity()

    cleanup.append((flowmo.QUANTIZERS, "test_reg_factory"))
    with pytest.raises(TypeError, match="returned an Identity, which is not a flowmo.quantizers.base.Quantizer"):
        flowmo.QUANTIZERS.build("test_reg_factory", channels=2)


# ----------------------------------------------------------------------------- the built-ins
def test_builtin_components_are_registered():
    assert {"lfq", "fsq"} <= set(flowmo.QUANTIZERS)
    assert {"uniform", "logit_normal", "fat_logit_normal"} <= set(flowmo.TIME_SAMPLERS)
    assert {"linear", "pow", "shifted"} <= set(flowmo.TIME_GRIDS)
    assert {"euler", "heun"} <= set(flowmo.SOLVERS)
    assert {"mse", "l1", "lpips_vgg", "lpips_alex", "resnet50_logits", "ssim"} <= set(flowmo.PERCEPTUAL_DISTANCES)
    assert "mmdit" in flowmo.BACKBONES and "rectified_flow" in flowmo.FLOW_LOSSES
    assert "mode_seeking" in flowmo.POSTTRAIN_OBJECTIVES
    assert set(flowmo.REGISTRIES) == {"backbone", "quantizer", "time_sampler", "flow_loss", "time_grid",
                                      "solver", "posttrain", "perceptual", "generator"}
    assert {"maskgit", "autoregressive"} <= set(flowmo.GENERATORS)
    for reg in flowmo.REGISTRIES.values():
        for entry in reg.entries():
            assert entry.builtin == entry.module.startswith("flowmo."), entry
    assert flowmo.QUANTIZERS.get("lfq").builtin and flowmo.TIME_GRIDS.get("linear").builtin


def test_the_package_has_one_registration_style():
    """Every built-in is registered with the decorator (no `.add(` calls, no spec classes written
    only to name a component)."""
    import pathlib
    import re

    root = pathlib.Path(flowmo.__file__).parent
    for path in root.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b[A-Z_]+\.add\(", text), path
        assert not re.search(r"\b[A-Z_]+\.create\(", text), path  # build() validates spec and wiring
