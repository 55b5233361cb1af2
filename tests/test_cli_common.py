"""Options every flowmo command shares, and what a new user met on the command line:

- the installed ``flowmo`` script finds ``--import`` modules (and a config's ``imports:``) in
  the current folder, as ``python -m flowmo`` does, for every command; a file name is refused
  with the module name to write;
- every subcommand takes and lists ``--debug``, ``-q/--quiet``, ``--import`` (and ``--device``
  where a model runs); the decoding commands take the same sampler options;
- ``reconstruct`` / ``tokenize`` say that they resize and crop; ``train`` without ``--config``
  names the missing ``train.steps``; the "without quotes" hint only for a quoted number."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo import cli

from conftest import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / ("flowmo.exe" if os.name == "nt" else "flowmo")
MODULE = "cwd_components_q15"
SOURCE = textwrap.dedent(f'''
    import sys

    import flowmo
    from flowmo.samplers import TimeGrid

    print("imported {MODULE}", file=sys.stderr)


    @flowmo.TIME_GRIDS.register("cwd_linear_q15")
    class CwdLinear(TimeGrid):
        def __call__(self, steps):
            return self.fractions(steps)
''')


def _env() -> dict:
    env = dict(os.environ)
    # the repository on the path (the checkout under test), never the temp folder
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _script(args: list, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=HANG_GUARD_S)


needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="the flowmo console script is not installed")


@needs_script
def test_the_console_script_imports_modules_from_the_current_folder(tmp_path):
    """Every command, and a config file's imports:, finds a module in the current folder."""
    (tmp_path / f"{MODULE}.py").write_text(SOURCE)
    missing = tmp_path / "missing"
    for args in (["reconstruct", "--model", missing, "--input", missing, "--output", tmp_path / "o"],
                 ["tokenize", "--model", missing, "--input", missing, "--output", tmp_path / "t.safetensors"],
                 ["detokenize", "--model", missing, "--tokens", missing, "--output", tmp_path / "o"],
                 ["convert", "--checkpoint", missing, "--output", tmp_path / "o"],
                 ["eval", "--model", missing, "--data", "builtin"],
                 ["export", missing, "--output", tmp_path / "o"]):
        r = _script([args[0], "--import", MODULE, *args[1:]], tmp_path)
        # the module was imported; the command then fails on the missing file, not on the import
        assert f"imported {MODULE}" in r.stderr, (args[0], r.stderr)
        assert r.returncode == 2 and "no module named" not in r.stderr, (args[0], r.stderr)
    # train: through --import and through the config's own imports: list; the config uses
    # the module's grid, and is refused only for its (deliberately) invalid train.steps
    for imports, extra in (([], ["--import", MODULE]), ([MODULE], [])):
        cfg = tmp_path / "cfg.yaml"
        cfg.write_text(json.dumps({"imports": imports, "train": {"steps": 0},
                                   "model": {"preset": "tiny", "sampler": {"grid": {"name": "cwd_linear_q15"}}}}))
        r = _script(["train", *extra, "--config", cfg, "--out", tmp_path / "run"], tmp_path)
        assert f"imported {MODULE}" in r.stderr and r.returncode == 2, r.stderr
        assert "train.steps" in r.stderr and "cwd_linear_q15" not in r.stderr, r.stderr
    # a file name is refused with the module name to write instead
    r = _script(["convert", "--import", f"{MODULE}.py", "--checkpoint", missing, "--output", tmp_path / "o"],
                tmp_path)
    assert r.returncode == 2 and f"give the module name instead: {MODULE} (drop the .py" in r.stderr, r.stderr
    assert f"imported {MODULE}" not in r.stderr


