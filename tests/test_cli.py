"""The ``flowmo`` command end to end on a tiny model: reconstruct, tokenize/detokenize,
convert, delegation, and one-line errors for bad input."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo import cli
from flowmo.cli.io import list_images, load_image
from flowmo.data.tokens import read_tokens

from conftest import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
STEPS = ["--steps", "2"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder of images of different sizes and modes, one in a sub-folder, plus ignored files."""
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (d / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (64, 48), dtype=np.uint8)).save(d / "sub" / "b.JPG")
    Image.fromarray(rng.integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(d / "c.webp")
    (d / "notes.txt").write_text("not an image")
    (d / ".hidden.png").write_bytes(b"ignored")
    return d


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, code=2, debug=False):
    assert rc == code
    assert "Traceback" not in err if not debug else "Traceback" in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("flowmo") and ": error: " in lines[-1]
    if not debug:
        assert len(lines) == 1, err


def read_png(path):
    return np.asarray(Image.open(path))


# ------------------------------------------------------------------ io helpers
def test_list_images_recursive_and_relative_names(images):
    files = list_images([images])
    assert [f.name for f in files] == ["a.png", "c.webp", "sub/b.JPG"]
    x = load_image(files[2].path, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and -1 <= float(x.min()) <= float(x.max()) <= 1
    with pytest.raises(ValueError, match="would both be written"):
        list_images([images, images / "a.png"])


# ------------------------------------------------------------------ reconstruct
def test_reconstruct_writes_pngs_of_the_model_size(model_dir, images, tmp_path, capsys):
    out = tmp_path / "rec"
    rc, stdout, err = run(["reconstruct", "--model", model_dir, "--input", images, "--output", out, *STEPS,
                           "--batch-size", 2], capsys)
    assert rc == 0, err
    assert "wrote 3 reconstructions" in stdout
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == ["a.png", "c.png", "sub/b.png"]
    for p in written:
        arr = read_png(out / p)
        assert arr.shape == (32, 32, 3) and arr.dtype == np.uint8
    # the noise is drawn per image: the batch size does not change the result
    out1 = tmp_path / "rec1"
    assert run(["--quiet", "reconstruct", "--model", model_dir, "--input", images, "--output", out1, *STEPS,
                "--batch-size", 1], capsys)[0] == 0
    for p in written:
        assert np.abs(read_png(out / p).astype(int) - read_png(out1 / p)).max() <= 1


def test_reconstruct_subprocess_python_m(model_dir, images, tmp_path):
    out = tmp_path / "rec"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "flowmo", "reconstruct", "--model", str(model_dir), "--input", str(images / "a.png"),
         "--output", str(out), *STEPS, "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=HANG_GUARD_S,
    )
    assert r.returncode == 0, r.stderr
    assert read_png(out / "a.png").shape == (32, 32, 3)
    # a bad input through the real entry point: one line, exit 2, no traceback
    r = subprocess.run([sys.executable, "-m", "flowmo", "reconstruct", "--model", str(model_dir), "--input",
                        str(tmp_path / "missing.png"), "--output", str(out)],
                       capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "missing.png" in r.stderr and "does not exist" in r.stderr


# ------------------------------------------------------------------ tokenize / detokenize
def test_tokenize_detokenize_round_trip(model_dir, images, tmp_path, capsys):
    tok = tmp_path / "tokens.safetensors"
    rc, stdout, err = run(["tokenize", "--model", model_dir, "--input", images, "--output", tok], capsys)
    assert rc == 0, err
    tf = read_tokens(tok)
    model = flowmo.FlowMo.from_pretrained(model_dir)
    assert tf.tokens.dtype == torch.int64 and tf.tokens.shape == (3, 16) and not tf.groups
    assert tf.fingerprint == model.spec.fingerprint() and tf.fingerprint in stdout
    assert flowmo.FlowMoSpec.from_json(tf.spec_json) == model.spec
    assert tf.sources == ["a.png", "c.webp", "sub/b.JPG"]
    # the same tokens as the Python API
    x = torch.stack([load_image(f.path, 32) for f in list_images(images)])
    assert torch.equal(tf.tokens, model.tokenize(x))

    gtok = tmp_path / "groups.safetensors"
    assert run(["tokenize", "--model", model_dir, "--input", images, "--output", gtok, "--groups"], capsys)[0] == 0
    g = read_tokens(gtok)
    assert g.groups and g.tokens.shape == (3, 16, 2) and torch.equal(g.tokens, model.tokenize(x, groups=True))

    rec, det, gdet = tmp_path / "rec", tmp_path / "det", tmp_path / "gdet"
    assert run(["reconstruct", "--model", model_dir, "--input", images, "--output", rec, *STEPS, "--seed", 3],
               capsys)[0] == 0
    assert run(["detokenize", "--model", model_dir, "--tokens", tok, "--output", det, *STEPS, "--seed", 3],
               capsys)[0] == 0
    assert run(["detokenize", "--model", model_dir, "--tokens", gtok, "--output", gdet, *STEPS, "--seed", 3],
               capsys)[0] == 0
    for name in ("a.png", "c.png", "sub/b.png"):
        r, d, gd = read_png(rec / name), read_png(det / name), read_png(gdet / name)
        assert r.shape == (32, 32, 3)
        assert np.abs(r.astype(int) - d).max() <= 1 and np.array_equal(d, gd)


def test_detokenize_refuses_tokens_of_another_model(model_dir, images, tmp_path, capsys):
    other = tmp_path / "other"
    spec = flowmo.flowmo_tiny()
    flowmo.build(spec.replace(decoder={**spec.decoder.model_dump(), "depth": 1})).save_pretrained(other)
    tok = tmp_path / "t.safetensors"
    assert run(["tokenize", "--model", other, "--input", images / "a.png", "--output", tok], capsys)[0] == 0
    out = tmp_path / "det"
    rc, _, err = run(["detokenize", "--model", model_dir, "--tokens", tok, "--output", out], capsys)
    assert_one_line_error(rc, err)
    assert "fingerprint" in err and read_tokens(tok).fingerprint in err and not out.exists()


# ------------------------------------------------------------------ convert
@pytest.fixture(scope="module")
def release_ckpt(tmp_path_factory):
    spec = flowmo.release_spec(mup_width=2, enc_mup_width=2, enc_depth=1, dec_depth=1, code_length=16, image_size=32)
    model = flowmo.build(spec)
    sd = model.state_dict()
    raw = {k: v + 1 for k, v in sd.items()}
    path = tmp_path_factory.mktemp("release") / "flowmo_fake.pth"
    torch.save({"model_ema_state_dict": sd, "model_state_dict": raw, "total_steps": 0}, path)
    return path, spec, sd, raw


def test_convert_release_checkpoint(release_ckpt, images, tmp_path, capsys):
    path, spec, sd, raw = release_ckpt
    out = tmp_path / "conv"
    rc, stdout, err = run(["convert", "--checkpoint", path, "--output", out, "--code-length", 16,
                           "--image-size", 32], capsys)
    assert rc == 0, err
    m = flowmo.FlowMo.from_pretrained(out)
    assert m.spec == spec
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    out_raw = tmp_path / "conv_raw"
    assert run(["convert", "--checkpoint", path, "--output", out_raw, "--raw", "--code-length", 16,
                "--image-size", 32], capsys)[0] == 0
    m = flowmo.FlowMo.from_pretrained(out_raw)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in raw.items())
    # each converted folder's model card names the weights it holds
    from flowmo.folders.card import card_weights

    assert card_weights((out / "README.md").read_text()) == "ema"
    assert card_weights((out_raw / "README.md").read_text()) == "raw"
    # a released .pth is usable directly as --model
    rec = tmp_path / "rec"
    assert run(["reconstruct", "--model", path, "--code-length", 16, "--image-size", 32, "--input",
                images / "a.png", "--output", rec, "--steps", 1], capsys)[0] == 0
    assert read_png(rec / "a.png").shape == (32, 32, 3)


