"""Labelled token sets: sharded writing, reading back exactly, incomplete and inconsistent sets
refused with the reason; class-folder listing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.data.token_layout import layout_for
from flowmo.data.token_shards import TokenShardWriter, class_folder_images, read_token_set
from flowmo.data.tokens import read_tokens, write_tokens


@pytest.fixture(scope="module")
def model():
    spec = flowmo.flowmo_tiny().replace(code_channels=8, quantizer={"name": "lfq", "group_bits": 4})
    return flowmo.build(spec).eval()


def _batch(layout, n, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (n, layout.tokens) if layout.kind == "token" else (n, layout.tokens, layout.groups)
    return torch.randint(0, layout.vocab_size, shape, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("kind", ["token", "group"])
def test_shards_round_trip_in_order(tmp_path, model, kind):
    layout = layout_for(model, kind)
    batches = [_batch(layout, n, s) for s, n in enumerate([2, 4, 1])]
    with TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a", "b", "c"],
                          shard_size=3, augment=["hflip"]) as w:
        for i, (idx, lab) in enumerate(batches):
            w.add(idx, lab, [f"{i}-{j}" for j in range(len(lab))])
    index = json.loads((tmp_path / "set" / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [3, 3, 1] and index["count"] == 7
    ts = read_token_set(tmp_path / "set")
    assert torch.equal(ts.sequences, layout.to_sequence(torch.cat([b[0] for b in batches])))
    assert torch.equal(ts.labels, torch.cat([b[1] for b in batches]))
    assert ts.classes == ["a", "b", "c"] and ts.layout == layout and ts.augment == ("hflip",)
    assert ts.sources[:3] == ["0-0", "0-1", "1-0"] and len(ts) == 7
    # each shard is an ordinary token file; one shard reads as a (smaller) token set
    tf = read_tokens(tmp_path / "set" / "shard-00002.safetensors")
    assert tf.fingerprint == model.spec.fingerprint() and tf.classes == ["a", "b", "c"]
    one = read_token_set(tmp_path / "set" / "shard-00000.safetensors")
    assert torch.equal(one.sequences, ts.sequences[:3])


def test_an_interrupted_write_leaves_an_incomplete_set_that_is_refused(tmp_path, model):
    layout = layout_for(model, "token")
    with pytest.raises(RuntimeError, match="killed"):
        with TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"], shard_size=2) as w:
            w.add(torch.zeros(3, layout.tokens, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ["x", "y", "z"])
            raise RuntimeError("killed")
    assert (tmp_path / "set" / "shard-00000.safetensors").is_file()
    with pytest.raises(ValueError, match="incomplete"):
        read_token_set(tmp_path / "set")
    with pytest.raises(ValueError, match="already holds a token set"):
        TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"])
    w = TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"], overwrite=True)
    w.add(torch.ones(1, layout.tokens, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), ["n"])
    w.close()
    assert read_token_set(tmp_path / "set").sources == ["n"]


def _write_set(tmp_path, model, name="set"):
    layout = layout_for(model, "token")
    with TokenShardWriter(tmp_path / name, spec=model.spec, layout=layout, classes=["a", "b"], shard_size=2) as w:
        w.add(torch.zeros(3, layout.tokens, dtype=torch.int64), torch.tensor([0, 1, 1]), ["x", "y", "z"])
    return tmp_path / name


@pytest.mark.parametrize("tamper, match", [
    (lambda i: i["shards"][0].update(count=5), "index says"),
    (lambda i: i["shards"].append({"file": "shard-00009.safetensors", "count": 1}), "missing"),
    (lambda i: i["shards"][0].update(file="../x.safetensors"), "missing"),
    (lambda i: i.update(classes=["a", "c"]), "other classes"),
    (lambda i: i.update(format="other"), "unreadable index"),
    (lambda i: i.update(fingerprint="0"), "disagree"),
    (lambda i: i["layout"].update(vocab_size=3), "another tokenizer or in another layout"),
    (lambda i: i.pop("layout"), "unreadable index"),
    (lambda i: i.update(shards=[]), "no shards"),
])
def test_an_inconsistent_set_is_refused_with_the_reason(tmp_path, model, tamper, match):
    folder = _write_set(tmp_path, model)
    index = json.loads((folder / "index.json").read_text())
    tamper(index)
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=match):
        read_token_set(folder)


def test_bad_writer_arguments(tmp_path, model):
    layout = layout_for(model, "token")
    other = layout_for(flowmo.build(flowmo.flowmo_tiny().replace(code_channels=6, quantizer={"name": "lfq", "group_bits": 3})), "token")
    for kw, match in [(dict(shard_size=0), "shard_size"), (dict(classes=[]), "classes"), (dict(classes=["a", "a"]), "classes"),
                      (dict(layout=other), "another tokenizer")]:
        with pytest.raises(ValueError, match=match):
            TokenShardWriter(tmp_path / "s", **{**dict(spec=model.spec, layout=layout, classes=["a"]), **kw})
    w = TokenShardWriter(tmp_path / "s", spec=model.spec, layout=layout, classes=["a"])
    with pytest.raises(ValueError, match="indices"):
        w.add(torch.zeros(2, layout.tokens + 1, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), ["x", "y"])
    with pytest.raises(ValueError, match="labels"):
        w.add(torch.zeros(2, layout.tokens, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ["x", "y"])
    with pytest.raises(ValueError, match="source names"):
        w.add(torch.zeros(2, layout.tokens, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), ["x"])


def test_write_tokens_checks_labels_and_a_plain_file_is_not_a_token_set(tmp_path, model):
    idx = torch.zeros(2, model.spec.code_length, dtype=torch.int64)
    for kw, match in [(dict(labels=torch.zeros(2, dtype=torch.int64)), "together"),
                      (dict(labels=torch.tensor([0, 2]), classes=["a", "b"]), r"\[0, 2\)"),
                      (dict(labels=torch.zeros(3, dtype=torch.int64), classes=["a"]), r"shape \(2,\)"),
                      (dict(layout=layout_for(model, "group")), "does not match groups")]:
        with pytest.raises(ValueError, match=match):
            write_tokens(tmp_path / "t.safetensors", idx, spec=model.spec, sources=["a", "b"], groups=False, **kw)
    plain = write_tokens(tmp_path / "p.safetensors", idx, spec=model.spec, sources=["a", "b"], groups=False)
    tf = read_tokens(plain)
    assert tf.labels is None and tf.classes is None and tf.layout is None
    with pytest.raises(ValueError, match="without labels"):
        read_token_set(plain)
    with pytest.raises(FileNotFoundError):
        read_token_set(tmp_path / "absent")


def test_class_folder_images(tmp_path):
    img = Image.fromarray(np.zeros((4, 4, 3), np.uint8))
    for rel in ["cat/1.png", "cat/sub/2.jpg", "ant/x.PNG", "empty/readme.txt"]:
        p = tmp_path / "root" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        img.save(p, format="PNG") if p.suffix.lower() != ".txt" else p.write_text("x")
    classes, items = class_folder_images(tmp_path / "root")
    assert classes == ["ant", "cat"]
    assert [(p.relative_to(tmp_path / "root").as_posix(), y) for p, y in items] == [
        ("ant/x.PNG", 0), ("cat/1.png", 1), ("cat/sub/2.jpg", 1)]
    img.save(tmp_path / "root" / "loose.png")
    with pytest.raises(ValueError, match="outside class sub-folders"):
        class_folder_images(tmp_path / "root", argument="--input")
    with pytest.raises(ValueError, match="no class sub-folder"):
        class_folder_images(tmp_path / "root" / "empty")
    with pytest.raises(FileNotFoundError, match="--input"):
        class_folder_images(tmp_path / "nope", argument="--input")


@pytest.mark.parametrize("meta, match", [({"version": "999"}, "version '999'"), ({"groups": "maybe"}, "'groups' metadata")])
def test_read_tokens_refuses_unknown_versions_and_flags(tmp_path, model, meta, match):
    from safetensors.torch import save_file

    path = write_tokens(tmp_path / "t.safetensors", torch.zeros(1, model.spec.code_length, dtype=torch.int64),
                        spec=model.spec, sources=["a"], groups=False)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        old = f.metadata()
    save_file({"tokens": torch.zeros(1, model.spec.code_length, dtype=torch.int64)}, str(path), metadata={**old, **meta})
    with pytest.raises(ValueError, match=match):
        read_tokens(path)
    with pytest.raises(ValueError, match="is a folder"):
        read_tokens(tmp_path)
