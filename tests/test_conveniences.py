"""Small conveniences (issue 15, item 7): ``build`` takes a preset name; ``from_pretrained``
on one of the folder's files says to pass the folder; sampler presets by name wherever a
sampler is accepted; the grid and solver builders take dicts and names; device mistakes
raise ValueError naming the argument."""

import pytest
import torch
from pydantic import ValidationError

import flowmo
from flowmo import FlowMo, SamplerSpec
from flowmo.samplers import SAMPLER_PRESETS, Euler, Heun, LinearGrid, PowGrid, ShiftedGrid, build_grid, build_solver, sample
from flowmo.spec import PowGridSpec, SolverSpec


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_model")
    torch.manual_seed(0)
    flowmo.build("tiny").save_pretrained(d)
    return d


# ----------------------------------------------------------------------------- build
@pytest.mark.parametrize("name", ["tiny", "small"])  # the larger presets are looked up the same way
def test_build_takes_a_preset_name(name):
    assert flowmo.build(name).spec == flowmo.get_preset(name)


def test_build_still_takes_specs_dicts_and_json():
    spec = flowmo.flowmo_tiny()
    assert flowmo.build(spec.to_json()).spec == spec
    assert flowmo.build(spec.model_dump()).spec == spec
    assert flowmo.build("  " + spec.to_json()).spec == spec


def test_build_refuses_other_strings_and_types():
    with pytest.raises(ValueError, match=r"'tinyy' is neither a preset name \(flowmo_lo, flowmo_hi, tiny"):
        flowmo.build("tinyy")
    with pytest.raises(ValidationError):
        flowmo.build("{not json")
    with pytest.raises(TypeError, match="preset name"):
        flowmo.build(5)


# ----------------------------------------------------------------------------- from_pretrained
@pytest.mark.parametrize("file", ["model.safetensors", "config.json"])
def test_from_pretrained_on_a_file_of_the_folder_says_it_wants_the_folder(folder, file):
    with pytest.raises(ValueError) as e:
        FlowMo.from_pretrained(folder / file)
    msg = str(e.value)
    assert f"is the {file} of a tokenizer model folder" in msg and f"pass the folder {str(folder)!r}" in msg
    with pytest.raises(ValueError, match="pass the folder"):
        FlowMo.from_pretrained(str(folder / file))


def test_from_pretrained_on_another_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match=r"is a file flowmo does not know, not a tokenizer model folder \(config.json "
                                         r"\+ model.safetensors\)"):
        FlowMo.from_pretrained(f)


def test_from_pretrained_argument_types(folder):
    with pytest.raises(TypeError, match="directory must be a model folder path"):
        FlowMo.from_pretrained(5)
    with pytest.raises(TypeError, match="dtype must be a floating-point torch.dtype"):
        FlowMo.from_pretrained(folder, dtype="float16")
    with pytest.raises(TypeError, match="dtype"):
        FlowMo.from_pretrained(folder, dtype=torch.int64)
    assert FlowMo.from_pretrained(folder, dtype=torch.float64).dtype == torch.float64


def test_load_model_takes_the_config_file_too(folder):
    from flowmo.cli.io import load_model

    assert load_model(folder / "config.json").spec == load_model(folder).spec == flowmo.flowmo_tiny()


# ----------------------------------------------------------------------------- sampler presets
def test_sampler_spec_validates_a_preset_name():
    for name, preset in SAMPLER_PRESETS.items():
        assert SamplerSpec.model_validate(name) == preset
    with pytest.raises(ValidationError, match="unknown sampler preset 'slow'; available: release, fast"):
        SamplerSpec.model_validate("slow")


