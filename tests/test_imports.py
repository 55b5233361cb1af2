"""Your components everywhere: a module registering a quantizer and a time grid is used by
`flowmo train` and `flowmo reconstruct` through --import; the saved folder records the module
in config.json, loads in a fresh process that imports it, and names it when it is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import flowmo
from flowmo.cli import build_parser
from flowmo.folders.imports import component_modules, import_modules

from conftest import HANG_GUARD_S

MODULE = "e2e_user_components"
SOURCE = textwrap.dedent('''
    """A user's components: a ternary quantizer and a cosine time grid, one line each to register."""
    import math

    import torch

    import flowmo
    from flowmo.quantizers import Quantizer, QuantizerOutput
    from flowmo.samplers import TimeGrid


    @flowmo.QUANTIZERS.register("e2e_ternary")
    class Ternary(Quantizer):
        def __init__(self, *, commit_weight: float = 0.01, channels: int):
            super().__init__()
            self.commit_weight, self.channels, self.codebook_size = commit_weight, channels, 3**channels
            self.register_buffer("_basis", 3 ** torch.arange(channels), persistent=False)

        def forward(self, z):
            b = torch.tanh(z.float())
            q = torch.round(b)
            values = (b + (q - b).detach()).to(z.dtype)
            losses = {"commitment": self.commit_weight * (b - q.detach()).pow(2).mean()}
            return QuantizerOutput(values, self.codes_to_indices(q), losses)

        def codes_to_indices(self, codes):
            return ((torch.round(codes.float()).long() + 1) * self._basis).sum(-1)

        def indices_to_codes(self, indices):
            return ((indices.long()[..., None] // self._basis) % 3).float() - 1


    @flowmo.TIME_GRIDS.register("e2e_cosine")
    class CosineGrid(TimeGrid):
        def __init__(self, *, sharpness: float = 1.0):
            self.sharpness = sharpness

        def __call__(self, steps):
            u = self.fractions(steps) ** self.sharpness
            t = (1 - torch.cos(math.pi * u)) / 2
            t[0], t[-1] = 1.0, 0.0
            return t
''')


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("user_components")
    (root / "mods").mkdir()
    (root / "mods" / f"{MODULE}.py").write_text(SOURCE)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, size=(36, 40, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    return root


def _env(*extra: Path) -> dict:
    env = dict(os.environ)
    paths = [str(p) for p in extra] + [str(Path(__file__).resolve().parents[1])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _flowmo(args: list, cwd: Path, *paths: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flowmo", *map(str, args)], cwd=cwd, env=_env(*paths),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)


def _config(images: Path) -> str:
    return textwrap.dedent(f"""
        model:
          preset: tiny
          code_channels: 6
          quantizer: {{name: e2e_ternary, commit_weight: 0.02}}
          sampler: {{steps: 2, grid: {{name: e2e_cosine, sharpness: 1.5}}}}
        train:
          steps: 2
          seed: 1
          data: {{folder: {json.dumps(str(images))}}}
          optim: {{batch_size: 2}}
          checkpoint: {{every: 2}}
          log: {{every: 1, images_every: 1000, tensorboard: false, progress: false}}
          eval: {{enabled: false}}
    """)


def test_train_reconstruct_and_load_a_model_with_user_components(workspace, tmp_path):
    mods = workspace / "mods"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(_config(workspace / "images"))
    # without --import the config's components are unknown, and the message says what to do
    r = _flowmo(["train", "--config", cfg, "--out", tmp_path / "bad"], tmp_path, mods)
    assert r.returncode == 2 and "e2e_ternary" in r.stderr and "--import" in r.stderr, r.stderr
    r = _flowmo(["train", "--import", MODULE, "--config", cfg, "--out", tmp_path / "run", "--export",
                 tmp_path / "model"], tmp_path, mods)
    assert r.returncode == 0, r.stderr
    # the run's config and the model folder record the module
    assert json.loads((tmp_path / "run" / "config.json").read_text())["imports"] == [MODULE]
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["imports"] == [MODULE]
    assert saved["quantizer"] == {"name": "e2e_ternary", "commit_weight": 0.02}
    assert saved["sampler"]["grid"] == {"name": "e2e_cosine", "sharpness": 1.5}

    r = _flowmo(["reconstruct", "--import", MODULE, "--model", tmp_path / "model", "--input",
                 workspace / "images" / "img0.png", "--output", tmp_path / "out"], tmp_path, mods)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out" / "img0.png").is_file()

    # a fresh process that imports the module named in config.json loads the folder
    code = textwrap.dedent(f"""
        import importlib, json, flowmo
        for m in json.load(open({str(tmp_path / 'model' / 'config.json')!r}))["imports"]:
            importlib.import_module(m)
        model = flowmo.FlowMo.from_pretrained({str(tmp_path / 'model')!r})
        print(type(model.quantizer).__name__, model.spec.sampler.grid.sharpness, model.spec.bits_per_pixel)
    """)
    r = subprocess.run([sys.executable, "-c", code], env=_env(mods), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 0, r.stderr
    name, sharpness, bpp = r.stdout.split()
    assert (name, float(sharpness)) == ("Ternary", 1.5)
    assert float(bpp) == pytest.approx(16 * 6 * np.log2(3) / 32**2)  # bits per token: log2(3**6)

    # without the import, loading names the module to import (the CLI and Python alike)
    r = _flowmo(["reconstruct", "--model", tmp_path / "model", "--input", workspace / "images" / "img0.png",
                 "--output", tmp_path / "out2"], tmp_path, mods)
    assert r.returncode == 2
    assert f"--import {MODULE}" in r.stderr and "'e2e_ternary'" in r.stderr, r.stderr
    r = _flowmo(["export", tmp_path / "run", "--output", tmp_path / "model2"], tmp_path, mods)
    assert r.returncode == 2 and f"--import {MODULE}" in r.stderr, r.stderr
    r = _flowmo(["export", "--import", MODULE, tmp_path / "run", "--output", tmp_path / "model2"], tmp_path, mods)
    assert r.returncode == 0, r.stderr
    # a module that does not exist is named
    r = _flowmo(["reconstruct", "--import", "no_such_module_xyz", "--model", tmp_path / "model", "--input",
                 workspace / "images" / "img0.png", "--output", tmp_path / "out3"], tmp_path, mods)
    assert r.returncode == 2 and "no module named 'no_such_module_xyz'" in r.stderr, r.stderr


def test_a_config_file_can_list_modules_to_import(workspace, tmp_path, monkeypatch):
    from flowmo.train.config import load_config

    monkeypatch.syspath_prepend(str(workspace / "mods"))
    text = _config(workspace / "images")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"imports: [{MODULE}]\n" + text)
    try:
        config = load_config(cfg)
        assert config.imports == (MODULE,)
        assert config.model.quantizer.name == "e2e_ternary"
        assert component_modules(config.model) == [MODULE]
        with pytest.raises(ValueError, match="imports: 'not a module' is not a module name"):
            load_config({"imports": ["not a module"], "model": "tiny"})
    finally:
        for reg, name in ((flowmo.QUANTIZERS, "e2e_ternary"), (flowmo.TIME_GRIDS, "e2e_cosine")):
            if name in reg:
                reg.unregister(name)
        sys.modules.pop(MODULE, None)


def test_save_records_only_non_builtin_modules_and_loading_names_them(tmp_path):
    model = flowmo.build(flowmo.flowmo_tiny())
    model.save_pretrained(tmp_path / "plain")
    assert "imports" not in json.loads((tmp_path / "plain" / "config.json").read_text())  # unchanged format
    # a folder naming an unknown component, with and without recorded modules
    raw = json.loads((tmp_path / "plain" / "config.json").read_text())
    raw["quantizer"] = {"name": "not_registered_vq"}
    for imports, expected in ((["my_pkg.vq"], "--import my_pkg.vq"), (None, "--import MODULE")):
        folder = tmp_path / f"unknown{imports is None}"
        model.save_pretrained(folder)
        (folder / "config.json").write_text(json.dumps({**raw, **({"imports": imports} if imports else {})}))
        with pytest.raises(ValueError, match="quantizer 'not_registered_vq'") as e:
            flowmo.FlowMo.from_pretrained(folder)
        assert expected in str(e.value)
    (folder / "config.json").write_text(json.dumps({**raw, "imports": "my_pkg"}))
    with pytest.raises(ValueError, match="must be a list of module names"):
        flowmo.FlowMo.from_pretrained(folder)


def test_a_component_defined_in_main_is_saved_with_a_warning(tmp_path):
    namespace = {"__name__": "__main__"}
    exec(SOURCE.replace("e2e_ternary", "main_ternary").replace("e2e_cosine", "main_cosine"), namespace)
    try:
        spec = flowmo.flowmo_tiny().replace(code_channels=6, quantizer={"name": "main_ternary"})
        assert component_modules(spec) == ["__main__"]
        with pytest.warns(UserWarning, match="defined in __main__"):
            flowmo.build(spec).save_pretrained(tmp_path / "m")
        assert "imports" not in json.loads((tmp_path / "m" / "config.json").read_text())
        assert flowmo.FlowMo.from_pretrained(tmp_path / "m").spec == spec  # loads where it is registered
    finally:
        flowmo.QUANTIZERS.unregister("main_ternary")
        flowmo.TIME_GRIDS.unregister("main_cosine")


def test_every_cli_command_takes_import():
    from flowmo.cli.eval import add_parser as eval_parser
    from flowmo.cli.train import add_parser as _train_parser

    for command in ("reconstruct", "tokenize", "detokenize", "convert"):
        args = build_parser().parse_args([command, "--import", "a.b", "--import", "c", *_required(command)])
        assert args.imports == ["a.b", "c"], command
    assert _train_parser().parse_args(["--out", "x", "--import", "m"]).imports == ["m"]
    assert eval_parser().parse_args(["--model", "m", "--data", "builtin", "--import", "m"]).imports == ["m"]
    r = subprocess.run([sys.executable, "-m", "flowmo", "export", "--help"], env=_env(), capture_output=True,
                       text=True, timeout=HANG_GUARD_S)
    assert r.returncode == 0 and "--import MODULE" in r.stdout


def _required(command: str) -> list:
    return {"reconstruct": ["--model", "m", "--input", "i", "--output", "o"],
            "tokenize": ["--model", "m", "--input", "i", "--output", "o"],
            "detokenize": ["--model", "m", "--tokens", "t", "--output", "o"],
            "convert": ["--checkpoint", "c", "--output", "o"]}[command]


def test_import_modules_checks_names_and_reports_failures(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="is not a module name"):
        import_modules(["bad name"])
    with pytest.raises(TypeError, match="list of module names"):
        import_modules("flowmo")  # a string is not a list of names
    with pytest.raises(ValueError, match="no module named 'no_such_pkg_q'"):
        import_modules(["no_such_pkg_q.sub"])
    (tmp_path / "broken_components_q.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError, match="broken_components_q: importing it raised RuntimeError: boom"):
        import_modules(["broken_components_q"])
    assert import_modules(["json", "json", "flowmo.testing"]) == ["json", "flowmo.testing"]
