"""Images of any size (issue 26): the tile grid's geometry and its partition-of-unity blend,
the tiled tokenize / decode / reconstruct (an image of the model's size equals the untiled
path; any size and aspect works; a smaller image is refused with the reason), the joint decode
against independent tiles, tile grids in token files, and the CLI's --tiled."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import flowmo
from flowmo import cli
from flowmo.data.tokens import read_tokens, write_tokens
from flowmo.data.tiles import TileGrid, TiledTokens, tile_grid
from flowmo.testing.syncs import count_host_syncs

from conftest import random_png_folder

FAST = settings(max_examples=40, deadline=None, derandomize=True, database=None)


@st.composite
def grids(draw):
    s = draw(st.sampled_from([1, 2, 8, 16, 32]))
    return tile_grid(draw(st.integers(s, 5 * s + 3)), draw(st.integers(s, 5 * s + 3)), s, draw(st.integers(0, s - 1)))


# ----------------------------------------------------------------------------- geometry
@FAST
@given(grids())
def test_the_tiles_cover_the_image_with_at_least_the_overlap(g):
    for offsets, length in ((g.ys, g.height), (g.xs, g.width)):
        assert offsets[0] == 0 and offsets[-1] + g.tile == length
        assert all(0 < b - a <= g.tile - g.overlap for a, b in zip(offsets, offsets[1:]))
    assert g.count == len(g.positions()) == g.rows * g.cols


@FAST
@given(grids())
def test_the_blend_weights_are_a_partition_of_unity(g):
    w = g.weights(dtype=torch.float64)
    assert w.shape == (g.count, 1, g.tile, g.tile) and bool((w > 0).all())
    placed = torch.zeros(g.height, g.width, dtype=torch.float64)
    for k, (y, x) in enumerate(g.positions()):
        placed[y:y + g.tile, x:x + g.tile] += w[k, 0]
    torch.testing.assert_close(placed, torch.ones_like(placed))
    ones = torch.ones(1, g.count, 1, g.tile, g.tile, dtype=torch.float64)
    torch.testing.assert_close(g.blend(ones), torch.ones(1, 1, g.height, g.width, dtype=torch.float64))


@FAST
@given(grids(), st.integers(0, 2**31 - 1))
def test_crops_blend_and_paste_back_to_the_image(g, seed):
    x = torch.randn(2, 3, g.height, g.width, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    tiles = g.crop(x)
    assert tiles.shape == (2, g.count, 3, g.tile, g.tile)
    assert torch.equal(g.paste(tiles), x)
    torch.testing.assert_close(g.blend(tiles), x)


@FAST
@given(grids())
def test_a_grid_round_trips_through_json_and_tampered_offsets_are_refused(g):
    d = json.loads(json.dumps(g.to_dict()))
    assert TileGrid.from_dict(d) == g
    with pytest.raises(ValueError, match=r"ys \(.*\) are not the \d+ tile offsets of a"):
        TileGrid.from_dict({**d, "ys": [v + 1 for v in d["ys"]]})


@pytest.mark.parametrize("args,error,words", [
    ((31, 40, 32, 8), ValueError, r"height \(31\) must be at least the model's image size \(32\)"),
    ((40, 5, 32, 8), ValueError, r"width \(5\) must be at least the model's image size \(32\)"),
    ((40, 40, 32, 32), ValueError, r"overlap must be below the tile size \(32\), got 32"),
    ((40, 40, 32, -1), ValueError, "overlap must be an int >= 0, got int -1"),
    ((40.0, 40, 32, 8), TypeError, "height must be an int >= 1, got float 40.0"),
])
def test_tile_grid_names_a_bad_argument(args, error, words):
    with pytest.raises(error, match=words):
        tile_grid(*args)


# ----------------------------------------------------------------------------- the model's tiled paths
@pytest.fixture(scope="module")
def model() -> flowmo.FlowMo:
    torch.manual_seed(0)
    return flowmo.build(flowmo.flowmo_tiny()).eval()


def _images(b, h, w, seed=1):
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


SAMPLERS = [None, {"steps": 3}, {"steps": 2, "solver": {"name": "heun"}, "guidance": {"scale": 2.0, "interval": None}}]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=["spec", "euler-3", "heun-cfg"])
@pytest.mark.parametrize("joint", [True, False])
def test_an_image_of_the_models_size_is_one_tile_equal_to_the_untiled_paths(model, sampler, joint):
    x, noise = _images(2, 32, 32), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    kw = {"noise": noise, "sampler": sampler}
    assert torch.equal(model.reconstruct_tiled(x, joint=joint, **kw), model.reconstruct(x, **kw))
    tiled = model.tokenize_tiled(x)
    assert tiled.tokens.shape == (2, 1, 1, 16) and tiled.grid.count == 1
    assert torch.equal(tiled.tokens[:, 0, 0], model.tokenize(x))
    assert torch.equal(model.detokenize_tiled(tiled, joint=joint, **kw), model.detokenize(tiled.tokens[:, 0, 0], **kw))


@pytest.mark.parametrize("h,w", [(32, 80), (81, 33), (64, 64), (45, 100)])
def test_any_size_and_aspect_ratio_reconstructs_at_its_size(model, h, w):
    x = _images(2, h, w)
    grid = model.tile_grid(h, w)
    tiled = model.tokenize_tiled(x)
    assert tiled.grid == grid and tiled.tokens.shape == (2, grid.rows, grid.cols, 16)
    for i in range(grid.rows):  # each tile's tokens are its crop's
        for j in range(grid.cols):
            y, xx = grid.ys[i], grid.xs[j]
            assert torch.equal(tiled.tokens[:, i, j], model.tokenize(x[..., y:y + 32, xx:xx + 32]))
    out = model.detokenize_tiled(tiled, sampler={"steps": 2}, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, h, w) and bool(torch.isfinite(out).all())
    assert model.reconstruct_tiled(x, overlap=0, sampler={"steps": 1}).shape == (2, 3, h, w)


def test_a_smaller_image_is_refused_with_the_reason(model):
    for h, w in ((31, 64), (64, 16)):
        with pytest.raises(ValueError, match=r"images: (height|width) \(\d+\) must be at least the model's image size"):
            model.reconstruct_tiled(_images(1, h, w))
        with pytest.raises(ValueError, match="must be at least the model's image size"):
            model.tokenize_tiled(_images(1, h, w))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\) with H, W >= 32"):
        model.reconstruct_tiled(torch.zeros(3, 40, 40))


def test_one_euler_step_joint_equals_independent_but_more_steps_differ(model):
    """At one Euler step the blend of velocities is the blend of the tiles' results (the update
    is linear in v); with more steps the joint decode feeds the blended state back to every tile."""
    x = _images(1, 48, 64)
    noise = torch.randn(1, 3, 48, 64, generator=torch.Generator().manual_seed(3))
    one = {"steps": 1, "guidance": {"scale": 1.0}, "clip": False}  # clip: the tiles clipped before the blend
    torch.testing.assert_close(model.reconstruct_tiled(x, noise=noise, sampler=one),
                               model.reconstruct_tiled(x, noise=noise, sampler=one, joint=False))
    four = {"steps": 4, "guidance": {"scale": 1.0}, "clip": False}
    a = model.reconstruct_tiled(x, noise=noise, sampler=four)
    b = model.reconstruct_tiled(x, noise=noise, sampler=four, joint=False)
    assert (a - b).abs().max() > 1e-4


def test_the_joint_decode_is_one_state_the_tiles_velocities_blended(model):
    """decode_tiled's joint decode against its definition: x <- x - dt * blend(v(crops of x))."""
    x = _images(1, 40, 56)
    grid = model.tile_grid(40, 56, overlap=12)
    code = model.quantize(model.encode(grid.crop(x).flatten(0, 1)), losses=False).values
    code = code.unflatten(0, (1, grid.rows, grid.cols))
    noise = torch.randn(1, 3, 40, 56, generator=torch.Generator().manual_seed(4))
    out = model.decode_tiled(code, grid, noise=noise, sampler={"steps": 2, "grid": {"name": "linear"},
                                                                "guidance": {"scale": 1.0}},
                             return_intermediates=True)
    z, cond = noise.clone(), model.conditioning(code.flatten(0, 2))
    with torch.no_grad():
        for t0, t1 in ((1.0, 0.5), (0.5, 0.0)):
            v = model.decoder_velocity(grid.crop(z).flatten(0, 1), torch.full((grid.count,), t0), cond)
            z = z + (t1 - t0) * grid.blend(v.unflatten(0, (1, grid.count)))
    torch.testing.assert_close(out.images, z.clamp(-1, 1) if model.spec.sampler.clip else z, rtol=1e-5, atol=1e-5)
    assert len(out.intermediates) == 2 and out.intermediates[0].shape == (1, 3, 40, 56)