def test_decode_with_a_preset_name(folder):
    model = FlowMo.from_pretrained(folder)
    code = model.tokens_to_code(torch.zeros(2, model.spec.code_length, dtype=torch.int64))
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    by_name = model.decode(code, sampler="fast", generator=g())
    by_spec = model.decode(code, sampler=SAMPLER_PRESETS["fast"], generator=g())
    assert torch.equal(by_name.images, by_spec.images)
    # 8 steps on (k/8)**4: the evaluations at t = 1, .586, .316, .153, .0625, ... of which
    # .316 and .153 lie in the guidance interval (.145, .505): 8 + 2 calls
    assert by_name.decoder_calls == 10
    assert torch.equal(model.reconstruct(torch.zeros(1, 3, 32, 32), sampler="release", generator=g()),
                       model.reconstruct(torch.zeros(1, 3, 32, 32), sampler=SamplerSpec(), generator=g()))
    with pytest.raises(TypeError, match="sampler preset name"):
        model.decode(code, sampler=8)


def test_sample_and_specs_take_preset_names(monkeypatch):
    noise = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    cond = torch.zeros(2, 1, 2)
    decoder = lambda x, t, c: x - 0.5  # noqa: E731
    a = sample(decoder, noise, cond, "fast")
    b = sample(decoder, noise, cond, SAMPLER_PRESETS["fast"])
    assert torch.equal(a.images, b.images) and a.decoder_calls == 10
    monkeypatch.setitem(SAMPLER_PRESETS, "mine", SamplerSpec(steps=2, guidance={"scale": 1.0}))
    assert sample(decoder, noise, cond, "mine").decoder_calls == 2  # a user's preset
    assert flowmo.flowmo_tiny().replace(sampler="mine").sampler.steps == 2
    with pytest.raises(TypeError, match="sampler preset name"):
        sample(decoder, noise, cond, 3)


# ----------------------------------------------------------------------------- grid and solver builders
def test_build_grid_takes_dicts_and_names():
    fractions = torch.tensor([4, 3, 2, 1, 0], dtype=torch.float64) / 4
    assert isinstance(build_grid({"name": "pow", "p": 0.5}), PowGrid)
    assert torch.allclose(build_grid({"name": "pow", "p": 0.5})(4), fractions**2)
    assert torch.equal(build_grid("linear")(4), fractions) and isinstance(build_grid("linear"), LinearGrid)
    assert isinstance(build_grid({"name": "shifted", "shift": 2.0}), ShiftedGrid)
    assert torch.equal(build_grid(PowGridSpec(p=0.5))(4), build_grid({"name": "pow", "p": 0.5})(4))


def test_build_solver_takes_dicts_and_names():
    assert isinstance(build_solver({"name": "heun"}), Heun) and isinstance(build_solver("euler"), Euler)
    assert isinstance(build_solver(SolverSpec(name="heun")), Heun)


@pytest.mark.parametrize("build, bad, err, words", [
    (build_grid, 3, TypeError, "TimeGridSpec, a dict of its fields or the name of a registered time grid"),
    (build_grid, {"name": "cosine"}, ValueError, "unknown time grid 'cosine'"),
    (build_grid, {"name": "pow", "p": -1}, ValueError, "p"),
    (build_grid, {"name": "pow", "q": 1}, ValueError, "q"),
    (build_solver, ["heun"], TypeError, "SolverSpec, a dict of its fields or the name of a registered ODE solver"),
    (build_solver, "rk4", ValueError, "unknown ODE solver 'rk4'"),
])
def test_builders_refuse_bad_specs(build, bad, err, words):
    with pytest.raises(err, match=words):
        build(bad)


# ----------------------------------------------------------------------------- devices
BAD_DEVICES = [("gpu", "unknown device 'gpu'"), ("cuda:x", "unknown device 'cuda:x'"), ("", "unknown device ''"),
               (1.5, "got float 1.5"), (True, "got bool True"), (-1, "non-negative"), (["cpu"], "got list")]
UNAVAILABLE = "cuda:99"  # not on any machine the tests run on


@pytest.mark.parametrize("device, words", BAD_DEVICES + [(UNAVAILABLE, "not available")])
def test_from_pretrained_device_mistakes(folder, device, words):
    with pytest.raises(ValueError) as e:
        FlowMo.from_pretrained(folder, device=device)
    assert str(e.value).startswith("device") and words in str(e.value)


