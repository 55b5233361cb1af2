"""Tar shards (flowmo.data.shards): the index, the folder's order and decoding, labels, unreadable
members, brace patterns, bad inputs, and the folder -> shards tool."""

import io
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flowmo.data.folders import ImageFolderDataset
from flowmo.data.listing import list_folder_images
from flowmo.data.shard_writer import main as shards_main, write_shards
from flowmo.data.shards import TarShardDataset, expand_shards, split_key


def png_bytes(seed, size=(40, 48)):
    arr = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(path, members, mode="w"):
    """members: (name, bytes) in order."""
    with tarfile.open(path, mode) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    for i in range(7):
        sub = root / f"class{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"img{i}.png").write_bytes(png_bytes(i, (40 + i, 48)))
    (root / "class1" / "photo-b.png").write_bytes(png_bytes(20))  # "-" sorts before "."
    return root


@pytest.mark.parametrize("max_count", [1, 3, 100])
def test_shards_of_a_folder_equal_the_folder_item_by_item(tmp_path, folder, max_count):
    paths = write_shards(folder, str(tmp_path / "s-%04d.tar"), max_count=max_count)
    assert len(paths) == -(-8 // max_count)
    shards = TarShardDataset(str(tmp_path / f"s-{{0000..{len(paths) - 1:04d}}}.tar"), 24, seed=5, hflip=True)
    files = ImageFolderDataset(folder, 24, seed=5, hflip=True)
    assert [shards.items[i].member for i in range(len(shards))] == [
        p.relative_to(folder).as_posix() for p in files.files]
    for epoch in (0, 3):
        shards.set_epoch(epoch)
        files.set_epoch(epoch)
        for i in range(len(files)):
            assert torch.equal(shards[i], files[i])
    eval_shards = TarShardDataset([str(p) for p in paths], 24, train=False)
    eval_files = ImageFolderDataset(folder, 24, train=False)
    assert all(torch.equal(eval_shards[i], eval_files[i]) for i in range(len(eval_files)))
    assert all(shards.read_bytes(i) == f.read_bytes() for i, f in enumerate(files.files))  # no re-encoding


NAME = st.text("abAB01-_", min_size=1, max_size=4)


@settings(max_examples=25)
@given(names=st.sets(st.tuples(st.sampled_from(["", "x/", "x-y/", "Z/"]), NAME, st.sampled_from(["png", "PNG", "jpg"])),
                     min_size=1, max_size=9),
       max_count=st.integers(1, 5))
def test_any_sharding_of_a_folder_lists_its_images_once_in_folder_order(names, max_count):
    stems = {}
    for d, stem, ext in names:  # one image per key: keep the first extension of a stem
        stems.setdefault(d + stem, f"{d}{stem}.{ext}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        data = png_bytes(0, (2, 2))
        for rel in stems.values():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(data)
        paths = write_shards(root, str(Path(tmp) / "out" / "%03d.tar"), max_count=max_count)
        ds = TarShardDataset([str(p) for p in paths], 2)
        members = [it.member for it in ds.items]
        assert members == [rel for rel, _ in list_folder_images(root)[0]]
        assert sorted(members) == sorted(stems.values())  # each image key exactly once


@settings(max_examples=30)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "d/c", "d/e", ".h", "d/.h"]),
                          st.sampled_from(["jpg", "cls", "json", "seg.png", "txt"])), unique=True, min_size=1,
                max_size=12))
def test_the_index_holds_each_key_with_one_image_field_exactly_once(members):
    with tempfile.TemporaryDirectory() as tmp:
        path = make_tar(Path(tmp) / "t.tar", [(f"{k}.{f}", png_bytes(0, (2, 2))) for k, f in members])
        keys = {k for k, f in members if f == "jpg" and not k.rsplit("/", 1)[-1].startswith(".")}
        if not keys:
            with pytest.raises(ValueError, match="holds no images"):
                TarShardDataset(str(path), 2)
            return
        ds = TarShardDataset(str(path), 2)
        assert [it.member for it in ds.items] == sorted(f"{k}.jpg" for k in keys)


def test_split_key_follows_webdataset():
    from webdataset.tariterators import base_plus_ext

    for name in ["a/b.jpg", "a/b.c.JPG", "x.y/z.png", "n01/img_1.cls", "noext", "a.b.c"]:
        ours = split_key(name)
        theirs = base_plus_ext(name)
        assert ours == (None if theirs == (None, None) else (theirs[0], theirs[1].lower()))
    assert split_key("a/.hidden.jpg") is None and split_key(".x.png") is None