def test_tiled_paths_make_one_host_sync(model):
    x = _images(1, 40, 72)
    tiled = model.tokenize_tiled(x)
    for fn in (lambda: model.reconstruct_tiled(x, sampler={"steps": 3}), lambda: model.tokenize_tiled(x),
               lambda: model.detokenize_tiled(tiled, sampler={"steps": 3})):
        with count_host_syncs() as syncs:
            fn()
        assert syncs.count == 1, syncs.report()


def test_bad_tiled_arguments_are_named(model):
    tiled = model.tokenize_tiled(_images(1, 40, 40))
    with pytest.raises(ValueError, match="grid differs from the TiledTokens' own grid"):
        model.detokenize_tiled(tiled, model.tile_grid(64, 64))
    with pytest.raises(TypeError, match="grid must be a TileGrid of tiles of the model's image size"):
        model.detokenize_tiled(tiled.tokens, None)
    with pytest.raises(TypeError, match=r"grid must be a TileGrid of tiles of the model's image size \(32"):
        model.detokenize_tiled(tiled.tokens, tile_grid(40, 40, 16, 4))
    with pytest.raises(ValueError, match=r"tokens must have shape \(batch, 2, 2, 16\)"):
        model.detokenize_tiled(tiled.tokens[:, :1], tiled.grid)
    with pytest.raises(TypeError, match="joint must be a bool"):
        model.reconstruct_tiled(_images(1, 40, 40), joint="yes")
    with pytest.raises(ValueError, match=r"noise must have shape"):
        model.reconstruct_tiled(_images(1, 40, 40), noise=torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="overlap must be below the tile size"):
        model.tokenize_tiled(_images(1, 40, 40), overlap=32)


