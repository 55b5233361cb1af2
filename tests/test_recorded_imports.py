"""A saved model whose component was registered under a built-in name by a user module must
not load silently as the built-in: loading checks the modules config.json records."""

import importlib
import json
import sys

import pytest

import flowmo
from flowmo.folders.imports import check_recorded_modules
from flowmo.samplers import PowGrid, build_grid
from flowmo.spec import PowGridSpec

MODULE = "test_rec_override_pow"
SOURCE = '''
import flowmo
from flowmo.samplers import TimeGrid

@flowmo.TIME_GRIDS.register("pow", replace=True)
class SquarePow(TimeGrid):
    """Another grid under the built-in name."""
    def __init__(self, *, p: float = 0.25):
        self.p = p
    def __call__(self, steps):
        return self.fractions(steps) ** 2
'''


def _restore_builtin_pow():
    flowmo.TIME_GRIDS.add("pow", PowGrid, spec=PowGridSpec, replace=True)


@pytest.fixture
def override(tmp_path, monkeypatch):
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(MODULE, None)
    try:
        yield lambda: importlib.import_module(MODULE)
    finally:
        sys.modules.pop(MODULE, None)
        _restore_builtin_pow()


def _tiny():
    return flowmo.flowmo_tiny().replace(encoder={"depth": 1}, decoder={"depth": 1})


def test_a_replaced_builtin_name_does_not_load_as_the_builtin(override, tmp_path):
    override()
    assert flowmo.TIME_GRIDS.get("pow").module == MODULE
    spec = flowmo.FlowMoSpec.from_json(_tiny().to_json())  # the grid "pow" is the user's now
    folder = flowmo.build(spec).save_pretrained(tmp_path / "model")
    assert json.loads((folder / "config.json").read_text())["imports"] == [MODULE]

    # a fresh process: the built-in "pow" is registered and the module is not imported
    _restore_builtin_pow()
    sys.modules.pop(MODULE)
    with pytest.raises(ValueError, match=f"records the module {MODULE} .*not imported: import it first "
                                         f"\\(Python: import {MODULE}; flowmo commands: --import {MODULE}\\)"):
        flowmo.FlowMo.from_pretrained(folder)

    override()  # imported: the user's grid again
    model = flowmo.FlowMo.from_pretrained(folder)
    assert type(build_grid(model.spec.sampler.grid)).__name__ == "SquarePow"


def test_a_folder_saved_with_the_builtin_refuses_a_replacement(override, tmp_path):
    folder = flowmo.build(_tiny()).save_pretrained(tmp_path / "plain")
    assert "imports" not in json.loads((folder / "config.json").read_text())
    override()
    with pytest.raises(ValueError, match=f"its time grid 'pow' is registered now by the module {MODULE}, but the "
                                         "file was saved with flowmo's built-in time grid 'pow'"):
        flowmo.FlowMo.from_pretrained(folder)
    _restore_builtin_pow()
    assert isinstance(build_grid(flowmo.FlowMo.from_pretrained(folder).spec.sampler.grid), PowGrid)


def test_a_recorded_module_that_registers_none_of_the_components_is_refused(override, tmp_path):
    override()
    _restore_builtin_pow()  # the module is imported, but the built-in replaced its grid again
    with pytest.raises(ValueError, match=f"records the module\\(s\\) {MODULE} .*none of its components is "
                                         "registered by them now"):
        check_recorded_modules(_tiny(), [MODULE], "config.json")