def test_webdataset_reads_the_shards_we_write(tmp_path, folder):
    import webdataset as wds

    paths = write_shards(folder, str(tmp_path / "s-%02d.tar"), max_count=3, classes=True)
    samples = list(wds.WebDataset([str(p) for p in paths], shardshuffle=False))
    ds = TarShardDataset([str(p) for p in paths], 8, labels="cls")
    assert [s["__key__"] for s in samples] == [it.member.rsplit(".", 1)[0] for it in ds.items]
    assert [int(s["cls"]) for s in samples] == [ds.label(i) for i in range(len(ds))]
    # the same tar bytes from the same folder
    again = write_shards(folder, str(tmp_path / "t-%02d.tar"), max_count=3, classes=True)
    assert [p.read_bytes() for p in paths] == [p.read_bytes() for p in again]


def test_unreadable_members_are_skipped_and_recorded(tmp_path):
    good0, good1 = png_bytes(1), png_bytes(2)
    path = make_tar(tmp_path / "t.tar", [("a.png", good0), ("b.png", b"not a png"), ("c.jpg", good1[:10]),
                                         ("d.png", good1)])
    ds = TarShardDataset(str(path), 16, train=False)
    assert len(ds) == 4
    assert torch.equal(ds[1], ds[3]) and torch.equal(ds[2], ds[3])  # the next readable item
    assert ds.bad_paths == {f"{path}/b.png", f"{path}/c.jpg"} and ds.skipped == 2
    assert torch.equal(ds[0], TarShardDataset([str(path)], 16, train=False)[0])


def test_a_truncated_shard_is_refused_naming_it(tmp_path):
    second = png_bytes(2)
    path = make_tar(tmp_path / "t.tar", [("a.png", png_bytes(1)), ("b.png", second), ("c.png", png_bytes(3))])
    data = path.read_bytes()
    for end in (data.index(second) + 100, data.index(second) + len(second) + 700):  # in b's data, in c's header
        cut = tmp_path / "cut.tar"
        cut.write_bytes(data[:end])
        with pytest.raises(ValueError, match=r"shards: .*cut\.tar' is truncated"):
            TarShardDataset(str(cut), 16, train=False)


def test_brace_patterns_and_lists(tmp_path):
    for i in range(3):
        make_tar(tmp_path / f"p-{i:02d}.tar", [(f"k{i}.png", png_bytes(i))])
    assert expand_shards(str(tmp_path / "p-{00..02}.tar")) == [tmp_path / f"p-{i:02d}.tar" for i in range(3)]
    assert expand_shards([str(tmp_path / "p-02.tar"), str(tmp_path / "p-{00..01}.tar")]) == [
        tmp_path / "p-02.tar", tmp_path / "p-00.tar", tmp_path / "p-01.tar"]
    ds = TarShardDataset([str(tmp_path / "p-02.tar"), str(tmp_path / "p-{00..01}.tar")], 8)
    assert [ds.name(i) for i in range(3)] == [f"{tmp_path}/p-{i:02d}.tar/k{i}.png" for i in (2, 0, 1)]
    with pytest.raises(FileNotFoundError, match=r"shards.*p-03\.tar"):
        TarShardDataset(str(tmp_path / "p-{00..03}.tar"), 8)
    with pytest.raises(ValueError, match="shards lists .* twice"):
        TarShardDataset([str(tmp_path / "p-00.tar"), str(tmp_path / "p-{00..01}.tar")], 8)


def test_labels_from_cls_members_and_from_the_key_prefix(tmp_path):
    img = png_bytes(0)
    path = make_tar(tmp_path / "t.tar", [("dog/b.png", img), ("dog/b.cls", b"7\n"), ("cat/a.jpg", img),
                                         ("cat/a.cls", b"3"), ("cat/z.json", b"{}")])
    ds = TarShardDataset(str(path), 8, labels="cls")
    assert [it.member for it in ds.items] == ["cat/a.jpg", "dog/b.png"]
    assert [ds.label(i) for i in range(2)] == [3, 7] and ds.class_names is None
    ds = TarShardDataset(str(path), 8, labels="prefix")
    assert ds.class_names == ["cat", "dog"] and [ds.label(i) for i in range(2)] == [0, 1]
    with pytest.raises(ValueError, match="no labels"):
        TarShardDataset(str(path), 8).label(0)
    with pytest.raises(ValueError, match="labels must be"):
        TarShardDataset(str(path), 8, labels="folder")
    no_cls = make_tar(tmp_path / "n.tar", [("dog/b.png", img)])
    with pytest.raises(ValueError, match=r"no dog/b\.cls member"):
        TarShardDataset(str(no_cls), 8, labels="cls")
    bad_cls = make_tar(tmp_path / "b.tar", [("dog/b.png", img), ("dog/b.cls", b"-1")])
    with pytest.raises(ValueError, match="not a class index"):
        TarShardDataset(str(bad_cls), 8, labels="cls")
    flat = make_tar(tmp_path / "f.tar", [("b.png", img)])
    with pytest.raises(ValueError, match="has no folder"):
        TarShardDataset(str(flat), 8, labels="prefix")


