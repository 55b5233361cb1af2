"""`flowmo eval` end to end on a tiny model: the built-in photos, an image folder, weight files
found in --weights-dir (random ones: the numbers test the plumbing only), bad input."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.cli.eval import main
from flowmo.metrics.pixel import psnr
from flowmo.nets.alexnet import AlexNet
from flowmo.nets.lpips import LPIPS
from flowmo.nets.weight_specs import WEIGHT_SPECS
from flowmo.data.photos import held_out_photos

from conftest import HANG_GUARD_S


@pytest.fixture(autouse=True)
def _no_weight_files(tmp_path_factory, monkeypatch):
    from flowmo.nets import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(weights, "_lpips_package_dir", lambda: None)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny()).save_pretrained(tmp_path_factory.mktemp("m") / "tiny")


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_eval_builtin_photos_end_to_end(tiny_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--model", str(tiny_model), "--data", "builtin", "--limit", "4", "--steps", "2",
                 "--output", str(out), "--seed", "3"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    m, p = res["metrics"], res["protocol"]
    assert m["n_images"] == p["n_images"] == 4
    assert isinstance(m["psnr"], float) and isinstance(m["ssim"], float)
    for k, files in (("lpips_vgg", ["vgg16-397923af.pth", "vgg.pth"]),
                     ("lpips_alex", ["alexnet-owt-7be5be79.pth", "alex.pth"]),
                     ("rfid", ["pt_inception-2015-12-05-6726825d.pth"])):
        assert m[k]["available"] is False and m[k]["missing"] == files
    assert m["bits_per_pixel"] == pytest.approx(16 * 18 / 32**2)
    assert m["codebook"]["groups"] == 2 and m["decoder_calls_per_image"] >= 2
    assert p["sampler"]["steps"] == 2 and p["seed"] == 3 and p["crop"]["image_size"] == 32
    assert p["weights"] == [] and p["world_size"] == 1
    assert p["model"]["fingerprint"] == flowmo.flowmo_tiny().fingerprint()
    for f in p["model"]["files"]:
        assert f["sha256"] == _sha(f["path"])
    assert res["best_worst"]["ranked_by"] == "psnr"
    assert len(res["best_worst"]["best"]) == len(res["best_worst"]["worst"]) == 2
    # the PNG: best originals, best reconstructions, worst originals, worst reconstructions
    png = np.asarray(Image.open(out / "best_worst.png"))
    assert png.shape == (4 * 34 + 2, 2 * 34 + 2, 3)
    worst = res["best_worst"]["worst"][0]["id"]
    x = held_out_photos(32)
    assert np.array_equal(png[2 + 2 * 34:2 + 2 * 34 + 32, 2:34],
                          ((x[worst] + 1) * 127.5).round().clamp(0, 255).byte().permute(1, 2, 0).numpy())
    rows = (out / "per_image.csv").read_text().splitlines()
    assert rows[0].startswith("id,image,psnr,ssim") and rows[1].startswith("0,chelsea/full,") and len(rows) == 5
    assert "4 images" in capsys.readouterr().out

    # the reconstruction the JSON describes is the one the API gives for the same seed
    from flowmo.metrics import image_noise

    model = flowmo.FlowMo.from_pretrained(tiny_model)
    with torch.no_grad():
        code = model.quantize(model.encode(x[:4])).values
        rec = model.decode(code, noise=image_noise(3, range(4), (3, 32, 32)), sampler={"steps": 2}).images
    assert m["psnr"] == pytest.approx(float(psnr(x[:4], rec).mean()), abs=1e-3)


def _alex_weights(folder):
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    torch.save(AlexNet(include_classifier=False).state_dict(), folder / WEIGHT_SPECS["alexnet"].filename)
    torch.save(LPIPS("alex").heads().state_dict(), folder / WEIGHT_SPECS["lpips_alex_heads"].filename)
    return folder


def test_eval_image_folder_with_weight_files_and_a_corrupt_file(tiny_model, tmp_path):
    data = tmp_path / "images"
    (data / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)).save(data / "sub" / f"{i}.png")
    (data / "bad.jpg").write_bytes(b"not an image")
    weights = _alex_weights(tmp_path / "weights")
    out = tmp_path / "out"
    assert main(["--model", str(tiny_model), "--data", str(data), "--steps", "1", "--output", str(out),
                 "--weights-dir", str(weights), "--lpips", "alex", "--no-fid", "--workers", "0",
                 "--batch-size", "2", "--solver", "heun", "--grid", "linear", "--cfg-scale", "1", "--quiet"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    m, p = res["metrics"], res["protocol"]
    assert m["n_images"] == 5 and p["data"]["images_available"] == 6
    assert [os.path.basename(s) for s in p["data"]["skipped_unreadable"]] == ["bad.jpg"]
    assert isinstance(m["lpips_alex"], float) and m["lpips_alex"] > 0
    assert "lpips_vgg" not in m and "rfid" not in m
    assert res["best_worst"]["ranked_by"] == "lpips_alex"
    assert {w["file"] for w in p["weights"]} == {"alexnet-owt-7be5be79.pth", "alex.pth"}
    for w in p["weights"]:
        assert w["sha256"] == _sha(w["path"])
    assert p["sampler"]["solver"]["name"] == "heun" and p["sampler"]["grid"]["name"] == "linear"
    assert p["sampler"]["guidance"]["scale"] == 1.0 and m["decoder_calls_per_image"] == 2  # Heun, 1 step
    assert "centre crop" in p["crop"]["method"]
    names = [r.split(",")[1] for r in (out / "per_image.csv").read_text().splitlines()[1:]]
    assert names == [f"sub/{i}.png" for i in range(5)]


def test_eval_bad_input(tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        main(["--model", str(tmp_path / "nope"), "--data", "builtin"])
    with pytest.raises(FileNotFoundError, match="--data"):
        main(["--model", str(tiny_model), "--data", str(tmp_path / "nope")])
    with pytest.raises(ValueError, match="--limit"):
        main(["--model", str(tiny_model), "--data", "builtin", "--limit", "0"])
    with pytest.raises(ValueError, match="--sampler"):
        main(["--model", str(tiny_model), "--data", "builtin", "--sampler", "{steps"])
    with pytest.raises(ValueError, match="sampler"):
        main(["--model", str(tiny_model), "--data", "builtin", "--grid", "no_such_grid"])
    with pytest.raises(SystemExit):  # the shared sampler options: --steps is a positive int
        main(["--model", str(tiny_model), "--data", "builtin", "--steps", "0"])
    with pytest.raises(ValueError, match="--lpips"):
        main(["--model", str(tiny_model), "--data", "builtin", "--lpips", "squeeze"])
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(ValueError, match="released .pth"):
        main(["--model", str(tmp_path / "model.txt"), "--data", "builtin"])
    with pytest.raises(SystemExit):
        main(["--data", "builtin"])  # --model is required


def test_python_m_reports_bad_input_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowmo", "eval", "--model", str(tmp_path / "nope"),
                           "--data", "builtin"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "flowmo eval: error:" in proc.stderr


def test_eval_release_protocol_loader_and_record(tiny_model, tmp_path):
    """--protocol release: the release's loader (torchvision Resize + CenterCrop on PIL, bilinear),
    its metric conventions, and the record in metrics.json."""
    from flowmo.data.eval_images import release_image_folder

    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(1)
    arrays = {"a.png": rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),   # W 40, H 30
              "b.png": rng.integers(0, 256, (45, 33, 3), dtype=np.uint8)}   # W 33, H 45
    for name, arr in arrays.items():
        Image.fromarray(arr).save(data / name)
    # by hand: a: short 30 -> 32, long int(32 * 40 / 30) = 42, crop left int(round(10 / 2)) = 5;
    # b: short 33 -> 32, long int(32 * 45 / 33) = 43, crop top int(round(11 / 2)) = round(5.5) = 6
    boxes = {"a.png": ((42, 32), (5, 0)), "b.png": ((32, 43), (0, 6))}
    ds = release_image_folder(data, 32)
    for i, name in enumerate(["a.png", "b.png"]):
        (w, h), (left, top) = boxes[name]
        img = Image.fromarray(arrays[name]).resize((w, h), Image.Resampling.BILINEAR)
        u = np.asarray(img.crop((left, top, left + 32, top + 32)))
        want = (u / 127.5 - 1.0).astype(np.float32).transpose(2, 0, 1)
        assert np.array_equal(ds[i].numpy(), want)

    out = tmp_path / "out"
    assert main(["--model", str(tiny_model), "--data", str(data), "--steps", "1", "--output", str(out),
                 "--lpips", "none", "--no-fid", "--workers", "0", "--protocol", "release", "--quiet"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    m, p = res["metrics"], res["protocol"]
    assert m["protocol"] == "release" and p["metric_protocol"]["name"] == "release"
    assert "TRUNCATED" in p["quantisation"] and p["metric_protocol"]["quantisation"] == p["quantisation"]
    assert "7x7 uniform" in p["metric_protocol"]["conventions"]["ssim"]
    assert "bilinear" in p["crop"]["method"] and "CenterCrop" in p["crop"]["method"]
    assert m["psnr"] == m["psnr_batches_of_5"]
    rows = [r.split(",") for r in (out / "per_image.csv").read_text().splitlines()[1:]]
    mse = np.array([float(r[-1]) for r in rows])
    assert m["psnr"] == pytest.approx(10 * np.log10(255**2 / mse.mean()), abs=1e-9)  # one batch of 2
    std = tmp_path / "std"
    assert main(["--model", str(tiny_model), "--data", str(data), "--steps", "1", "--output", str(std),
                 "--lpips", "none", "--no-fid", "--workers", "0", "--quiet"]) == 0
    sp = json.loads((std / "metrics.json").read_text())["protocol"]
    assert sp["metric_protocol"]["name"] == "standard" and "rounding" in sp["quantisation"]
