"""The Fashion-MNIST demo's pieces: the class-folder CLI, the padding the report measures with
(checked against the PNGs the class folders hold), and the report on a tiny tokenizer, generator
and IDX folder written here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from examples.fashion.data import main as fashion_main
from examples.fashion.data import write_class_folders
from flowmo.data.token_layout import layout_for
from examples.fashion.report import fashion_report, format_report, padded

from test_fashion_mnist import make_folder


def test_padding_matches_the_class_folders_pngs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    write_class_folders(tmp_path / "out", images, np.array([0, 1, 1]), size=32)
    pngs = sorted((tmp_path / "out").rglob("*.png"), key=lambda p: p.name)
    from_png = torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p in pngs]).float() / 127.5 - 1
    assert torch.equal(padded(images, 32), from_png)
    with pytest.raises(ValueError, match="at least the images' side"):
        padded(images, 20)


def test_the_class_folder_cli(tmp_path, capsys):
    make_folder(tmp_path / "idx", n_train=30, n_test=10)
    assert fashion_main(["--out", str(tmp_path / "imgs"), "--data", str(tmp_path / "idx"), "--limit-per-class", "1"]) == 0
    train = sorted(p.relative_to(tmp_path / "imgs" / "train").parts[0] for p in (tmp_path / "imgs" / "train").rglob("*.png"))
    assert len(train) == len(set(train)) and all(len(list((tmp_path / "imgs" / "train" / c).iterdir())) == 1 for c in train)
    assert Image.open(next((tmp_path / "imgs" / "test").rglob("*.png"))).size == (32, 32)
    assert fashion_main(["--out", str(tmp_path / "x"), "--data", str(tmp_path / "absent")]) == 2
    assert "dataset-fashion-mnist" in capsys.readouterr().err


def test_the_report_on_tiny_models(tmp_path):
    make_folder(tmp_path / "idx", n_train=40, n_test=50, seed=3)
    torch.manual_seed(0)
    tokenizer = flowmo.build(flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2})).eval()
    tokenizer.save_pretrained(tmp_path / "tok")
    layout = layout_for(tokenizer)
    gen = flowmo.GENERATORS.build({"name": "maskgit", "width": 32, "depth": 1, "heads": 2},
                                  vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=10)
    gen.save_pretrained(tmp_path / "gen", metadata={"layout": layout.to_json(), "classes": [str(i) for i in range(10)],
                                                     "tokenizer_fingerprint": tokenizer.spec.fingerprint()})
    r = fashion_report(tmp_path / "tok", tmp_path / "gen", out=tmp_path / "report", data_folder=tmp_path / "idx",
                       per_class=2, reference=10, steps=2, classifier_epochs=1, batch_size=8, log=lambda s: None)
    g = r["generated"]
    assert g["images"] == 20 and 0 <= g["conditional_accuracy"] <= 1 and g["steps"] == 2
    assert g["relative_accuracy"] == pytest.approx(g["conditional_accuracy"] / r["classifier"]["test_accuracy"])
    for key in ("generated", "reconstructions", "random_tokens", "real_vs_real"):
        assert np.isfinite(r[key]["frechet_to_real"]) and r[key]["frechet_to_real"] >= 0
    assert r["real_vs_real"]["images"] == 20 and r["bits_per_image"] == 16 * 4
    assert json.loads((tmp_path / "report" / "report.json").read_text()) == json.loads(json.dumps(r))
    assert (tmp_path / "report" / "generated.png").is_file() and "target >= 0.80" in format_report(r)
    with pytest.raises(ValueError, match="fit the 50 test images"):
        fashion_report(tmp_path / "tok", tmp_path / "gen", data_folder=tmp_path / "idx", per_class=3, reference=10)