def test_bad_shards_are_refused_naming_the_argument(tmp_path):
    img = png_bytes(0)
    with pytest.raises(FileNotFoundError, match="shards: tar shard not found"):
        TarShardDataset(str(tmp_path / "missing.tar"), 8)
    empty = make_tar(tmp_path / "empty.tar", [])
    with pytest.raises(ValueError, match="shards: .*empty tar file"):
        TarShardDataset(str(empty), 8)
    no_images = make_tar(tmp_path / "noimg.tar", [("a.txt", b"hi"), ("a.cls", b"1")])
    with pytest.raises(ValueError, match="shards: .*holds no images"):
        TarShardDataset(str(no_images), 8)
    good = make_tar(tmp_path / "good.tar", [("a.png", img)])
    with pytest.raises(ValueError, match="holds no images"):  # every shard must hold images
        TarShardDataset([str(good), str(no_images)], 8)
    gz = make_tar(tmp_path / "c.tar.gz", [("a.png", img)], mode="w:gz")
    with pytest.raises(ValueError, match="shards: .*not an uncompressed tar"):
        TarShardDataset(str(gz), 8)
    text = tmp_path / "text.tar"
    text.write_bytes(b"hello" * 200)
    with pytest.raises(ValueError, match="not an uncompressed tar"):
        TarShardDataset(str(text), 8)
    with pytest.raises(ValueError, match="not a regular file"):
        TarShardDataset(str(tmp_path), 8)
    two = make_tar(tmp_path / "two.tar", [("a.png", img), ("a.jpg", img)])
    with pytest.raises(ValueError, match="2 images under key 'a'"):
        TarShardDataset(str(two), 8)
    with pytest.raises(TypeError, match="shards must be"):
        TarShardDataset(3, 8)
    with pytest.raises(TypeError, match="shards entries"):
        TarShardDataset([str(good), None], 8)
    with pytest.raises(ValueError, match="shards is an empty list"):
        TarShardDataset([], 8)
    with pytest.raises(ValueError, match="shards has an empty entry"):
        TarShardDataset(" ", 8)
    with pytest.raises(ValueError, match="image_size"):
        TarShardDataset(str(good), 0)
    with pytest.raises(IndexError):
        TarShardDataset(str(good), 8)[1]


def test_without_webdataset_the_error_names_the_extra(tmp_path, folder, monkeypatch):
    good = make_tar(tmp_path / "good-0.tar", [("a.png", png_bytes(0))])
    monkeypatch.setitem(sys.modules, "braceexpand", None)
    monkeypatch.setitem(sys.modules, "webdataset", None)
    assert len(TarShardDataset(str(good), 8)) == 1  # a plain path needs no extra
    with pytest.raises(ImportError, match=r"pip install 'flowmo\[shards\]'"):
        TarShardDataset(str(tmp_path / "good-{0..0}.tar"), 8)
    with pytest.raises(ImportError, match=r"pip install 'flowmo\[shards\]'"):
        write_shards(folder, str(tmp_path / "o-%d.tar"))