def test_import_modules_searches_the_current_folder_and_refuses_file_names(tmp_path, monkeypatch):
    from flowmo.folders.imports import check_module_names, import_modules

    name = "cwd_only_module_q15"
    (tmp_path / f"{name}.py").write_text("VALUE = 15\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        assert import_modules([name]) == [name]
        assert sys.modules[name].VALUE == 15 and sys.path[0] == str(tmp_path)
        import_modules([name])
        assert sys.path.count(str(tmp_path)) == 1  # put there once
    finally:
        sys.modules.pop(name, None)
    for bad, module in (("mygrid.py", "mygrid"), ("my_pkg/vq.py", "my_pkg.vq"), ("./my_pkg/vq", "my_pkg.vq"),
                        ("my_pkg\\vq.py", "my_pkg.vq")):
        with pytest.raises(ValueError, match=rf"is a file name; give the module name instead: {module} "):
            check_module_names([bad], "--import")


# ------------------------------------------------------------------ common options
_DELEGATED = ("train", "eval", "export")
_RUNS_A_MODEL = ("reconstruct", "tokenize", "detokenize", "train", "eval")


@pytest.mark.parametrize("command", ["reconstruct", "tokenize", "detokenize", "convert", *_DELEGATED])
def test_every_command_lists_the_common_options(command, capsys):
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "common options (every flowmo command)" in text, text
    for flag in ("--debug", "--quiet, -q", "--import MODULE"):
        assert flag in text, (command, flag)
    assert ("--device" in text) == (command in _RUNS_A_MODEL), command


def test_every_command_accepts_the_common_options():
    from flowmo.cli.eval import add_parser as eval_parser
    from flowmo.cli.train import add_parser as _train_parser

    required = {"reconstruct": ["--model", "m", "--input", "i", "--output", "o"],
                "tokenize": ["--model", "m", "--input", "i", "--output", "o"],
                "detokenize": ["--model", "m", "--tokens", "t", "--output", "o"],
                "convert": ["--checkpoint", "c", "--output", "o"]}
    for command, req in required.items():
        a = cli.build_parser().parse_args([command, *req, "-q", "--debug", "--import", "m"])
        assert (a.quiet, a.debug, a.imports) == (True, True, ["m"]), command
        if command != "convert":
            assert cli.build_parser().parse_args([command, *req, "--device", "cpu"]).device == "cpu"
    a = eval_parser().parse_args(["--model", "m", "--data", "builtin", "-q", "--debug", "--device", "cpu"])
    assert (a.quiet, a.debug, a.device) == (True, True, "cpu")
    a = _train_parser().parse_args(["--out", "x", "-q", "--debug", "--device", "cpu"])
    assert (a.quiet, a.debug, a.device) == (True, True, "cpu")


def test_a_global_quiet_reaches_the_subcommands(monkeypatch):
    seen = {}

    def fake(args):
        seen.update(run=args.run, output=args.output, quiet=args.quiet, debug=args.debug)
        return 0

    monkeypatch.setattr(cli.export, "run", fake)
    assert cli.main(["-q", "--debug", "export", "run", "--output", "o"]) == 0
    assert seen == {"run": "run", "output": "o", "quiet": True, "debug": True}


def test_export_output_has_help(capsys):
    assert cli.main(["export", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--output DIR the model folder to write" in text


def test_train_quiet_and_device_options(monkeypatch, tmp_path, capsys):
    """--device is --set train.device=D; --quiet turns the progress bar and the log lines off."""
    import flowmo.train.trainer as trainer_module
    from flowmo.cli import train as train_cli

    made = {}

    class FakeTrainer:
        def __init__(self, config, out, *, resume=False, log=None):
            made["config"], made["log"] = config, log
            Path(out).mkdir(parents=True, exist_ok=True)
            self.ctx = types.SimpleNamespace(main=True)

        def fit(self):
            if made["log"] is not None:
                made["log"]("a log line")
            return {"eval_start": {"eval/raw/psnr": 1.0, "eval/raw/ssim": 0.1},
                    "eval_end": {"eval/raw/psnr": 2.0, "eval/raw/ssim": 0.2}}

        def close(self, barrier=True):
            pass

    monkeypatch.setattr(trainer_module, "Trainer", FakeTrainer)
    base = ["--set", "model=tiny", "--set", "train.steps=1", "--out", tmp_path / "run"]
    assert train_cli.main([*map(str, base), "--device", "cpu", "-q"]) == 0
    assert made["config"].train.device == "cpu" and made["config"].train.log.progress is False
    assert capsys.readouterr().out == ""  # no log line, no summary
    assert train_cli.main([*map(str, base)]) == 0
    assert made["config"].train.device == "auto" and made["config"].train.log.progress is True
    assert made["log"] is None  # the Trainer's own printing log
    assert "held-out PSNR of the raw weights: 1.00 dB -> 2.00 dB" in capsys.readouterr().out
    # one's own data: the evaluation reads the first training images, which are not held out
    from conftest import random_png_folder

    folder = random_png_folder(tmp_path / "data", 2, seed=0)
    assert train_cli.main([*map(str, base), "--set", f"train.data.folder={folder}", "--out",
                           str(tmp_path / "run2")]) == 0
    printed = capsys.readouterr().out
    assert "training-image (not held-out) PSNR of the raw weights: 1.00 dB -> 2.00 dB" in printed
    assert "held-out PSNR" not in printed


# ------------------------------------------------------------------ train without --config
def test_train_without_config_names_train_steps(tmp_path, capsys):
    rc = cli.main(["train", "--set", "model=tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "train.steps is required" in err and "--set train.steps=N" in err, err
    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Without --config" in text and "--set model=tiny --set train.steps=200" in text, text
    from flowmo.train.config import load_config

    with pytest.raises(ValueError, match="train.steps is required"):
        load_config({"model": "tiny"})
    with pytest.raises(ValueError, match="train.steps is required"):
        load_config({"model": "tiny", "train": {"seed": 1}})
    assert load_config({"model": "tiny", "train": {"steps": 3}}).train.steps == 3


# ------------------------------------------------------------------ number hint
@pytest.mark.parametrize("value, hint", [("abc", False), ("3", True), (" 4 ", True), ("1e-3", True),
                                         ("nan", False), ("inf", False), ("", False), ("3 steps", False)])
def test_the_without_quotes_hint_only_for_a_quoted_number(value, hint):
    with pytest.raises(ValueError) as e:
        flowmo.flowmo_tiny().replace(sampler={"steps": value})
    assert f"got the string {value!r}" in str(e.value)
    assert ("write the number without quotes" in str(e.value)) is hint
    with pytest.raises(ValueError) as e:
        flowmo.flowmo_tiny().replace(time_sampler={"name": "uniform", "shift": value})
    assert ("write the number without quotes" in str(e.value)) is hint


def test_the_hint_on_the_command_line(tmp_path, capsys):
    for value, hint in (("abc", False), ('"3"', True)):
        rc = cli.main(["train", "--set", "model=tiny", "--set", "train.steps=1", "--set", f"model.sampler.steps={value}",
                       "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert rc == 2 and ("without quotes" in err) is hint, err


# ------------------------------------------------------------------ resize note, sampler options
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def two_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / "big.png")
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "exact.png")
    return d


def test_reconstruct_and_tokenize_say_they_resize(model_dir, two_images, tmp_path, capsys):
    for command, out in (("reconstruct", tmp_path / "rec"), ("tokenize", tmp_path / "t.safetensors")):
        assert cli.main([command, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "resized to the model's image size" in text and "centre square cropped" in text, command
        extra = ["--steps", "1"] if command == "reconstruct" else []
        rc = cli.main([command, "--model", str(model_dir), "--input", str(two_images), "--output", str(out), *extra])
        err = capsys.readouterr().err
        assert rc == 0, err
        notes = [ln for ln in err.splitlines() if "note:" in ln]
        assert notes == [f"flowmo {command}: note: 1 of 2 input images was not 32x32, the model's image size: each "
                         "was resized (short side to 32 px, bicubic) and centre-cropped to 32x32"], err
        rc = cli.main([command, "-q", "--model", str(model_dir), "--input", str(two_images / "big.png"),
                       "--output", str(out), *extra])
        assert rc == 0 and capsys.readouterr() == ("", "")
        rc = cli.main([command, "--model", str(model_dir), "--input", str(two_images / "exact.png"),
                       "--output", str(out), *extra])
        assert rc == 0 and "note:" not in capsys.readouterr().err  # nothing resized: no note
        rc = cli.main([command, "--model", str(model_dir), "--input", str(two_images / "big.png"), "--output",
                       str(out), *extra, "--batch-size", "0"])
        err = capsys.readouterr().err
        assert rc == 2 and "note:" not in err and len(err.splitlines()) == 1  # a failed run: its error only


@pytest.mark.parametrize("command", ["reconstruct", "detokenize", "eval"])
def test_the_decoding_commands_share_the_sampler_options(command, capsys):
    assert cli.main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--sampler PRESET_OR_JSON", "--steps N", "--solver NAME", "--grid NAME", "--cfg-scale S"):
        assert flag in text, (command, flag)
    assert "a preset is a complete sampler" in text and "then edit the result" in text


def _png(path):
    return np.asarray(Image.open(path))


def test_reconstruct_and_detokenize_apply_the_sampler_options(model_dir, two_images, tmp_path, capsys):
    model = flowmo.FlowMo.from_pretrained(model_dir)
    src = two_images / "exact.png"
    options = ["--sampler", "fast", "--steps", "2", "--grid", "linear", "--solver", "heun", "--cfg-scale", "1"]
    expected_sampler = flowmo.SamplerSpec.model_validate("fast").replace(
        steps=2, grid="linear", solver="heun", guidance={"scale": 1.0})
    assert cli.main(["reconstruct", "--model", str(model_dir), "--input", str(src), "--output",
                     str(tmp_path / "a"), *options]) == 0
    # the same decode in Python: the CLI's noise for image i is the library's one recipe,
    # image_noise(--seed, [i]) (as flowmo eval's)
    from flowmo.samplers.noise import image_noise
    from flowmo.cli.io import load_image, save_image

    x = load_image(src, 32)[None]
    noise = image_noise(0, [0], (3, 32, 32))
    with torch.no_grad():
        y = model.reconstruct(x, noise=noise, sampler=expected_sampler)
    save_image(y[0], tmp_path / "expected.png")
    np.testing.assert_array_equal(_png(tmp_path / "a" / "exact.png"), _png(tmp_path / "expected.png"))
    # a JSON sampler and the options agree; and differ from the model's own sampler
    assert cli.main(["reconstruct", "--model", str(model_dir), "--input", str(src), "--output", str(tmp_path / "b"),
                     "--sampler", json.dumps({"steps": 2, "grid": {"name": "linear"}, "solver": {"name": "heun"},
                                              "guidance": {"scale": 1.0}})]) == 0
    np.testing.assert_array_equal(_png(tmp_path / "a" / "exact.png"), _png(tmp_path / "b" / "exact.png"))
    assert cli.main(["reconstruct", "--model", str(model_dir), "--input", str(src), "--output", str(tmp_path / "c"),
                     "--steps", "2"]) == 0
    assert not np.array_equal(_png(tmp_path / "a" / "exact.png"), _png(tmp_path / "c" / "exact.png"))

    tokens = tmp_path / "t.safetensors"
    assert cli.main(["tokenize", "--model", str(model_dir), "--input", str(src), "--output", str(tokens)]) == 0
    assert cli.main(["detokenize", "--model", str(model_dir), "--tokens", str(tokens), "--output",
                     str(tmp_path / "d"), *options]) == 0
    from flowmo.data.tokens import read_tokens

    code = model.tokens_to_code(read_tokens(tokens).tokens)
    with torch.no_grad():
        y = model.decode(code, noise=noise, sampler=expected_sampler).images
    save_image(y[0], tmp_path / "expected_d.png")
    np.testing.assert_array_equal(_png(tmp_path / "d" / "exact.png"), _png(tmp_path / "expected_d.png"))
    # a bad option is one line naming the sampler settings
    rc = cli.main(["detokenize", "--model", str(model_dir), "--tokens", str(tokens), "--output", str(tmp_path / "e"),
                   "--grid", "no_such_grid"])
    err = capsys.readouterr().err
    assert rc == 2 and "invalid sampler settings" in err and "no_such_grid" in err, err
