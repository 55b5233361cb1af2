"""``flowmo generate``: one PNG per image named by class, the grid (one row per class), the JSON
record; bad input as one-line errors with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.cli import main
from flowmo.data.token_layout import layout_for
from flowmo.generators import AutoregressiveGenerator, MaskGiT
from flowmo.state_dicts import weights_digest

from conftest import REPO

SMALL = {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0}
CLASSES = ["t-shirt", "trouser", "bag"]


def _tokenizer(code_length=16):
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2},
                                                     code_length=code_length)).eval()


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen_cli")
    tok = _tokenizer()
    tok.save_pretrained(root / "tok")
    _tokenizer(code_length=8).save_pretrained(root / "other_tok")
    retrained = _tokenizer()  # the same spec, other weights
    torch.nn.init.normal_(next(retrained.parameters()))
    retrained.save_pretrained(root / "retrained_tok")
    layout = layout_for(tok)
    meta = {"layout": layout.to_json(), "tokenizer_fingerprint": tok.spec.fingerprint(), "classes": CLASSES,
            "tokenizer_spec": tok.spec.model_dump(mode="json")}
    MaskGiT(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=3, **SMALL).save_pretrained(
        root / "gen_digest", metadata={**meta, "tokenizer_weights": weights_digest(tok)})
    torch.manual_seed(1)
    MaskGiT(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=3, **SMALL).save_pretrained(
        root / "gen", metadata=meta)
    AutoregressiveGenerator(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=0,
                            **SMALL).save_pretrained(root / "free", metadata={**meta, "classes": []})
    return root


def run(folders, *extra, generator="gen", tokenizer="tok"):
    return main(["generate", "--generator", str(folders / generator), "--tokenizer", str(folders / tokenizer),
                 "--decoder-steps", "2", "--quiet", *extra])


def test_writes_one_png_per_image_a_grid_and_a_record(folders, tmp_path):
    out = tmp_path / "out"
    assert run(folders, "--classes", "bag,0", "--per-class", "3", "--steps", "4", "--cfg", "2", "--seed", "5",
               "--batch-size", "4", "--top-k", "8", "--out", str(out)) == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted([f"2_bag_{k:03d}.png" for k in range(3)] + [f"0_t-shirt_{k:03d}.png" for k in range(3)]
                          + ["grid.png"])
    for name in pngs:
        if name != "grid.png":
            assert Image.open(out / name).size == (32, 32)
    # the grid: 2 rows of 3 images of 32 px scaled x2, 2 px of padding between and around them
    w, h = Image.open(out / "grid.png").size
    assert (w, h) == (3 * 64 + 4 * 2, 2 * 64 + 3 * 2)
    grid = np.asarray(Image.open(out / "grid.png"))
    for r, name in enumerate(["2_bag", "0_t-shirt"]):  # one row per class, in the order asked
        for k in range(3):
            y, x = 2 + r * 66, 2 + k * 66
            image = np.asarray(Image.open(out / f"{name}_{k:03d}.png")).repeat(2, 0).repeat(2, 1)
            assert np.array_equal(grid[y:y + 64, x:x + 64], image)
    record = json.loads((out / "generate.json").read_text())
    assert record["classes"] == [{"label": 2, "name": "bag"}, {"label": 0, "name": "t-shirt"}]
    assert record["per_class"] == 3 and record["grid"] == "grid.png"
    assert record["settings"]["cfg"] == 2.0 and record["settings"]["seed"] == 5 and record["settings"]["top_k"] == 8
    assert record["generator_steps"] == 4 and record["nfe_per_image"] == 8
    assert record["forward_passes"] == 2 * 4  # 6 images in batches of 4: two calls of 4 steps each
    assert record["settings"]["decoder_sampler"]["steps"] == 2
    assert [i["file"] for i in record["images"]][:3] == [f"2_bag_{k:03d}.png" for k in range(3)]
    assert record["tokenizer_fingerprint"] == flowmo.FlowMo.from_pretrained(folders / "tok").spec.fingerprint()


def test_the_same_seed_writes_the_same_images(folders, tmp_path):
    for name in ("a", "b"):
        assert run(folders, "--classes", "trouser", "--per-class", "2", "--seed", "9", "--out",
                   str(tmp_path / name)) == 0
    for k in range(2):
        a = np.asarray(Image.open(tmp_path / "a" / f"1_trouser_{k:03d}.png"))
        b = np.asarray(Image.open(tmp_path / "b" / f"1_trouser_{k:03d}.png"))
        assert np.array_equal(a, b)


def test_an_unconditional_generator(folders, tmp_path):
    assert run(folders, "--per-class", "2", "--out", str(tmp_path / "o"), generator="free") == 0
    assert sorted(p.name for p in (tmp_path / "o").glob("*.png")) == ["grid.png", "sample_000.png", "sample_001.png"]
    assert run(folders, "--classes", "0", "--out", str(tmp_path / "x"), generator="free") == 2


@pytest.mark.parametrize("args,message", [
    (["--classes", "horse"], "unknown class 'horse': the generator's classes are: t-shirt, trouser, bag"),
    (["--classes", "7"], "class index 7 is out of range"),
    (["--classes", "bag", "2"], "given twice"),
    ([], "--classes is required: the generator is class-conditional with 3 classes (t-shirt, trouser, bag)"),
    (["--classes", "bag", "--cfg", "-1"], "argument --cfg: expected a finite number >= 0"),
    (["--classes", "bag", "--temperature", "nan"], "argument --temperature: expected a finite number >= 0"),
    (["--classes", "bag", "--per-class", "0"], "argument --per-class: expected a positive integer"),
    (["--classes", "bag", "--seed", "-3"], "argument --seed: expected an integer >= 0"),
    (["--classes", "bag", "--steps", "x"], "argument --steps: expected a positive integer"),
])
def test_bad_input_is_one_line_with_status_2(folders, tmp_path, capsys, args, message):
    assert run(folders, *args, "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_a_mismatched_tokenizer_is_refused_naming_the_fingerprint(folders, tmp_path, capsys):
    fp = flowmo.FlowMo.from_pretrained(folders / "tok").spec.fingerprint()
    other = flowmo.FlowMo.from_pretrained(folders / "other_tok").spec.fingerprint()
    assert run(folders, "--classes", "bag", "--out", str(tmp_path / "o"), tokenizer="other_tok") == 2
    err = capsys.readouterr().err
    assert err.startswith("flowmo generate: error:") and fp in err and other in err
    assert not (tmp_path / "o").exists()


def test_a_tokenizer_with_other_weights_is_refused_when_the_folder_records_its_digest(folders, tmp_path, capsys):
    assert run(folders, "--classes", "bag", "--out", str(tmp_path / "o"), generator="gen_digest",
               tokenizer="retrained_tok") == 2
    assert "same architecture, other weights" in capsys.readouterr().err
    assert not any((tmp_path / "o").glob("*.png"))
    assert run(folders, "--classes", "bag", "--out", str(tmp_path / "o2"), generator="gen_digest") == 0
    # the folder without the digest: the spec check only
    assert run(folders, "--classes", "bag", "--out", str(tmp_path / "o3"), tokenizer="retrained_tok") == 0


def test_a_missing_generator_folder(folders, tmp_path, capsys):
    assert run(folders, "--classes", "bag", "--out", str(tmp_path / "o"), generator="nowhere") == 2
    assert "config.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- a previous output in --out
def _pngs(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))


def test_a_previous_output_is_refused_without_overwrite(folders, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(folders, "--classes", "bag", "--per-class", "3", "--out", str(out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert run(folders, "--classes", "trouser", "--per-class", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err.strip()
    assert "holds generate.json and 4 image files" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # untouched
    # an image alone (no record) is refused too, as is one in a sub-folder (eval-gen reads both)
    for layout in ("x.png", "sub/y.jpg"):
        other = tmp_path / layout.replace("/", "_")
        (other / layout).parent.mkdir(parents=True)
        (other / layout).write_bytes(b"not really an image")
        assert run(folders, "--classes", "bag", "--out", str(other)) == 2
        assert f"holds 1 image file ({layout})" in capsys.readouterr().err
        assert _pngs(other) == ([layout] if layout.endswith(".png") else [])
    # a folder of other files (or an empty one) is fine
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "README.txt").write_text("mine")
    assert run(folders, "--classes", "bag", "--per-class", "1", "--out", str(tmp_path / "notes")) == 0
    assert (tmp_path / "notes" / "README.txt").read_text() == "mine"


def test_overwrite_replaces_exactly_the_previous_output(folders, tmp_path):
    out = tmp_path / "o"
    assert run(folders, "--classes", "bag", "trouser", "--per-class", "3", "--out", str(out)) == 0
    (out / "notes.txt").write_text("mine")
    assert run(folders, "--classes", "t-shirt", "--per-class", "2", "--seed", "4", "--out", str(out),
               "--overwrite") == 0
    assert _pngs(out) == ["0_t-shirt_000.png", "0_t-shirt_001.png", "grid.png"]  # no old image left
    record = json.loads((out / "generate.json").read_text())
    assert [e["file"] for e in record["images"]] == ["0_t-shirt_000.png", "0_t-shirt_001.png"]
    assert (out / "notes.txt").read_text() == "mine"  # not generate's: kept
    # the same images as a fresh folder's
    assert run(folders, "--classes", "t-shirt", "--per-class", "2", "--seed", "4", "--out", str(tmp_path / "f")) == 0
    for k in range(2):
        name = f"0_t-shirt_{k:03d}.png"
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(Image.open(tmp_path / "f" / name)))


def test_overwrite_refuses_images_the_record_does_not_list_and_a_bad_record(folders, tmp_path, capsys):
    out = tmp_path / "o"
    assert run(folders, "--classes", "bag", "--per-class", "1", "--out", str(out)) == 0
    (out / "real_photo.jpg").write_bytes(b"someone's image")
    capsys.readouterr()
    assert run(folders, "--classes", "bag", "--per-class", "1", "--out", str(out), "--overwrite") == 2
    err = capsys.readouterr().err
    assert "1 image file that its generate.json does not list (real_photo.jpg)" in err
    assert _pngs(out) == ["2_bag_000.png", "grid.png"] and (out / "real_photo.jpg").exists()  # nothing deleted
    (out / "real_photo.jpg").unlink()
    # a record naming a file outside --out, or damaged, is refused, and nothing deleted
    outside = tmp_path / "keep.png"
    outside.write_bytes(b"x")
    record = json.loads((out / "generate.json").read_text())
    for text in (json.dumps({**record, "images": [{"file": "../keep.png"}]}),
                 json.dumps({**record, "images": [{"file": str(outside)}]}),
                 json.dumps({**record, "grid": 7}), json.dumps({**record, "images": None}), "{not json"):
        (out / "generate.json").write_text(text)
        assert run(folders, "--classes", "bag", "--per-class", "1", "--out", str(out), "--overwrite") == 2
        assert "--overwrite:" in capsys.readouterr().err
        assert outside.exists() and _pngs(out) == ["2_bag_000.png", "grid.png"]
    # images without a record: only grid.png counts as generate's
    (out / "generate.json").unlink()
    assert run(folders, "--classes", "bag", "--per-class", "1", "--out", str(out), "--overwrite") == 2
    assert "1 image file that no generate.json lists (2_bag_000.png)" in capsys.readouterr().err


def test_the_help_and_readme_say_so(capsys):
    from flowmo.cli import main as cli_main

    assert cli_main(["generate", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--overwrite" in text and "refused" in text and "generate.json" in text
    readme = " ".join((REPO / "README.md").read_text().split())
    assert "`--overwrite` replaces a previous run's output" in readme