def test_the_tool_refuses_what_it_cannot_write(tmp_path, folder, capsys):
    out = str(tmp_path / "o" / "s-%03d.tar")
    assert shards_main(["--input", str(folder), "--output", out, "--max-count", "4", "--classes"]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["s-000.tar", "s-001.tar"]
    assert shards_main(["--input", str(folder), "--output", out]) == 2  # never overwrites
    assert "exists already" in capsys.readouterr().err
    assert shards_main(["--input", str(folder), "--output", str(tmp_path / "x.tar")]) == 2
    assert "output must hold one integer % format" in capsys.readouterr().err
    assert shards_main(["--input", str(folder), "--output", out, "--max-count", "0"]) == 2
    assert "--max-count must be" in capsys.readouterr().err
    assert shards_main(["--input", str(tmp_path / "nope"), "--output", out]) == 2
    assert "input folder not found" in capsys.readouterr().err
    dotted = tmp_path / "dotted"
    dotted.mkdir()
    (dotted / "a.v2.png").write_bytes(png_bytes(0))
    with pytest.raises(ValueError, match=r"input: 1 file names have a '\.' before the extension"):
        write_shards(dotted, str(tmp_path / "d-%d.tar"))
    same = tmp_path / "same"
    same.mkdir()
    (same / "a.png").write_bytes(png_bytes(0))
    (same / "a.jpg").write_bytes(png_bytes(0))
    with pytest.raises(ValueError, match="same key 'a'"):
        write_shards(same, str(tmp_path / "e-%d.tar"))
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(png_bytes(0))
    with pytest.raises(ValueError, match="--classes needs one folder per class"):
        write_shards(dotted.parent / "flat", str(tmp_path / "f-%d.tar"), classes=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        write_shards(tmp_path / "empty", str(tmp_path / "g-%d.tar"))
    assert not list(tmp_path.glob("[defg]-*.tar"))  # nothing written when refused


def test_flowmo_eval_reads_shards_as_the_folder(tmp_path):
    """flowmo eval --data SHARDS measures the same images, in the same order, from the same noise
    as --data FOLDER: the per-image figures are equal; the release protocol is folders-only."""
    import csv

    import flowmo
    from flowmo.data.shard_writer import write_shards
    from flowmo.eval.cli import main as eval_main

    folder = tmp_path / "imgs"
    rng = np.random.default_rng(3)
    for i in range(5):
        (folder / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(folder / f"c{i % 2}" / f"i{i}.png")
    write_shards(folder, str(tmp_path / "sh-%03d.tar"), max_count=2)
    model = flowmo.FlowMo(flowmo.get_preset("tiny")).save_pretrained(tmp_path / "model")
    common = ["--model", str(model), "--steps", "1", "--batch-size", "2", "--lpips", "none", "--no-fid",
              "--workers", "0", "--quiet"]
    rows = {}
    for name, data in (("folder", str(folder)), ("shards", str(tmp_path / "sh-{000..002}.tar"))):
        assert eval_main([*common, "--data", data, "--output", str(tmp_path / name)]) == 0
        with open(tmp_path / name / "per_image.csv") as f:
            rows[name] = [(r["psnr"], r["ssim"]) for r in csv.DictReader(f)]
    assert len(rows["folder"]) == 5 and rows["shards"] == rows["folder"]
    with pytest.raises(ValueError, match="protocol"):
        eval_main([*common, "--data", str(tmp_path / "sh-000.tar"), "--protocol", "release",
                   "--output", str(tmp_path / "r")])


def test_flowmo_tokenize_reads_shards_as_the_folder(tmp_path):
    import flowmo
    from flowmo.cli import main
    from flowmo.data.shard_writer import write_shards
    from flowmo.io import read_tokens

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"i{i}.png")
    write_shards(folder, str(tmp_path / "sh-%03d.tar"), max_count=2)
    model = flowmo.FlowMo(flowmo.get_preset("tiny")).save_pretrained(tmp_path / "model")
    base = ["tokenize", "--model", str(model), "--device", "cpu", "-q"]
    assert main([*base, "--input", str(folder), "--output", str(tmp_path / "f.safetensors")]) == 0
    assert main([*base, "--input", str(tmp_path / "sh-{000..001}.tar"), "--output", str(tmp_path / "s.safetensors")]) == 0
    f, s = read_tokens(tmp_path / "f.safetensors"), read_tokens(tmp_path / "s.safetensors")
    assert torch.equal(f.tokens, s.tokens)
    assert [n.split("/")[-1] for n in s.sources] == ["i0.png", "i1.png", "i2.png"]
    assert main([*base, "--input", str(tmp_path / "sh-000.tar"), str(folder), "--output", str(tmp_path / "x")]) != 0


def test_one_shard_under_two_spellings_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "a.png")
    write_shards(folder, str(tmp_path / "s-%03d.tar"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="twice"):
        TarShardDataset(["s-000.tar", str(tmp_path / "s-000.tar")], 8)
    with pytest.raises(ValueError, match="twice"):
        expand_shards(["s-000.tar", "imgs/../s-000.tar"])


def test_the_writer_refuses_before_writing_anything(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / f"i{i}.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "e-000002.tar").write_bytes(b"old")
    with pytest.raises(ValueError, match="e-000002.tar' exists"):
        write_shards(folder, str(tmp_path / "out" / "e-%06d.tar"), max_count=1)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["e-000002.tar"]
    with pytest.raises(ValueError, match="in the file name"):
        write_shards(folder, str(tmp_path / "d%d" / "x.tar"))