def test_a_continuous_model_reconstructs_tiled_and_refuses_tiled_tokens():
    torch.manual_seed(0)
    kl = flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": "kl"})).eval()
    assert kl.reconstruct_tiled(_images(1, 40, 50), sampler={"steps": 1}).shape == (1, 3, 40, 50)
    with pytest.raises(ValueError, match="bottleneck 'kl' is continuous: it has no tokens"):
        kl.tokenize_tiled(_images(1, 40, 50))


def test_a_bfloat16_model_decodes_tiles_in_a_float32_state(model):
    bf = flowmo.build(flowmo.flowmo_tiny()).to(torch.bfloat16).eval()
    out = bf.reconstruct_tiled(_images(1, 40, 48).bfloat16(), sampler={"steps": 2})
    assert out.dtype == torch.float32 and out.shape == (1, 3, 40, 48)


# ----------------------------------------------------------------------------- token files
def test_tile_grids_round_trip_through_token_files(model, tmp_path):
    grids = [model.tile_grid(32, 32), model.tile_grid(40, 72), model.tile_grid(64, 33, overlap=0)]
    tokens = torch.arange(sum(g.count for g in grids) * 16).reshape(-1, 16) % 2**18
    path = write_tokens(tmp_path / "t.safetensors", tokens, spec=model.spec, sources=["a", "b", "c"], groups=False,
                        tiles=grids)
    tf = read_tokens(path)
    assert tf.tiles == grids and tf.sources == ["a", "b", "c"] and torch.equal(tf.tokens, tokens)
    assert [tf.rows(i) for i in range(3)] == [slice(0, 1), slice(1, 1 + grids[1].count),
                                              slice(1 + grids[1].count, tokens.shape[0])]
    with pytest.raises(ValueError, match=r"a row per tile \(\d+\)"):
        write_tokens(tmp_path / "u.safetensors", tokens[:-1], spec=model.spec, sources=["a", "b", "c"], groups=False,
                     tiles=grids)
    with pytest.raises(ValueError, match="tiles must hold one TileGrid of 32-pixel tiles per source"):
        write_tokens(tmp_path / "u.safetensors", tokens, spec=model.spec, sources=["a", "b"], groups=False,
                     tiles=grids)


