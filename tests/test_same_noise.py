"""One per-image noise recipe: ``flowmo reconstruct --seed S``, ``flowmo eval --seed S`` and the
trainer's held-out evaluation (``train.seed = S``) decode the same image into the same pixels."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from flowmo.cli import main as flowmo_main
from flowmo.samplers.noise import image_noise
from flowmo.cli.eval import main as eval_main
from flowmo.train import Trainer, load_config

SIZE = 32  # the tiny preset's image size
PAD = 2  # save_image_rows' padding
N = 4  # images: flowmo eval shows the best and worst half


@pytest.fixture(autouse=True)
def _no_weight_files(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)


def _folder(root, n=None):
    n = n or N
    rng = np.random.default_rng(11)
    root.mkdir()
    for i in range(n):  # already SIZE x SIZE: no resize, the same pixels on every path
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    return root


def _cell(grid, row, col):
    y, x = PAD + row * (SIZE + PAD), PAD + col * (SIZE + PAD)
    return grid[y:y + SIZE, x:x + SIZE]


def _trainer(folder, out, seed):
    cfg = load_config({"model": "tiny", "train": {
        "steps": 1, "seed": seed, "data": {"folder": str(folder)}, "optim": {"batch_size": 2},
        "log": {"tensorboard": False, "progress": False},
        "eval": {"enabled": True, "images": N, "steps": 2}}})
    return Trainer(cfg, out)


def _reconstruct(model, folder, out, seed, batch):
    assert flowmo_main(["reconstruct", "--model", str(model), "--input", str(folder), "--output", str(out),
                        "--seed", str(seed), "--steps", "2", "--batch-size", str(batch), "--quiet"]) == 0
    return [np.asarray(Image.open(out / f"img{i}.png")) for i in range(N)]


def test_the_same_seed_gives_the_same_reconstruction_in_the_cli_the_evaluator_and_the_trainer(tmp_path):
    folder = _folder(tmp_path / "images")
    seed = 5

    # the trainer's held-out evaluation before step 1: row 0 originals, row 1 reconstructions
    trainer = _trainer(folder, tmp_path / "run", seed)
    trainer.evaluate()
    grid = np.asarray(Image.open(tmp_path / "run" / "eval" / "step_00000000.png"))
    trained = [_cell(grid, 1, i) for i in range(N)]
    model = trainer.model.save_pretrained(tmp_path / "model")

    # flowmo reconstruct (two batch sizes) and flowmo eval on the same weights and images
    cli = _reconstruct(model, folder, tmp_path / "cli", seed, batch=3)
    cli_b1 = _reconstruct(model, folder, tmp_path / "cli_b1", seed, batch=1)
    assert eval_main(["--model", str(model), "--data", str(folder), "--output", str(tmp_path / "eval"),
                      "--seed", str(seed), "--steps", "2", "--batch-size", "2", "--lpips", "none", "--no-fid",
                      "--workers", "0", "--rank-by", "psnr", "--quiet"]) == 0
    res = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    best_worst = np.asarray(Image.open(tmp_path / "eval" / "best_worst.png"))
    evaluated = {}
    for row, key in ((1, "best"), (3, "worst")):
        for col, ex in enumerate(res["best_worst"][key]):
            evaluated[ex["id"]] = _cell(best_worst, row, col)
    assert sorted(evaluated) == list(range(N))

    for i in range(N):
        # one decode may differ from another in the last float bit (batch shapes): at most one 8-bit level
        for other in (trained[i], cli_b1[i], evaluated[i]):
            assert np.abs(cli[i].astype(int) - other.astype(int)).max() <= 1, i
        assert np.mean(cli[i] == trained[i]) > 0.99 and np.mean(cli[i] == evaluated[i]) > 0.99

    # the noise matters: another seed gives visibly other pixels
    other = _reconstruct(model, folder, tmp_path / "cli_other", seed + 1, batch=3)
    assert all(np.abs(a.astype(int) - b.astype(int)).max() > 8 for a, b in zip(cli, other))


def test_image_noise_recipe():
    # computed independently: numpy's SeedSequence words -> one 63-bit torch seed, one randn per image
    words = np.random.SeedSequence([7, 4]).generate_state(2, dtype=np.uint32)
    g = torch.Generator().manual_seed((int(words[0]) * 2**32 + int(words[1])) % 2**63)
    expected = torch.randn(3, 4, 5, generator=g)
    got = image_noise(7, [9, 4], (3, 4, 5))
    assert got.shape == (2, 3, 4, 5) and got.dtype == torch.float32
    assert torch.equal(got[1], expected)
    assert torch.equal(image_noise(7, [4], (3, 4, 5), dtype=torch.float64)[0], expected.double())
    assert image_noise(7, [], (3, 4, 5)).shape == (0, 3, 4, 5)
    for bad, word in (((-1, [0], (3, 4, 4)), "seed"), ((0, [-2], (3, 4, 4)), "ids"), ((0, [0], (3, 0)), "shape"),
                      ((True, [0], (3, 4, 4)), "seed")):
        with pytest.raises(ValueError, match=word):
            image_noise(*bad)


def test_an_unreadable_held_out_file_keeps_the_other_images_ids(tmp_path):
    """The trainer's held-out images are the first train.eval.images files of the listing; an
    unreadable one is skipped with its id, as flowmo eval skips it, so the ids (and the noise)
    of the others do not shift."""
    folder = _folder(tmp_path / "images")
    (folder / "img1.png").write_bytes(b"not a png")
    trainer = _trainer(folder, tmp_path / "run", seed=5)
    images, ids = trainer.held_out_with_ids()
    assert ids == [0, 2, 3] and images.shape[0] == 3
    expected = torch.stack([torch.from_numpy(np.array(Image.open(folder / f"img{i}.png"))).permute(2, 0, 1)
                            for i in ids]).float() / 127.5 - 1
    assert torch.allclose(images, expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(dtype=torch.int64), "floating torch dtype"), (dict(seed=2**63), "below 2\\*\\*63"),
    (dict(ids=[2**63]), "below 2\\*\\*63"), (dict(ids=torch.tensor([0.5])), "1-D integer tensor"),
])
def test_image_noise_refuses_what_it_cannot_honour(kwargs, match):
    args = {"seed": 0, "ids": [0], "shape": (3, 4, 4), **kwargs}
    with pytest.raises(ValueError, match=match):
        image_noise(args.pop("seed"), args.pop("ids"), args.pop("shape"), **args)


def test_image_noise_takes_a_tensor_of_ids():
    assert torch.equal(image_noise(3, torch.tensor([4, 1]), (2, 2)), image_noise(3, [4, 1], (2, 2)))
