"""Tar shards (flowmo.data.shards): the index, the folder's order and decoding, labels, unreadable
members, brace patterns, bad inputs, and the folder -> shards tool."""

import io
import os
import re
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

from flowmo.cli import main as flowmo_main
from flowmo.data.folders import ImageFolderDataset
from flowmo.data.listing import list_folder_images
from flowmo.data.shard_writer import write_shards
from flowmo.data.shards import IGNORED, TarShardDataset, expand_shards, split_key

from conftest import HANG_GUARD_S


def shards_main(argv):
    """``flowmo shards ARGV`` in this process; the exit status."""
    return flowmo_main(["shards", *argv])


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
        assert len(ds) + sum(n for n, _ in ds.ignored.values()) == len(members)  # each member used or counted


def test_split_key_follows_webdataset():
    from webdataset.tariterators import base_plus_ext

    for name in ["a/b.jpg", "a/b.c.JPG", "x.y/z.png", "n01/img_1.cls", "noext", "a.b.c", "a/.hidden.jpg", ".x.png",
                 "Track 2.0.png", "./c0/a.png"]:
        ours = split_key(name)
        theirs = base_plus_ext(name)
        assert ours == (None if theirs == (None, None) else (theirs[0], theirs[1].lower()))


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


def test_flowmo_shards_writes_the_folder_as_the_reader_reads_it(tmp_path, folder):
    """``python -m flowmo shards``: the folder's images in its order, the class index of each
    top-level folder as its label, the bytes unchanged; a summary line, which -q hides."""
    import subprocess

    out = tmp_path / "o" / "s-%03d.tar"
    proc = subprocess.run([sys.executable, "-m", "flowmo", "shards", "--input", str(folder), "--output", str(out),
                           "--max-count", "3", "--classes"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote 3 shards: ") and proc.stderr == ""
    shards = TarShardDataset(str(tmp_path / "o" / "s-{000..002}.tar"), 24, train=False, labels="cls")
    files = ImageFolderDataset(folder, 24, train=False)
    assert [shards.items[i].member for i in range(len(shards))] == [
        p.relative_to(folder).as_posix() for p in files.files]
    assert [shards.label(i) for i in range(len(shards))] == [int(p.parent.name[-1]) for p in files.files]
    assert all(shards.read_bytes(i) == f.read_bytes() for i, f in enumerate(files.files))
    assert shards_main(["-q", "--input", str(folder), "--output", str(tmp_path / "q-%d.tar")]) == 0
    assert len(list(tmp_path.glob("q-*.tar"))) == 1


def test_flowmo_eval_reads_shards_as_the_folder(tmp_path):
    """flowmo eval --data SHARDS measures the same images, in the same order, from the same noise
    as --data FOLDER: the per-image figures are equal; the release protocol is folders-only."""
    import csv

    import flowmo
    from flowmo.data.shard_writer import write_shards
    from flowmo.cli.eval import main as eval_main

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
    from flowmo.data.tokens import read_tokens

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


# -- member names: one path, many spellings (issue 22, item 3) --------------------------------

SPELLINGS = {
    "./": lambda n: "./" + n,
    "//": lambda n: n.replace("/", "//"),
    "/./": lambda n: n.replace("/", "/./"),
    "leading /": lambda n: "/" + n,
    "all": lambda n: ".//./" + n.replace("/", "/.//"),
}


@pytest.fixture(scope="module")
def class_tree(tmp_path_factory):
    """A class-folder tree with a nested folder and hidden entries (which the folder listing skips)."""
    root = tmp_path_factory.mktemp("classes")
    for i, rel in enumerate(["c0/a.png", "c0/b.jpg", "c1/x.png", "c1/sub/y.png", "c2/z.png"]):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(30 + i, (20 + i, 24)))
    for rel in ["c0/.cache/h.png", ".git/g.png", "c1/._x.png"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(9))
    return root


def _plain_members(root):
    """The tree's images under their plain relative names, each with a .cls (the class-folder index)."""
    from flowmo.data.token_shards import class_folder_images

    classes, items = class_folder_images(root)
    out = []
    for path, label in items:
        rel = path.relative_to(root).as_posix()
        out += [(rel, path.read_bytes()), (rel.rsplit(".", 1)[0] + ".cls", str(label).encode())]
    return out


def _same_dataset(a, b):
    assert [it.member for it in a.items] == [it.member for it in b.items]
    assert a.class_names == b.class_names
    assert [a.label(i) for i in range(len(a))] == [b.label(i) for i in range(len(b))]
    assert all(torch.equal(a[i], b[i]) for i in range(len(a)))


@pytest.mark.parametrize("spelling", list(SPELLINGS))
def test_member_name_spellings_give_the_keys_classes_and_labels_of_plain_names(tmp_path, class_tree, spelling):
    import webdataset as wds

    members = _plain_members(class_tree)
    plain = make_tar(tmp_path / "plain.tar", members)
    spelled = make_tar(tmp_path / "spelled.tar", [(SPELLINGS[spelling](n), d) for n, d in members])
    assert tarfile.open(spelled).getnames()[0] != members[0][0]  # the tar holds the other spelling
    # webdataset's own reader gives the keys of the plain tar: ours are those, for either spelling
    keys = [s["__key__"] for s in wds.WebDataset(str(plain), shardshuffle=False) if "cls" in s]
    for labels in ("prefix", "cls"):
        a = TarShardDataset(str(plain), 16, train=False, labels=labels)
        b = TarShardDataset(str(spelled), 16, train=False, labels=labels)
        assert sorted(keys) == [it.member.rsplit(".", 1)[0] for it in b.items]
        _same_dataset(a, b)
    assert b.class_names is None and TarShardDataset(str(spelled), 8, labels="prefix").class_names == ["c0", "c1", "c2"]


def test_a_tar_of_a_folder_as_tar_writes_it_agrees_with_the_folder_and_its_classes(tmp_path, class_tree):
    """`tar -C dir .` names every member ./...; it also holds the directories and hidden files."""
    import shutil
    import subprocess

    from flowmo.data.token_shards import class_folder_images

    tars = []
    with tarfile.open(tmp_path / "py.tar", "w") as tf:  # Python's tarfile, as tar -C dir . names them
        tf.add(class_tree, arcname=".")
    tars.append(tmp_path / "py.tar")
    if shutil.which("tar"):
        subprocess.run(["tar", "-C", str(class_tree), "-cf", str(tmp_path / "gnu.tar"), "."], check=True)
        tars.append(tmp_path / "gnu.tar")
    classes, items = class_folder_images(class_tree)  # flowmo tokenize --classes
    by_rel = {p.relative_to(class_tree).as_posix(): y for p, y in items}
    folder = ImageFolderDataset(class_tree, 16, train=False)
    rels = [p.relative_to(class_tree).as_posix() for p in folder.files]
    written = write_shards(class_tree, str(tmp_path / "w-%d.tar"), classes=True)  # python -m flowmo.data.shards
    flowmo_cls = TarShardDataset([str(p) for p in written], 16, train=False, labels="cls")
    n_dirs = sum(len(d) for _, d, _ in os.walk(class_tree)) + 1  # with the root "."
    for path in tars:
        ds = TarShardDataset(str(path), 16, train=False, labels="prefix")
        assert [it.member for it in ds.items] == rels  # the folder's images, in its order
        assert ds.class_names == classes
        assert [ds.label(i) for i in range(len(ds))] == [by_rel[r] for r in rels]
        assert [ds.label(i) for i in range(len(ds))] == [flowmo_cls.label(i) for i in range(len(ds))]
        assert all(torch.equal(ds[i], folder[i]) for i in range(len(ds)))
        assert {r: n for r, (n, _) in ds.ignored.items()} == {"directory": n_dirs, "hidden": 3}


def test_a_member_name_leaving_the_archive_or_one_name_twice_is_refused(tmp_path):
    img = png_bytes(0)
    for bad in ("../a.png", "c0/../../a.png", "c0/../a.png"):
        path = make_tar(tmp_path / "up.tar", [("c0/b.png", img), (bad, img)])
        with pytest.raises(ValueError, match=rf"shards: .*up\.tar': member name {re.escape(repr(bad))} has a "
                                             r"'\.\.' component \(tar refuses"):
            TarShardDataset(str(path), 8)
    for a, b in (("a.png", "./a.png"), ("c/a.png", "c//a.png"), ("a.json", "a.JSON"), ("a.cls", "/a.cls")):
        path = make_tar(tmp_path / "two.tar", [(a, img), (b, img), ("z.png", img)])
        field = b.rsplit(".", 1)[1].lower()
        with pytest.raises(ValueError, match=f"two members of key '(a|c/a)' and field '{field}' .*"
                                             f"{re.escape(repr(b))}"):
            TarShardDataset(str(path), 8, labels="cls")


# -- every member not used is counted, never dropped in silence (issue 22, item 4) ------------


def _add(tf, name, data=b"", kind=tarfile.REGTYPE, link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


# name, kind, link, the reason the reader leaves it out (None: an image item), by hand
MEMBERS = [
    ("k", tarfile.DIRTYPE, "", "directory"),
    ("k/a.png", tarfile.REGTYPE, "", None),
    ("k/b.JPG", tarfile.REGTYPE, "", None),
    ("Track 2.0.png", tarfile.REGTYPE, "", "dotted"),
    ("k/a.seg.png", tarfile.REGTYPE, "", "dotted"),
    ("k/l.png", tarfile.SYMTYPE, "a.png", "link"),
    ("k/h.png", tarfile.LNKTYPE, "k/a.png", "link"),
    ("k/f.png", tarfile.FIFOTYPE, "", "special"),
    (".x.png", tarfile.REGTYPE, "", "hidden"),
    ("k/._a.png", tarfile.REGTYPE, "", "hidden"),
    (".cache/z.png", tarfile.REGTYPE, "", "hidden"),
    ("__meta__/m.png", tarfile.REGTYPE, "", "metadata"),
    ("README", tarfile.REGTYPE, "", "no key"),
    ("k/noext", tarfile.REGTYPE, "", "no key"),
    ("k/a.json", tarfile.REGTYPE, "", "sidecar"),
    ("k/a.cls", tarfile.REGTYPE, "", "sidecar"),
    ("k/d.txt", tarfile.REGTYPE, "", "no image"),
    ("k/e.cls", tarfile.REGTYPE, "", "no image"),
]


def test_every_member_not_used_is_counted_by_kind_with_an_example(tmp_path, caplog):
    import logging

    import webdataset as wds
    from webdataset.tariterators import base_plus_ext

    from flowmo.data.images import IMAGE_EXTENSIONS

    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tf:
        for name, kind, link, _ in MEMBERS:
            _add(tf, name, png_bytes(len(name), (8, 8)) if kind == tarfile.REGTYPE else b"", kind, link)
    with caplog.at_level(logging.WARNING, logger="flowmo.data.shards"):
        ds = TarShardDataset(str(path), 8)
    want = {}
    for name, _, _, reason in MEMBERS:
        if reason is not None:
            want.setdefault(reason, (0, f"{path}/{name}"))
            want[reason] = (want[reason][0] + 1, want[reason][1])
    assert ds.ignored == want
    assert [it.member for it in ds.items] == ["k/a.png", "k/b.JPG"]
    assert len(ds.items) + sum(n for n, _ in ds.ignored.values()) == len(MEMBERS)  # each member used or counted
    msg = caplog.text
    loud = {r: v for r, v in want.items() if r not in ("directory", "sidecar")}  # counted, not warned of
    assert f"left out {sum(n for n, _ in loud.values())} tar members" in msg and "'Track 2', field '0.png'" in msg
    assert all(f"{IGNORED[r]}: {n}, e.g. {ex!r}" in msg for r, (n, ex) in loud.items())
    assert IGNORED["directory"] not in msg and IGNORED["sidecar"] not in msg

    # webdataset's own reader, independently: the regular members it reads and how it keys them
    samples = list(wds.WebDataset(str(path), shardshuffle=False))
    pairs = {(s["__key__"], f) for s in samples for f in s if not f.startswith("__")}
    assert ("Track 2", "0.png") in pairs and ("k/a", "seg.png") in pairs  # read as field '0.png': not an image
    def visible(key, field):  # webdataset reads "k/._a.png" as key "k/", field "_a.png": hidden there too
        return not any(c.startswith(".") for c in f"{key}.{field}".split("/"))

    ours = {(k, f) for k, f in pairs if visible(k, f)}
    assert {f"{k}.{f}" for k, f in ours if f in IMAGE_EXTENSIONS} == {"k/a.png", "k/b.jpg"}
    assert sum(f not in IMAGE_EXTENSIONS and f.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS for _, f in ours) == \
        ds.ignored["dotted"][0]
    assert sum(f.rsplit(".", 1)[-1] not in IMAGE_EXTENSIONS for _, f in ours) == \
        ds.ignored["sidecar"][0] + ds.ignored["no image"][0]
    with_image = {k for k, f in ours if f in IMAGE_EXTENSIONS}
    assert sum(f.rsplit(".", 1)[-1] not in IMAGE_EXTENSIONS and k in with_image for k, f in ours) == \
        ds.ignored["sidecar"][0]
    read = {f"{k}.{f}" for k, f in pairs}  # what webdataset reads of the regular members
    regular = [n for n, kind, _, _ in MEMBERS if kind == tarfile.REGTYPE]
    assert {n for n in regular if base_plus_ext(n) == (None, None)} == {"README", "k/noext", ".x.png"}
    assert not any(n.startswith("__meta__") for n in read)  # webdataset skips it as metadata


def test_a_shard_of_only_unused_members_says_what_it_left_out(tmp_path):
    path = make_tar(tmp_path / "t.tar", [("Track 2.0.png", png_bytes(0)), ("Track 3.0.png", png_bytes(1))])
    with pytest.raises(ValueError, match=r"holds no images .*left out: names with a second '\.'.*: 2, "
                                         r"e\.g\. '.*t\.tar/Track 2\.0\.png'"):
        TarShardDataset(str(path), 8)


def test_labels_cls_uses_the_cls_members_and_counts_the_others(tmp_path):
    img = png_bytes(0)
    path = make_tar(tmp_path / "t.tar", [("a.png", img), ("a.cls", b"1"), ("b.cls", b"2"), ("b.json", b"{}")])
    # b.cls labels no image
    assert TarShardDataset(str(path), 8, labels="cls").ignored == {"no image": (2, f"{path}/b.json")}
    assert TarShardDataset(str(path), 8).ignored == {"sidecar": (1, f"{path}/a.cls"), "no image": (2, f"{path}/b.cls")}


def test_sidecar_fields_and_directories_are_counted_without_a_warning(tmp_path, caplog):
    import logging

    path = make_tar(tmp_path / "t.tar", [("a.png", png_bytes(0)), ("a.cls", b"1"), ("a.json", b"{}")])
    with caplog.at_level(logging.WARNING, logger="flowmo.data.shards"):
        ds = TarShardDataset(str(path), 8)
    assert ds.ignored == {"sidecar": (2, f"{path}/a.cls")} and "left out" not in caplog.text


def test_the_writer_refuses_a_folder_webdataset_skips_as_metadata(tmp_path):
    (tmp_path / "in" / "__meta__").mkdir(parents=True)
    (tmp_path / "in" / "__meta__" / "a.png").write_bytes(png_bytes(0))
    with pytest.raises(ValueError, match=r"input: 1 files are in a folder named '__NAME__', e\.g\. '__meta__/a\.png'"):
        write_shards(tmp_path / "in", str(tmp_path / "o-%d.tar"))


@pytest.mark.parametrize("text", ["99999999999999999999999", "\u0663", "-1", "1.0", ""])
def test_a_cls_that_is_not_a_small_ascii_integer_is_refused_naming_it(tmp_path, text):
    """A 23-digit class overflowed int64 later, in the collate; Arabic-Indic '٣' was read as 3."""
    path = make_tar(tmp_path / "t.tar", [("a.png", png_bytes(0)), ("a.cls", text.encode())])
    with pytest.raises(ValueError, match=r"a\.cls is not a class index"):
        TarShardDataset(str(path), 8, labels="cls")