def test_a_token_file_with_bad_tiles_metadata_is_refused(model, tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    grids = [model.tile_grid(40, 72)]
    path = write_tokens(tmp_path / "t.safetensors", torch.zeros(grids[0].count, 16, dtype=torch.int64),
                        spec=model.spec, sources=["a"], groups=False, tiles=grids)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    data = load_file(str(path))
    for bad, words in ((json.dumps([{**grids[0].to_dict(), "width": 80}]), "are not the \\d+ tile offsets"),
                       ("[1, 2", "bad 'tiles' metadata"),
                       (json.dumps([model.tile_grid(64, 64).to_dict()]), "does not fit its tokens")):
        save_file(data, str(tmp_path / "bad.safetensors"), metadata={**meta, "tiles": bad})
        with pytest.raises(ValueError, match=words):
            read_tokens(tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- the CLI
def _cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def model_folder(model, tmp_path_factory):
    return model.save_pretrained(tmp_path_factory.mktemp("m") / "model")


def _png(path, w, h, seed=0):
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_the_cli_reconstructs_tokenizes_and_detokenizes_at_each_images_size(model, model_folder, tmp_path, capsys):
    from PIL import Image

    from flowmo.cli.io import load_image
    from flowmo.samplers.noise import image_noise

    sizes = {"a.png": (32, 32), "b.png": (70, 40), "c.png": (50, 90)}
    for i, (name, (w, h)) in enumerate(sizes.items()):
        _png(tmp_path / "in" / name, w, h, seed=i)
    steps = ["--steps", 2]
    assert _cli(["reconstruct", "--model", model_folder, "--input", tmp_path / "in", "--output", tmp_path / "r",
                 "--tiled", "--overlap", 4, *steps], capsys)[0] == 0
    assert _cli(["tokenize", "--model", model_folder, "--input", tmp_path / "in", "--output", tmp_path / "t.safetensors",
                 "--tiled", "--overlap", 4], capsys)[0] == 0
    assert _cli(["detokenize", "--model", model_folder, "--tokens", tmp_path / "t.safetensors", "--output",
                 tmp_path / "d", "--tile-batch", 3, *steps], capsys)[0] == 0  # 3 tiles per call: the same images
    tf = read_tokens(tmp_path / "t.safetensors")
    assert [(g.width, g.height) for g in tf.tiles] == list(sizes.values()) and all(g.overlap == 4 for g in tf.tiles)
    for i, (name, (w, h)) in enumerate(sizes.items()):
        r, d = Image.open(tmp_path / "r" / name), Image.open(tmp_path / "d" / name)
        assert r.size == d.size == (w, h)
        assert r.tobytes() == d.tobytes()  # the same tokens and the same noise
        x = load_image(tmp_path / "in" / name, None)[None]  # the same as the Python API
        y = model.reconstruct_tiled(x, overlap=4, noise=image_noise(0, [i], (3, h, w)), sampler={"steps": 2})[0]
        expected = ((y.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy().tobytes()
        assert r.tobytes() == expected


@pytest.mark.parametrize("argv,words", [
    (["reconstruct", "--overlap", 4], "--overlap applies only with --tiled"),
    (["reconstruct", "--tiled", "--overlap", 32], r"--overlap must be in \[0, 31\]"),
    (["reconstruct", "--tiled"], "is 40 x 20 pixels, its height below the model's image size \\(32\\)"),
    (["reconstruct", "--tile-batch", 2], "--tile-batch applies only with --tiled"),
    (["tokenize", "--tiled", "--groups"], "not with --groups"),
    (["tokenize", "--overlap", 3], "--overlap applies only with --tiled"),
])
def test_the_cli_refuses_bad_tiling_in_one_line(model_folder, tmp_path, capsys, argv, words):
    import re

    _png(tmp_path / "in" / "a.png", 48, 40)
    if "below the model" in words:
        _png(tmp_path / "in" / "small.png", 40, 20)
    out = tmp_path / ("o.safetensors" if argv[0] == "tokenize" else "o")
    rc, err = _cli([argv[0], "--model", model_folder, "--input", tmp_path / "in", "--output", out, *argv[1:]], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and re.search(words, err), err


def test_eval_tiled_measures_each_image_at_its_size_as_reconstruct_tiled_makes_it(model, model_folder, tmp_path,
                                                                                  capsys):
    import csv

    from flowmo.cli.io import load_image
    from flowmo.metrics.pixel import psnr
    from flowmo.samplers.noise import image_noise

    sizes = [(40, 32), (32, 64), (50, 45)]
    for i, (w, h) in enumerate(sizes):
        _png(tmp_path / "in" / f"{i}.png", w, h, seed=i)
    rc, err = _cli(["eval", "--model", model_folder, "--data", tmp_path / "in", "--tiled", "--overlap", 6, "--lpips",
                    "none", "--no-fid", "--steps", 2, "--seed", 3, "--output", tmp_path / "ev", "--quiet"], capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["metrics"]["bits_per_pixel"] is None and record["protocol"]["tiled"]["overlap"] == 6
    assert not (tmp_path / "ev" / "best_worst.png").exists()
    rows = list(csv.DictReader(open(tmp_path / "ev" / "per_image.csv")))
    for row in rows:
        i = int(row["id"])
        x = load_image(tmp_path / "in" / row["image"], None)[None]
        y = model.reconstruct_tiled(x, overlap=6, noise=image_noise(3, [i], tuple(x.shape[1:])), sampler={"steps": 2})
        assert float(row["psnr"]) == pytest.approx(psnr(x, y.clamp(-1, 1)).item(), abs=1e-9)
    _png(tmp_path / "in" / "small.png", 20, 40)
    rc, err = _cli(["eval", "--model", model_folder, "--data", tmp_path / "in", "--tiled", "--lpips", "none",
                    "--no-fid", "--output", tmp_path / "ev2", "--quiet"], capsys)
    assert rc == 2 and "smaller than the model's image size (32)" in err
    rc, err = _cli(["eval", "--model", model_folder, "--data", "builtin", "--tiled", "--output", tmp_path / "ev3"],
                   capsys)
    assert rc == 2 and "--tiled evaluates an image folder" in err


def test_the_512_example_runs_on_a_small_model_and_names_absent_weights(model, tmp_path, capsys, monkeypatch):
    """examples/tiles/hi_512.py with the tiny model (the released flowmo_hi is not here): it
    writes its three images; with a released name offline it says which file is missing."""
    from examples.tiles import hi_512

    folder = flowmo.build(flowmo.flowmo_tiny().replace(sampler={"steps": 1})).save_pretrained(tmp_path / "m")
    assert hi_512.main(["--model", str(folder), "--overlap", "0", "--out", str(tmp_path / "o"), "--device", "cpu"]) == 0
    assert {p.name for p in (tmp_path / "o").iterdir()} == {"original.png", "joint.png", "pasted.png"}
    assert "joint: 16 x 16 tiles of 32 px (overlap 0)" in capsys.readouterr().out
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("FLOWMO_CACHE", str(tmp_path / "fc"))
    assert hi_512.main(["--out", str(tmp_path / "o2"), "--device", "cpu"]) == 2
    assert "flowmo_hi.pth" in capsys.readouterr().err


def test_tile_batch_bounds_the_decoder_calls_and_gives_the_same_images(model):
    x = _images(2, 40, 72)
    noise = torch.randn(2, 3, 40, 72, generator=torch.Generator().manual_seed(5))
    calls = []
    original = model.decoder_velocity

    def counting(x_t, t, cond):
        calls.append(x_t.shape[0])
        return original(x_t, t, cond)

    model.decoder_velocity = counting
    try:
        a = model.reconstruct_tiled(x, noise=noise, sampler={"steps": 2}, tile_batch=5)
    finally:
        del model.decoder_velocity
    assert max(calls) <= 5 and sum(calls) == 2 * 2 * model.tile_grid(40, 72).count  # 2 steps, 2 images
    torch.testing.assert_close(a, model.reconstruct_tiled(x, noise=noise, sampler={"steps": 2}), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="tile_batch must be a positive int or None"):
        model.reconstruct_tiled(x, tile_batch=0)


def test_a_huge_or_hand_built_grid_is_refused_fast_and_named(model):
    import time

    t0 = time.process_time()
    with pytest.raises(ValueError, match=r"grid: ys \(0,\) are not the \d+ tile offsets"):
        TileGrid.from_dict({"height": 10**12, "width": 50, "tile": 32, "overlap": 8, "ys": [0], "xs": [0, 18]})
    assert time.process_time() - t0 < 5  # counted, not built (was: minutes and gigabytes)
    for ys, xs in (((0, 4), (0, 5)), ((0, 20), (0, 18)), ((0, -1), (0, 18)), ((0, 8.0), (0, 18))):
        with pytest.raises(ValueError, match="are not the 2 tile offsets of a 40 x 50 image"):
            TileGrid(40, 50, 32, 8, ys, xs)
    with pytest.raises(TypeError, match="height must be an int >= 1"):
        TileGrid("40", 50, 32, 8, (0,), (0,))


def test_the_overlap_and_an_empty_batch_are_named_as_such(model):
    with pytest.raises(ValueError, match="^overlap must be below the tile size"):
        model.reconstruct_tiled(_images(1, 40, 40), overlap=32)
    with pytest.raises(TypeError, match="^overlap must be an int"):
        model.reconstruct_tiled(_images(1, 40, 40), overlap=1.5)
    with pytest.raises(ValueError, match="batch not empty"):
        model.reconstruct_tiled(torch.empty(0, 3, 40, 50))


def test_evaluate_model_checks_its_tiled_arguments(model):
    from flowmo.metrics.run import evaluate_model

    kw = dict(lpips=(), fid=False, progress=False)
    with pytest.raises(TypeError, match="tiled must be a bool"):
        evaluate_model(model, _images(1, 40, 40), tiled="no", **kw)
    with pytest.raises(ValueError, match="overlap and tile_batch apply only with tiled=True"):
        evaluate_model(model, _images(1, 32, 32), overlap=4, **kw)
    with pytest.raises(ValueError, match=r"images: height \(20\) must be at least"):
        evaluate_model(model, _images(1, 20, 40), tiled=True, **kw)
    with pytest.raises(ValueError, match=r"images must be \(B, 3, H, W\) tensors for tiled=True"):
        evaluate_model(model, torch.rand(2, 4, 40, 40) * 2 - 1, tiled=True, **kw)


def test_token_file_rows_are_indexed_and_empty_tiles_refused(model, tmp_path):
    grids = [model.tile_grid(40, 40)] * 3
    path = write_tokens(tmp_path / "t.safetensors", torch.zeros(12, 16, dtype=torch.int64), spec=model.spec,
                        sources=["a", "b", "c"], groups=False, tiles=grids)
    tf = read_tokens(path)
    assert [tf.rows(i) for i in range(3)] == [slice(0, 4), slice(4, 8), slice(8, 12)]
    with pytest.raises(IndexError, match="source index 3 out of range for 3 sources"):
        tf.rows(3)
    for bad in ([], grids[0]):
        with pytest.raises(TypeError, match="tiles must be a non-empty list of TileGrid"):
            write_tokens(tmp_path / "u.safetensors", torch.zeros(4, 16, dtype=torch.int64), spec=model.spec,
                         sources=["a"], groups=False, tiles=bad)


def test_eval_tiled_checks_every_size_first_and_skips_unreadable_files(model_folder, tmp_path, capsys):
    _png(tmp_path / "in" / "a.png", 48, 40)
    (tmp_path / "in" / "b.png").write_bytes(b"not a png")
    rc, err = _cli(["eval", "--model", model_folder, "--data", tmp_path / "in", "--tiled", "--lpips", "none",
                    "--no-fid", "--steps", 1, "--output", tmp_path / "ev", "--quiet"], capsys)
    assert rc == 0, err
    record = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert record["metrics"]["n_images"] == 1 and record["protocol"]["data"]["skipped_unreadable"][0].endswith("b.png")
    _png(tmp_path / "in" / "z_small.png", 20, 40)
    rc, err = _cli(["eval", "--model", model_folder, "--data", tmp_path / "in", "--tiled", "--lpips", "none",
                    "--no-fid", "--output", tmp_path / "ev2", "--quiet"], capsys)
    assert rc == 2 and "z_small.png" in err and not (tmp_path / "ev2").exists()