# ------------------------------------------------------------------ bad input
@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    (d / "empty_dir").mkdir()
    (d / "not_a_model").mkdir()
    (d / "not_a_model" / "config.json").write_text("{}")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(d / "plain.safetensors"))
    (d / "junk.safetensors").write_bytes(b"junk")
    (d / "junk.pth").write_bytes(b"junk")
    return d


BAD = {
    "missing input": (["reconstruct", "--model", "{model}", "--input", "{bad}/nope.png", "--output", "{out}"],
                      "does not exist"),
    "corrupt image": (["reconstruct", "--model", "{model}", "--input", "{bad}/corrupt.png", "--output", "{out}"],
                      "not a readable image"),
    "folder without images": (["tokenize", "--model", "{model}", "--input", "{bad}/empty_dir", "--output",
                               "{out}/t.safetensors"], "no images"),
    "model folder without weights": (["reconstruct", "--model", "{bad}/not_a_model", "--input", "{images}",
                                      "--output", "{out}"], "model.safetensors"),
    "model folder that is an image folder": (["tokenize", "--model", "{images}", "--input", "{images}", "--output",
                                              "{out}/t.safetensors"], "config.json"),
    "junk release checkpoint": (["reconstruct", "--model", "{bad}/junk.pth", "--input", "{images}", "--output",
                                 "{out}"], "junk.pth"),
    "missing token file": (["detokenize", "--model", "{model}", "--tokens", "{bad}/nope.safetensors", "--output",
                            "{out}"], "does not exist"),
    "not a token file": (["detokenize", "--model", "{model}", "--tokens", "{bad}/plain.safetensors", "--output",
                          "{out}"], "is a safetensors file without flowmo's token metadata (model weights?), not a token file"),
    "junk token file": (["detokenize", "--model", "{model}", "--tokens", "{bad}/junk.safetensors", "--output",
                         "{out}"], "not a readable safetensors file"),
    "missing checkpoint": (["convert", "--checkpoint", "{bad}/nope.pth", "--output", "{out}"], "does not exist"),
    "bad steps": (["reconstruct", "--model", "{model}", "--input", "{images}", "--output", "{out}", "--steps", "0"],
                  "positive integer"),
    "unknown device": (["reconstruct", "--model", "{model}", "--input", "{images}", "--output", "{out}",
                        "--device", "nodevice"], "device"),
    "unknown command": (["frobnicate"], "invalid choice"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_line_error(case, model_dir, images, bad_files, tmp_path, capsys):
    argv, needle = BAD[case]
    fill = {"model": model_dir, "bad": bad_files, "images": images, "out": tmp_path / "out"}
    argv = [a.format(**fill) for a in argv]
    rc, _, err = run(argv, capsys)
    assert_one_line_error(rc, err)
    assert needle in err


def test_debug_shows_the_traceback(model_dir, bad_files, tmp_path, capsys):
    argv = ["reconstruct", "--model", model_dir, "--input", bad_files / "corrupt.png", "--output", tmp_path]
    rc, _, err = run(["--debug", *argv], capsys)
    assert_one_line_error(rc, err, debug=True)
    rc, _, err = run([*argv, "--debug"], capsys)  # also after the subcommand
    assert_one_line_error(rc, err, debug=True)


# ------------------------------------------------------------------ subcommands
def test_a_subcommand_runs_with_its_parsed_arguments(monkeypatch, capsys):
    calls = []

    def fake_run(args):
        calls.append((args.config, args.out, args.debug))
        if args.config == "fail.yaml":
            raise ValueError("bad config\nsecond line")
        return 0

    monkeypatch.setattr(cli.train, "run", fake_run)
    assert cli.main(["train", "--config", "c.yaml", "--out", "run"]) == 0
    assert cli.main(["--debug", "train", "--out", "run", "--debug"]) == 0
    assert calls == [("c.yaml", "run", False), (None, "run", True)]
    capsys.readouterr()
    rc = cli.main(["train", "--config", "fail.yaml", "--out", "run"])
    assert_one_line_error(rc, capsys.readouterr().err)


@pytest.mark.parametrize("module", cli.SUBCOMMANDS, ids=lambda m: m.NAME)
def test_every_subcommand_is_listed_and_has_help(module, capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert re.search(rf"^\s+{re.escape(module.NAME)}(\s|$)", listed, re.M), listed
    assert cli.main([module.NAME, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: flowmo {module.NAME} ") and "common options (every flowmo command)" in text
    alone = module.add_parser()  # the same parser alone: the arguments after the subcommand
    assert alone.prog == f"flowmo {module.NAME}" and alone.format_help().split("\n", 1)[1] == text.split("\n", 1)[1]


def test_python_m_flowmo_cli_is_the_flowmo_command():
    r = subprocess.run([sys.executable, "-m", "flowmo.cli", "shards", "--input"], capture_output=True, text=True,
                       timeout=HANG_GUARD_S)
    assert r.returncode == 2 and r.stderr.startswith("flowmo shards: error: ") and r.stderr.count("\n") == 1


def test_help_and_no_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "reconstruct" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert cli.main(["tokenize", "--help"]) == 0
    assert "--groups" in capsys.readouterr().out


def test_reconstruct_refuses_to_overwrite_its_input_images(model_dir, tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    before = (folder / "a.png").read_bytes()
    for argv in (["--input", folder / "a.png", "--output", folder], ["--input", folder, "--output", folder]):
        rc, _, err = run(["reconstruct", "--model", model_dir, *argv, *STEPS], capsys)
        assert_one_line_error(rc, err)
        assert "would overwrite the input image" in err and "--output" in err
    assert (folder / "a.png").read_bytes() == before


def test_an_interrupted_training_says_how_to_continue(monkeypatch, capsys):
    import flowmo.cli.train as train_cli

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "run", interrupted)
    assert cli.main(["train", "--config", "x.yaml", "--out", "run"]) == 130
    assert "interrupted (no checkpoint was written now: --resume continues from the newest" in capsys.readouterr().err
