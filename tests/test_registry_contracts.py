"""Registration contracts a break-it review found open: what a derived spec may hold (JSON data,
finite defaults, frozen and hashable), strict numbers everywhere a number is expected, explicit
specs the factory must accept, reserved argument names, wiring values, registry names."""

import collections.abc
import json
import typing
from typing import Annotated, Any, Literal, Optional, Sequence

import numpy as np
import pytest
import torch
from pydantic import Field, ValidationError

import flowmo
from flowmo import Registry, RegistryError
from flowmo.quantizers import Quantizer
from flowmo.samplers import TimeGrid
from flowmo.spec import SpecFloat, TimeGridSpec


@pytest.fixture
def cleanup():
    added = []
    yield added
    for reg, name in added:
        if name in reg:
            reg.unregister(name)


def _widget(annotation: Any, default: Any = 1, arg: str = "x"):
    """A factory ``f(*, <arg>: annotation = default)`` returning its argument."""
    ns: dict = {}
    exec(f"def widget(*, {arg}: ann = default):\n    return {arg}", {"ann": annotation, "default": default}, ns)
    return ns["widget"]


# ----------------------------------------------------------------------------- 3. what a derived spec holds
@pytest.mark.parametrize("default", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("annotation", [float, Optional[float], tuple[float, ...], list[float]])
def test_a_non_finite_default_is_refused_at_registration(annotation, default):
    value = default if typing.get_origin(annotation) not in (tuple, list) else [1.0, default]
    reg = Registry("widget")
    with pytest.raises(RegistryError, match="default value .* of 'x' is invalid.*finite number"):
        reg.add("w", _widget(annotation, value))
    assert "w" not in reg


@pytest.mark.parametrize("annotation", [Any, object, torch.Tensor, torch.dtype, complex, bytes, typing.Callable,
                                        list, dict, tuple, set, Optional[Any], list[Any], dict[int, float],
                                        Literal[1.5], type])
def test_non_json_annotations_are_refused_at_registration(annotation):
    reg = Registry("widget")
    with pytest.raises(RegistryError, match="argument 'x': its annotation .* cannot form a spec.*JSON data"):
        reg.add("w", _widget(annotation, None))
    assert "w" not in reg


@pytest.mark.parametrize("annotation,default,given,stored", [
    (list[int], [1, 2], [3, 4], (3, 4)),
    (Sequence[float], (1.0,), [2, 3], (2.0, 3.0)),
    (typing.List[int], [], [5], (5,)),
    (collections.abc.MutableSequence[int], [1], [7], (7,)),
    (set[int], {1}, [2, 2, 3], frozenset({2, 3})),
    (dict[str, float], {"a": 1.0}, {"b": 2}, {"b": 2.0}),
    (Optional[list[tuple[int, int]]], None, [[1, 2]], ((1, 2),)),
])
def test_container_fields_keep_specs_frozen_hashable_and_json(cleanup, annotation, default, given, stored):
    flowmo.TIME_GRIDS.add("test_rc_cont", _grid_with(annotation, default))
    cleanup.append((flowmo.TIME_GRIDS, "test_rc_cont"))
    dflt = TimeGridSpec.model_validate({"name": "test_rc_cont"})
    hash(dflt)  # the default (a list) was converted too
    spec = TimeGridSpec.model_validate({"name": "test_rc_cont", "x": given})
    assert spec.x == stored
    hash(spec)
    assert TimeGridSpec.model_validate_json(spec.model_dump_json()) == spec
    assert TimeGridSpec.model_validate(json.loads(spec.model_dump_json())) == spec
    if isinstance(spec.x, (dict, tuple, frozenset)) and spec.x:
        with pytest.raises((TypeError, AttributeError)):
            if isinstance(spec.x, dict):
                spec.x["c"] = 1.0
            else:
                spec.x.append(1)  # type: ignore[union-attr]
    assert flowmo.TIME_GRIDS.build(spec).x == stored


def _grid_with(annotation: Any, default: Any):
    class G(TimeGrid):
        def __init__(self, *, x=default):
            self.x = x

        def __call__(self, steps):
            return self.fractions(steps)

    G.__init__.__annotations__ = {"x": annotation}
    G.__qualname__ = G.__name__ = "GridWith"
    return G


# ----------------------------------------------------------------------------- 4. strict numbers everywhere
_BAD_NUMBERS = [True, False, np.bool_(True), torch.tensor(True), "3", "1e-3", np.str_("2")]


@pytest.mark.parametrize("annotation,good", [
    (Annotated[int, Field(gt=0)], 3),
    (Annotated[float, "meta"], 0.5),
    (dict[str, float], {}),
    (typing.Mapping[str, int], {}),
    (Sequence[int], ()),
    (frozenset[float], frozenset()),
    (Literal[1, 2], 1),
    (Optional[tuple[float, ...]], None),
    (int | None, None),
])
@pytest.mark.parametrize("bad", _BAD_NUMBERS, ids=repr)
def test_booleans_and_numeric_strings_are_refused_wherever_a_number_is_expected(cleanup, annotation, good, bad):
    flowmo.TIME_GRIDS.add("test_rc_strict", _grid_with(annotation, good))
    cleanup.append((flowmo.TIME_GRIDS, "test_rc_strict"))
    origin = typing.get_origin(annotation)
    if origin in (dict, collections.abc.Mapping):
        value: Any = {"k": bad}
    elif origin in (collections.abc.Sequence, frozenset) or annotation == Optional[tuple[float, ...]]:
        value = [bad]
    else:
        value = bad
    expected = "a number" if float in _leaves(annotation) else "an integer"
    kind = "boolean" if isinstance(bad, (bool, np.bool_, torch.Tensor)) else "string"
    with pytest.raises(ValidationError, match=f"expected {expected}, got the {kind}"):
        TimeGridSpec.model_validate({"name": "test_rc_strict", "x": value})


def _leaves(tp: Any) -> set:
    args = typing.get_args(tp)
    if typing.get_origin(tp) is Literal:
        return {type(a) for a in args}
    if not args:
        return {tp}
    return set().union(*(_leaves(a) for a in args if a is not Ellipsis))


def test_a_literal_that_lists_a_boolean_still_takes_it(cleanup):
    flowmo.TIME_GRIDS.add("test_rc_lit", _grid_with(Literal[1, True, "a"], 1))
    cleanup.append((flowmo.TIME_GRIDS, "test_rc_lit"))
    assert TimeGridSpec.model_validate({"name": "test_rc_lit", "x": True}).x is True


@pytest.mark.parametrize("field,value", [
    ("code_length", torch.tensor(True)), ("code_length", torch.tensor([4])), ("code_length", np.array([4])),
    ("sampler.steps", torch.tensor(True)), ("sampler.guidance.scale", torch.tensor(True)),
    ("sampler.guidance.scale", np.array(True)), ("sampler.guidance.scale", torch.ones(2)),
])
def test_builtin_number_fields_refuse_boolean_tensors_and_arrays_of_several_numbers(field, value):
    changes: dict = {}
    node = changes
    *parents, leaf = field.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    with pytest.raises(ValidationError, match=r"expected (an integer|a number), got (the boolean|a \w+ of shape)"):
        flowmo.flowmo_tiny().replace(**changes)


def test_builtin_number_fields_take_a_zero_dimensional_tensor_as_its_number():
    spec = flowmo.flowmo_tiny().replace(sampler={"steps": torch.tensor(4), "guidance": {"scale": np.float32(1.5)}})
    assert spec.sampler.steps == 4 and type(spec.sampler.steps) is int and spec.sampler.guidance.scale == 1.5
    assert flowmo.FlowMoSpec.from_json(spec.to_json()) == spec


# ----------------------------------------------------------------------------- 6. explicit specs
class _ExSpec(TimeGridSpec):
    name: Literal["test_rc_ex"] = "test_rc_ex"
    a: SpecFloat = 1.0


class _ExSpec2(TimeGridSpec):
    name: Literal["test_rc_ex"] = "test_rc_ex"
    b: SpecFloat = 1.0


class _KwOnly(TimeGrid):
    def __init__(self, *, a: float = 1.0):
        self.a = a

    def __call__(self, steps):
        return self.fractions(steps)


class _TakesSpec(TimeGrid):
    def __init__(self, spec):
        self.spec = spec

    def __call__(self, steps):
        return self.fractions(steps)


def test_an_explicit_spec_needs_a_factory_that_takes_it(cleanup):
    with pytest.raises(RegistryError, match=r"registered with spec=_ExSpec, .*_KwOnly is called as _KwOnly\(spec\), "
                                            r"but it takes \(\*, a: float = 1.0\).*first positional argument"):
        flowmo.TIME_GRIDS.register("test_rc_ex", spec=_ExSpec)(_KwOnly)
    assert "test_rc_ex" not in flowmo.TIME_GRIDS

    class _QSpec(flowmo.QuantizerSpec):
        name: Literal["test_rc_q"] = "test_rc_q"

    def make_q(*, channels: int):
        raise AssertionError("never called")

    with pytest.raises(RegistryError, match=r"is called as make_q\(spec, channels=\.\.\.\), but it takes "
                                            r"\(\*, channels: int\)"):
        flowmo.QUANTIZERS.add("test_rc_q", make_q, spec=_QSpec)
    assert "test_rc_q" not in flowmo.QUANTIZERS


def test_the_same_factory_with_another_spec_is_another_registration(cleanup):
    flowmo.TIME_GRIDS.register("test_rc_ex", spec=_ExSpec)(_TakesSpec)
    cleanup.append((flowmo.TIME_GRIDS, "test_rc_ex"))
    flowmo.TIME_GRIDS.register("test_rc_ex", spec=_ExSpec)(_TakesSpec)  # the same again: harmless
    with pytest.raises(RegistryError, match=r"with the spec .*_ExSpec; registering it with the spec .*_ExSpec2 is a "
                                            r"different registration: pass replace=True"):
        flowmo.TIME_GRIDS.register("test_rc_ex", spec=_ExSpec2)(_TakesSpec)
    assert flowmo.TIME_GRIDS.spec_type("test_rc_ex") is _ExSpec
    with pytest.raises(RegistryError, match="a spec derived from its arguments is a different registration"):
        flowmo.TIME_GRIDS.register("test_rc_ex")(_TakesSpec.__mro__[0])
    flowmo.TIME_GRIDS.register("test_rc_ex", spec=_ExSpec2, replace=True)(_TakesSpec)
    assert flowmo.TIME_GRIDS.spec_type("test_rc_ex") is _ExSpec2


def test_a_derived_registration_switched_to_an_explicit_spec_needs_replace(cleanup):
    class NoArgs(TimeGrid):
        def __init__(self, spec=None, /):
            pass

        def __call__(self, steps):
            return self.fractions(steps)

    class NASpec(TimeGridSpec):
        name: Literal["test_rc_na"] = "test_rc_na"

    flowmo.TIME_GRIDS.register("test_rc_na")(NoArgs)
    cleanup.append((flowmo.TIME_GRIDS, "test_rc_na"))
    with pytest.raises(RegistryError, match="different registration"):
        flowmo.TIME_GRIDS.register("test_rc_na", spec=NASpec)(NoArgs)
    assert flowmo.TIME_GRIDS.get("test_rc_na").derived


# ----------------------------------------------------------------------------- 7. reserved argument names
@pytest.mark.parametrize("arg,why", [
    ("check_channels", "a method of every quantizer spec: QuantizerSpec.check_channels"),
    ("loss_terms", "a method of every quantizer spec: QuantizerSpec.loss_terms"),
    ("replace", "a method of every quantizer spec: QuantizerSpec.replace"),
    ("registry", "an attribute of every quantizer spec: QuantizerSpec.registry"),
    ("kind_base", "an attribute of every quantizer spec"),
    ("mutually_exclusive", "an attribute of every quantizer spec"),
    ("copy", "a method"), ("json", "a method"), ("validate", "a method"),
    ("model_config", "pydantic reserves names starting with 'model_'"),
    ("model_thing", "pydantic reserves names starting with 'model_'"),
    ("_private", "names starting with '_' private"),
])
def test_constructor_arguments_that_clash_with_the_spec_are_refused(arg, why):
    ns: dict = {"Quantizer": Quantizer}
    exec(f"class Q(Quantizer):\n    def __init__(self, *, channels: int, {arg}: int = 1):\n        super().__init__()",
         ns)
    with pytest.raises(RegistryError, match=rf"argument '{arg}' is reserved \(.*{why}.*\); rename it"):
        flowmo.QUANTIZERS.add("test_rc_reserved", ns["Q"])
    assert "test_rc_reserved" not in flowmo.QUANTIZERS


# ----------------------------------------------------------------------------- 8. wiring values
@pytest.mark.parametrize("value,error", [(0, ValueError), (-9, ValueError), (9.0, TypeError), ("18", TypeError),
                                         (True, TypeError), (None, TypeError), (torch.tensor(18), TypeError)])
def test_build_validates_the_sizes_it_wires(value, error):
    with pytest.raises(error, match="quantizer 'lfq': wiring argument channels must be a positive int"):
        flowmo.QUANTIZERS.build("lfq", channels=value)
    spec = {"name": "mmdit", "width": 32, "heads": 1, "depth": 1, "axes_dim": [8, 12, 12]}
    with pytest.raises(error, match="backbone 'mmdit': wiring argument txt_in_dim must be a positive int"):
        flowmo.BACKBONES.build(spec, patch_dim=48, txt_in_dim=value, txt_out_dim=4)


def test_numpy_int_wiring_is_passed_on_as_a_python_int():
    q = flowmo.QUANTIZERS.build("lfq", channels=np.int64(18))
    assert q.channels == 18 and type(q.channels) is int


def test_a_registry_declares_which_wiring_arguments_are_sizes():
    reg = Registry("widget", wiring=("size", "mode"), sizes=("size",))

    @reg.register("w")
    def w(*, size, mode):
        return (size, mode)

    assert reg.build("w", size=3, mode="fast") == (3, "fast")
    with pytest.raises(ValueError, match="wiring argument size must be a positive int"):
        reg.build("w", size=0, mode="fast")


# ----------------------------------------------------------------------------- 15. names and registries
@pytest.mark.parametrize("name", ["", " ", "a b", "x.y", "my/grid", "\n", "a" * 65, None, 3, "-x", "é"])
def test_registry_names_are_short_identifiers(name):
    reg = Registry("widget")
    with pytest.raises(RegistryError, match="name must be a non-empty string of letters, digits"):
        reg.register(name)
    assert len(reg) == 0


def test_lookups_with_odd_arguments_are_clear():
    assert ["a"] not in flowmo.QUANTIZERS and None not in flowmo.QUANTIZERS
    with pytest.raises(TypeError, match="pattern must be a shell-style wildcard string"):
        flowmo.QUANTIZERS.names(None)
    assert flowmo.QUANTIZERS.names("l*") == ["lfq"]


@pytest.mark.parametrize("kwargs,error,match", [
    ({"kind": ""}, TypeError, "kind must be a non-empty string"),
    ({"kind": "x", "wiring": "abc"}, TypeError, "wiring must be a tuple of argument names"),
    ({"kind": "x", "wiring": ("a", "a")}, ValueError, "distinct"),
    ({"kind": "x", "wiring": ("name",)}, ValueError, "other than 'name'"),
    ({"kind": "x", "interface": 3}, TypeError, "interface must be a class"),
    ({"kind": "x", "spec_base": "no colon"}, TypeError, "spec_base must be a class"),
    ({"kind": "x", "wiring": ("a",), "sizes": ("b",)}, TypeError, "sizes must be a tuple of wiring argument names"),
])
def test_registry_constructor_arguments_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        Registry(**kwargs)


def test_a_registry_naming_a_missing_class_says_so():
    with pytest.raises(TypeError, match="'nope_mod_xyz:X' a registry names cannot be imported"):
        Registry("x", interface="nope_mod_xyz:X").interface  # noqa: B018
