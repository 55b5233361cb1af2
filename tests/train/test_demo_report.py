"""The demo's final report (examples.photo_demo.report): figures, PNGs, report.json, CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("skimage", reason="the demo report needs the built-in photos (scikit-image)")

from flowmo import FlowMo  # noqa: E402
from examples.photo_demo.baselines import thumbnail_baseline  # noqa: E402
from flowmo.metrics.pixel import psnr, ssim  # noqa: E402
from flowmo.presets import flowmo_tiny  # noqa: E402
from flowmo.spec import SamplerSpec  # noqa: E402
from flowmo.data.photos import BuiltinPhotos, held_out_photos  # noqa: E402
from flowmo.samplers.noise import image_noise  # noqa: E402
from examples.photo_demo.report import demo_report, describe_sampler, format_report, main  # noqa: E402


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    spec = flowmo_tiny().model_copy(update={"sampler": SamplerSpec(steps=1, guidance={"scale": 1.0})})
    return FlowMo(spec).eval()


def test_describe_sampler():
    assert describe_sampler(SamplerSpec(steps=1, guidance={"scale": 1.0})) == "1 Euler step, no guidance"
    assert describe_sampler(SamplerSpec()) == "25 Euler steps (pow grid), CFG 1.5 for t in [0.15, 0.50]"
    assert describe_sampler(SamplerSpec(steps=4, guidance={"scale": 2.0, "interval": None})) == \
        "4 Euler steps (pow grid), CFG 2"


def test_report_figures_are_the_decodes(model, tmp_path):
    r = demo_report(model, tmp_path, images=3)
    spec = model.spec
    assert r.bits_per_image == spec.code_length * spec.code_channels == 16 * 18
    assert r.bits_per_pixel == round(288 / 32**2, 4)
    assert (r.thumbnail_side, r.thumbnail_bits) == (3, 216)
    names = [f.name for f in r.held_out]
    assert names == ["FlowMo, 1 Euler step, no guidance",
                     "FlowMo, release sampler: 25 Euler steps (pow grid), CFG 1.5 for t in [0.15, 0.50]",
                     "thumbnail 3x3, 8-bit RGB (216 bits)"]
    assert [f.calls for f in r.held_out] == [1, 31, 0]
    # recompute the held-out figures from the public API
    x = held_out_photos(32)[:3]
    with torch.no_grad():
        code = model.quantize(model.encode(x)).values
        y = model.decode(code, noise=image_noise(0, range(len(x)), x.shape[1:])).images
    assert r.held_out[0].psnr == round(float(psnr(x, y).mean()), 2)
    assert r.held_out[0].ssim == round(float(ssim(x, y).mean()), 4)
    t = thumbnail_baseline(x, 288).images
    assert r.held_out[2].psnr == round(float(psnr(x, t).mean()), 2)
    # training crops: the run's first-epoch crops
    crops = BuiltinPhotos(32, train=False, length=3, seed=0)
    xt = torch.stack([crops[i] for i in range(3)])
    with torch.no_grad():
        code_t = model.quantize(model.encode(xt)).values
        yt = model.decode(code_t, noise=image_noise(0, range(len(xt)), xt.shape[1:])).images
    assert r.training[0].psnr == round(float(psnr(xt, yt).mean()), 2)
    # the PNGs: 3 rows (originals, reconstructions, thumbnails) of 3 tiles, 32 px upscaled 4x
    for png in (r.held_out_png, r.training_png):
        a = np.asarray(Image.open(png))
        assert a.shape == (3 * (128 + 2) + 2, 3 * (128 + 2) + 2, 3)
        tile = a[2:130, 2:130]
        assert (tile[::4, ::4].repeat(4, 0).repeat(4, 1) == tile).all()  # nearest neighbour
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["held_out"][0]["psnr"] == r.held_out[0].psnr
    text = format_report(r)
    assert "288 bits per image = 16 tokens x 18 bits (0.2812 bits per pixel)" in text
    assert "thumbnail 3x3" in text and "held_out.png" in text


def test_release_row_is_omitted_when_the_model_uses_the_release_sampler(tmp_path):
    torch.manual_seed(0)
    r = demo_report(FlowMo(flowmo_tiny()).eval(), tmp_path, images=2)
    assert [f.calls for f in r.held_out] == [31, 0]


@pytest.mark.parametrize("images", [0, -1, True, 2.0, "3"])
def test_bad_images(model, tmp_path, images):
    with pytest.raises(ValueError, match="images must be a positive int"):
        demo_report(model, tmp_path, images=images)


def test_cli(model, tmp_path, capsys):
    model.save_pretrained(tmp_path / "m")
    assert main(["--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "held-out photos (chelsea, coffee; never trained on): 10 crops" in out
    assert (tmp_path / "o" / "held_out.png").is_file() and (tmp_path / "o" / "training_crops.png").is_file()


@pytest.mark.parametrize("scale", [0, -2, True, 1.5, "2"])
def test_save_image_rows_bad_scale(tmp_path, scale):
    from flowmo.data.grids import save_image_rows

    with pytest.raises(ValueError, match="scale must be an int >= 1"):
        save_image_rows([torch.zeros(1, 3, 4, 4)], tmp_path / "x.png", scale=scale)


def test_cli_run_folder(model, tmp_path, capsys):
    run = tmp_path / "run"
    model.save_pretrained(run / "model")
    (run / "config.json").write_text(json.dumps({"train": {"seed": 3}}))
    assert main(["--run", str(run)]) == 0
    assert "held-out photos" in capsys.readouterr().out
    r = json.loads((run / "report.json").read_text())
    crops = BuiltinPhotos(32, train=False, length=10, seed=3)
    xt = torch.stack([crops[i] for i in range(10)])
    with torch.no_grad():
        code = model.quantize(model.encode(xt)).values
        yt = model.decode(code, noise=image_noise(3, range(len(xt)), xt.shape[1:])).images
    assert r["training"][0]["psnr"] == round(float(psnr(xt, yt).mean()), 2)


def _run_folder(tmp_path, name, config, model=None):
    run = tmp_path / name
    run.mkdir()
    (run / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if model is not None:
        model.save_pretrained(run / "model")
    return str(run)


def test_cli_bad_arguments(model, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file.png").write_bytes(b"x")
    model.save_pretrained(tmp_path / "m")
    cases = [
        ([], "give --run RUN"),
        (["--model", "m"], "give --run RUN"),
        (["--run", "nowhere"], "no config.json"),
        (["--run", _run_folder(tmp_path, "nomodel", {"train": {"seed": 0}})], "flowmo export"),
        (["--run", _run_folder(tmp_path, "broken", "{not json")], "is not a training config"),
        (["--run", _run_folder(tmp_path, "empty", {})], "is not a training config"),
        (["--model", str(tmp_path), "--out", "o"], "--model"),
        (["--model", "m", "--out", "o", "--train-seed", "-1"], "--train-seed must be >= 0"),
        (["--model", "m", "--out", "a_file.png"], "is a file"),
    ]
    for argv, match in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2, argv
        err = capsys.readouterr().err
        assert match in err and "Traceback" not in err, (argv, err)


def test_cli_folder_run_has_no_training_row(model, tmp_path, capsys):
    run = _run_folder(tmp_path, "r", {"train": {"seed": 0, "data": {"folder": "/some/images"}}}, model)
    assert main(["--run", run]) == 0
    out = capsys.readouterr().out
    assert "training crops" not in out and "held-out photos" in out
    r = json.loads((tmp_path / "r" / "report.json").read_text())
    assert r["training"] is None and r["training_png"] is None


def test_counts_and_model_type(model, tmp_path):
    r = demo_report(model, tmp_path, images=1, training_crops=False)
    assert "1 crop\n" in format_report(r) + "\n" and r.training is None
    r = demo_report(model, tmp_path, images=50)  # capped at the held-out set's 10, both sets
    assert r.images == 10 and "training crops (photos the model trained on): 10 crops" in format_report(r)
    with pytest.raises(TypeError, match="model must be a flowmo.FlowMo"):
        demo_report(model.spec, tmp_path)


def test_non_integer_token_bits_fsq(tmp_path):
    torch.manual_seed(0)
    spec = flowmo_tiny().replace(code_channels=6, quantizer={"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]},
                                 sampler={"steps": 1})
    r = demo_report(FlowMo(spec).eval(), tmp_path, images=2, training_crops=False)
    token_bits = 3 * 3 + 3 * np.log2(5)  # log2(8^3 * 5^3)
    assert r.token_bits == pytest.approx(token_bits, abs=1e-4)
    assert r.bits_per_image == pytest.approx(16 * token_bits, abs=1e-3)
    assert r.thumbnail_bits <= r.bits_per_image


def test_report_equals_the_runs_final_evaluation(tmp_path):
    """The report's figure for the model's own sampler is the run's final eval/ema/psnr and
    eval/ema/ssim (same EMA weights, crops and noise)."""
    from flowmo.train import Trainer, load_config
    from flowmo.train.export import export_checkpoint

    cfg = load_config(None, ["model=tiny", "model.sampler.steps=2", "train.steps=2", "train.seed=5",
                             "train.log.progress=false", "train.log.tensorboard=false", "train.ema.decay=0.5",
                             "train.optim.batch_size=2", "train.eval.images=10"])
    trainer = Trainer(cfg, tmp_path / "run", log=lambda s: None)
    summary = trainer.fit()
    trainer.close()
    export_checkpoint(tmp_path / "run", tmp_path / "run" / "model")
    assert main(["--run", str(tmp_path / "run")]) == 0
    r = json.loads((tmp_path / "run" / "report.json").read_text())
    end = summary["eval_end"]
    assert r["held_out"][0]["psnr"] == round(end["eval/ema/psnr"], 2)
    assert r["held_out"][0]["ssim"] == round(end["eval/ema/ssim"], 4)


@pytest.mark.parametrize("rows, kw, match", [
    ([], {}, "rows must be a non-empty list"),
    (torch.zeros(1, 3, 4, 4), {}, "rows must be a non-empty list"),
    ([torch.zeros(3, 4, 4)], {}, r"rows\[0\] must be a \(B, 3, H, W\)"),
    ([torch.zeros(1, 1, 4, 4)], {}, r"rows\[0\] must be a \(B, 3, H, W\)"),
    ([torch.zeros(0, 3, 4, 4)], {}, "B >= 1"),
    ([torch.zeros(1, 3, 4, 4, dtype=torch.uint8)], {}, "floating point"),
    ([torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5)], {}, r"rows\[1\] has images of \(4, 5\)"),
    ([torch.full((1, 3, 4, 4), float("nan"))], {}, "NaN or Inf"),
    ([torch.zeros(1, 3, 4, 4)], {"pad": -1}, "pad must be an int >= 0"),
    ([torch.zeros(1, 3, 4, 4)], {"pad": 1.5}, "pad must be an int >= 0"),
])
def test_save_image_rows_bad_input(tmp_path, rows, kw, match):
    from flowmo.data.grids import save_image_rows

    with pytest.raises(ValueError, match=match):
        save_image_rows(rows, tmp_path / "x.png", **kw)
    assert not (tmp_path / "x.png").exists()


def test_save_image_rows_layout(tmp_path):
    from flowmo.data.grids import save_image_rows

    a = torch.full((2, 3, 2, 2), -1.0)  # black
    b = torch.ones(1, 3, 2, 2)  # white... then a mid grey
    b[:, :, 0, 0] = 0.0
    save_image_rows([a, b], tmp_path / "g.png", pad=1, scale=2)
    g = np.asarray(Image.open(tmp_path / "g.png"))
    assert g.shape == (2 * (4 + 1) + 1, 2 * (4 + 1) + 1, 3)
    assert (g[1:5, 1:5] == 0).all() and (g[1:5, 6:10] == 0).all()  # row 0: two black tiles
    assert (g[6:8, 1:3] == 128).all() and (g[6:10, 3:5] == 255).all()  # row 1: grey 2x2 block
    assert (g[6:10, 6:10] == 255).all()  # the missing tile stays white
