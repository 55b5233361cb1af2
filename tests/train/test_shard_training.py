"""Training from tar shards (train.data.shards): the same run as from the folder of the same
images, bitwise; exact resume; every image once per epoch across ranks and micro-batches;
corrupt members skipped and recorded; the config's checks."""

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from flowmo.data.shard_writer import write_shards
from flowmo.data.shards import TarShardDataset
from flowmo.train import Trainer
from flowmo.train.sampler import StepBatchSampler

from .test_trainer import config as folder_config, params, _states


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = root / f"class{i % 2}"
        sub.mkdir(exist_ok=True)
        arr = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
        Image.fromarray(arr).save(sub / f"img{i}.png")
    return root


@pytest.fixture(scope="module")
def shards(image_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards")
    paths = write_shards(image_folder, str(out / "train-%06d.tar"), max_count=4)
    assert len(paths) == 2
    return str(out / "train-{000000..000001}.tar")


def shard_config(pattern, **train):
    """tests/train/test_trainer.py's tiny config, reading ``pattern`` instead of a folder."""
    data = {"folder": None, "shards": pattern, **train.pop("data", {})}
    return folder_config("unused", data=data, **train)


def test_a_run_from_shards_equals_the_run_from_the_folder_bitwise(tmp_path, image_folder, shards):
    a = Trainer(folder_config(image_folder, steps=3), tmp_path / "folder")
    a.fit()
    cfg = shard_config(shards, steps=3)
    assert cfg.train.data.shards == shards and cfg.train.data.folder is None
    b = Trainer(cfg, tmp_path / "shards")
    start = params(b.model)
    b.fit()
    pa, pb = params(a.model), params(b.model)
    assert pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(start[k], pb[k]) for k in pb)  # it trained


def test_data_loader_workers_read_the_same_batches(tmp_path, shards):
    runs = []
    for workers in (0, 2):
        t = Trainer(shard_config(shards, steps=2, data={"workers": workers}), tmp_path / f"w{workers}")
        t.fit()
        runs.append(params(t.model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])


def test_interrupted_and_resumed_from_shards_equals_uninterrupted_bitwise(tmp_path, shards):
    cfg = shard_config(shards, steps=4)
    full = Trainer(cfg, tmp_path / "full")
    full.fit()
    part = Trainer(cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 2})}), tmp_path / "part")
    part.fit()
    resumed = Trainer(cfg, tmp_path / "part", resume=True)
    assert resumed.step == 2
    resumed.fit()
    (p1, e1, o1), (p2, e2, o2) = _states(full), _states(resumed)
    assert all(torch.equal(p1[k], p2[k]) for k in p1)
    assert all(torch.equal(e1[k], e2[k]) for k in e1)
    for k, st in o1["state"].items():
        for f, v in st.items():
            assert torch.equal(v, o2["state"][k][f])


@pytest.mark.parametrize("world,accum,batch", [(2, 1, 2), (2, 2, 1), (2, 3, 2)])
def test_ranks_and_micro_batches_see_each_shard_image_once_per_epoch(shards, world, accum, batch):
    """What each of ``world`` gloo ranks would read (the trainer's sampler over the shard dataset,
    rank by rank): every image exactly once per epoch, whichever rank and micro-batch reads it."""
    ds = TarShardDataset(shards, 8)
    n = len(ds)
    samplers = [StepBatchSampler(n, batch, accum, world, r, seed=3) for r in range(world)]
    per_step = world * accum * batch
    steps = 3 * n // per_step + 2
    seen = {}
    for s in range(steps):
        for r, smp in enumerate(samplers):
            for a in range(accum):
                for epoch, index in smp.micro_batch(s, a):
                    seen.setdefault(epoch, []).append(ds.name(index))
    full = [e for e in seen if len(seen[e]) == n]
    assert len(full) >= 3
    for e in full:
        assert sorted(seen[e]) == sorted(ds.name(i) for i in range(n))


def test_two_gloo_ranks_from_shards_equal_one_process_from_the_folder(tmp_path, image_folder, shards):
    """Under torchrun (2 gloo ranks, batch 2 each) from the shards, the run equals one process from
    the folder with 2 accumulated micro-batches: the ranks read the single process's images."""
    import json
    import os
    import subprocess
    import sys

    from conftest import HANG_GUARD_S
    from flowmo.folders.checkpoints import latest_checkpoint, load_checkpoint

    cfg = shard_config(shards, steps=3, device="cpu")
    (tmp_path / "ddp.json").write_text(json.dumps({"model": "tiny", "train": cfg.train.model_dump(mode="json")}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "flowmo", "train", "--config", str(tmp_path / "ddp.json"), "--out", str(tmp_path / "ddp")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    single = Trainer(folder_config(image_folder, steps=3, device="cpu", optim={"grad_accum": 2}), tmp_path / "one")
    single.fit()
    parts, state = load_checkpoint(latest_checkpoint(tmp_path / "ddp" / "checkpoints"), ["model"])
    assert state["step"] == 3 and state["world_size"] == 2
    for k, v in single.model.state_dict().items():
        assert (parts["model"][k] - v).abs().max().item() <= 1e-5, k


def test_corrupt_members_are_skipped_and_recorded_in_the_summary(tmp_path, image_folder):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(image_folder, folder)
    (folder / "class0" / "broken.png").write_bytes(b"not a png at all")
    paths = write_shards(folder, str(tmp_path / "s-%02d.tar"), max_count=3)
    t = Trainer(shard_config([str(p) for p in paths], steps=4, optim={"batch_size": 4}), tmp_path / "run")
    summary = t.fit()
    assert summary["skipped_images"] == [f"{paths[0]}/class0/broken.png"]


@pytest.mark.parametrize("n", [3, 5])  # in the first shard (4 images), in the first two
def test_held_out_images_come_from_the_shards(tmp_path, image_folder, shards, n):
    from flowmo.data.folders import ImageFolderDataset

    t = Trainer(shard_config(shards, steps=1, eval={"enabled": True, "images": n}), tmp_path / "run")
    images, ids = t.held_out_with_ids()
    ref = ImageFolderDataset(image_folder, t.config.model.image_size, train=False)
    assert ids == list(range(n)) and torch.equal(images, torch.stack([ref[i] for i in ids]))


def test_the_config_refuses_folder_and_shards_together_and_empty_shards(image_folder, shards):
    with pytest.raises(ValidationError, match="train.data.folder and train.data.shards are both set"):
        folder_config(image_folder, data={"shards": shards})
    with pytest.raises(ValidationError, match="train.data.shards is an empty list"):
        folder_config(image_folder, data={"folder": None, "shards": []})
    cfg = folder_config(image_folder, data={"folder": None, "shards": [shards, shards.replace("000001", "000000")]})
    assert isinstance(cfg.train.data.shards, tuple)


def test_a_missing_shard_is_refused_naming_the_argument(tmp_path, shards):
    cfg = shard_config(shards.replace("000001}", "000002}"), steps=1)
    with pytest.raises(FileNotFoundError, match="shards: tar shard not found"):
        Trainer(cfg, tmp_path / "run").fit()