@pytest.mark.parametrize("device, words", BAD_DEVICES + [(UNAVAILABLE, "not available")])
def test_load_model_and_resolve_device_mistakes(folder, device, words):
    from flowmo.cli.io import load_model, resolve_device

    with pytest.raises(ValueError, match="device"):
        load_model(folder, device=device)
    with pytest.raises(ValueError) as e:
        resolve_device(device, argument="--device")
    assert str(e.value).startswith("--device") and words in str(e.value)


def test_good_devices_are_accepted(folder):
    from flowmo.cli.io import resolve_device

    assert FlowMo.from_pretrained(folder, device="cpu").device == torch.device("cpu")
    assert FlowMo.from_pretrained(folder, device=torch.device("cpu")).device == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu") and resolve_device(None).type in ("cpu", "cuda", "mps")
    assert resolve_device("auto") == resolve_device(None)


@pytest.mark.parametrize("device", ["gpu", 2.0, UNAVAILABLE])
def test_evaluator_device_mistakes(device):
    from flowmo.metrics import Evaluator, evaluate_model

    with pytest.raises(ValueError, match="^device"):
        Evaluator(lpips=(), fid=False, device=device)
    with pytest.raises(ValueError, match="^device"):
        evaluate_model(lambda x: x, torch.zeros(1, 3, 8, 8), evaluator=Evaluator(lpips=(), fid=False), device=device,
                       progress=False)


@pytest.mark.parametrize("device, words", [("gpu", "unknown device 'gpu'"), ("cuda:", "unknown device"),
                                           (5, "valid string")])
def test_train_device_is_checked_when_the_config_is_validated(device, words):
    from flowmo.train.config import load_config

    with pytest.raises(ValidationError) as e:
        load_config({"model": "tiny", "train": {"steps": 2, "device": device}})
    assert "train.device" in str(e.value) and words in str(e.value)
    for ok in ("auto", "cpu", "cuda", "cuda:1", "mps"):  # spelling only: presence is checked by the Trainer
        assert load_config({"model": "tiny", "train": {"steps": 2, "device": ok}}).train.device == ok


def test_trainer_refuses_an_unavailable_device(tmp_path):
    from flowmo.train import Trainer
    from flowmo.train.config import load_config

    if torch.cuda.device_count() > 98:
        pytest.skip("this machine has cuda:99")
    cfg = load_config({"model": "tiny", "train": {"steps": 1, "device": UNAVAILABLE}})
    with pytest.raises(ValueError, match="train.device 'cuda:99' is not available"):
        Trainer(cfg, tmp_path / "run", log=lambda s: None)


def test_eval_cli_sampler_takes_a_preset_name_and_merges_edits():
    import argparse

    from flowmo.cli.eval import sampler_from_args

    model = flowmo.build(flowmo.flowmo_tiny().replace(sampler={"solver": "heun", "guidance": {"scale": 2.0}}))

    def args(**kw):
        base = dict(sampler=None, steps=None, solver=None, grid=None, cfg_scale=None)
        return argparse.Namespace(**{**base, **kw})

    assert sampler_from_args(model, args(sampler="fast")) == SAMPLER_PRESETS["fast"]
    assert sampler_from_args(model, args(sampler="fast", steps=3)) == SAMPLER_PRESETS["fast"].replace(steps=3)
    s = sampler_from_args(model, args(sampler='{"guidance": {"scale": 1.5}}', steps=4))
    assert s == SamplerSpec(steps=4, solver=SolverSpec(name="heun"), guidance={"scale": 1.5})  # heun and interval kept
    assert sampler_from_args(model, args(cfg_scale=1.0)).guidance.interval == model.spec.sampler.guidance.interval
    with pytest.raises(ValueError, match="invalid sampler settings: (.|\n)*unknown sampler preset 'slow'"):
        sampler_from_args(model, args(sampler="slow"))
    with pytest.raises(ValueError, match="invalid sampler settings: .*'stepz'"):
        sampler_from_args(model, args(sampler='{"stepz": 3}'))
