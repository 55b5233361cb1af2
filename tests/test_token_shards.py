"""Labelled token sets: sharded writing, reading back exactly, incomplete and inconsistent sets
refused with the reason; class-folder listing."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.data.token_layout import layout_for
from flowmo.data.token_shards import TokenShardWriter, class_folder_images
from flowmo.data.token_set_reader import read_token_set
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


def _tree(folder):
    """Every path under ``folder`` (hidden ones too) with its bytes: the state a failure must keep."""
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_an_exception_leaves_nothing_and_a_killed_run_reads_as_incomplete(tmp_path, model):
    layout = layout_for(model, "token")
    with pytest.raises(RuntimeError, match="killed"):
        with TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"], shard_size=2) as w:
            w.add(torch.zeros(3, layout.tokens, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ["x", "y", "z"])
            assert len(list((tmp_path / "set").glob(".partial-*/shard-00000.safetensors"))) == 1  # staged
            raise RuntimeError("killed")
    assert not (tmp_path / "set").exists()  # the writer made the folder, and removed it again
    # a process killed before close(): its staged shards are hidden, the set reads as incomplete
    w = TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"], shard_size=2)
    w.add(torch.zeros(3, layout.tokens, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), ["x", "y", "z"])
    with pytest.raises(ValueError, match="incomplete"):
        read_token_set(tmp_path / "set")
    # which is no token set to overwrite: a new writer needs no overwrite=True
    w2 = TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"])
    w2.add(torch.ones(1, layout.tokens, dtype=torch.int64), torch.zeros(1, dtype=torch.int64), ["n"])
    w2.close()
    assert read_token_set(tmp_path / "set").sources == ["n"]
    with pytest.raises(ValueError, match="already holds a token set"):
        TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"])


def _rows(layout, n, value):
    return torch.full((n, layout.tokens), value, dtype=torch.int64), torch.zeros(n, dtype=torch.int64)


def test_overwrite_keeps_the_old_set_readable_until_the_new_one_is_complete(tmp_path, model, monkeypatch):
    layout = layout_for(model, "token")
    folder = tmp_path / "set"
    with TokenShardWriter(folder, spec=model.spec, layout=layout, classes=["a"], shard_size=2) as w:
        w.add(*_rows(layout, 5, 1), [f"old{i}" for i in range(5)])  # 3 shards: 2 + 2 + 1
    before = _tree(folder)
    old = read_token_set(folder)

    # a failure midway (after shards were written): the old set is untouched, nothing stray is left
    with pytest.raises(OSError, match="truncated"):
        with TokenShardWriter(folder, spec=model.spec, layout=layout, classes=["a"], shard_size=2, overwrite=True) as w:
            w.add(*_rows(layout, 4, 2), [f"new{i}" for i in range(4)])
            mid = read_token_set(folder)  # two new shards staged: the old set still reads whole
            assert mid.sources == old.sources and torch.equal(mid.sequences, old.sequences)
            raise OSError("image file is truncated")
    assert _tree(folder) == before

    # a failure inside close() (writing the last shard): the same
    import flowmo.data.token_shards as ts_module

    real = ts_module.write_tokens
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(ts_module, "write_tokens", failing)
    w = TokenShardWriter(folder, spec=model.spec, layout=layout, classes=["a"], shard_size=2, overwrite=True)
    w.add(*_rows(layout, 3, 2), ["n0", "n1", "n2"])
    with pytest.raises(OSError, match="disk full"):
        w.close()
    assert _tree(folder) == before
    monkeypatch.setattr(ts_module, "write_tokens", real)

    # closed without rows: refused, the old set untouched
    w = TokenShardWriter(folder, spec=model.spec, layout=layout, classes=["a"], overwrite=True)
    with pytest.raises(ValueError, match="no rows"):
        w.close()
    assert _tree(folder) == before

    # a complete overwrite: the new set only (fewer shards: the old third one is gone), no staging left
    with TokenShardWriter(folder, spec=model.spec, layout=layout, classes=["a"], shard_size=2, overwrite=True) as w:
        w.add(*_rows(layout, 3, 2), ["n0", "n1", "n2"])
    new = read_token_set(folder)
    assert new.sources == ["n0", "n1", "n2"] and bool((new.sequences == 2).all())
    assert sorted(_tree(folder)) == ["index.json", "shard-00000.safetensors", "shard-00001.safetensors"]


def _write_set(tmp_path, model, name="set"):
    layout = layout_for(model, "token")
    with TokenShardWriter(tmp_path / name, spec=model.spec, layout=layout, classes=["a", "b"], shard_size=2) as w:
        w.add(torch.zeros(3, layout.tokens, dtype=torch.int64), torch.tensor([0, 1, 1]), ["x", "y", "z"])
    return tmp_path / name


@pytest.mark.parametrize("tamper, match", [
    (lambda i: (i["shards"][0].update(count=5), i.update(count=6)), "index says"),
    (lambda i: (i["shards"].append({"file": "shard-00009.safetensors", "count": 1}), i.update(count=4)), "missing"),
    (lambda i: i["shards"][0].update(file="../x.safetensors"), "missing"),
    (lambda i: i.update(classes=["a", "c"]), "other classes"),
    (lambda i: i.update(format="other"), "unreadable index"),
    (lambda i: i.update(fingerprint="0"), "disagree"),
    (lambda i: i["layout"].update(vocab_size=3), "another tokenizer or in another layout"),
    (lambda i: i.pop("layout"), "unreadable index"),
    (lambda i: i.update(shards=[], count=0), "no shards"),
    # a tampered index: each refused as unreadable, with the reason
    (lambda i: i.update(shards=i["shards"] + i["shards"][:1], count=i["count"] + 2), "listed twice"),
    (lambda i: i.update(count=7), r"unreadable index.json \(ValueError: count is 7 but its shards' counts sum to 3"),
    (lambda i: i.pop("count"), "unreadable index.json .KeyError"),
    (lambda i: i.update(count="3"), "count must be an integer"),
    (lambda i: i.update(version="2"), "unreadable index.json .*version is '2'; this flowmo reads version '1'"),
    (lambda i: i.pop("version"), "version is None"),
    (lambda i: i.update(augment="hflip"), "augment must be a list of names"),
    (lambda i: i.update(augment=[1]), "augment must hold strings"),
    (lambda i: i.update(classes="ab"), "classes must be a list of names"),
    (lambda i: i.update(shards=["shard-00000.safetensors"]), r"unreadable index.json .*shards\[0\] must be an object"),
    (lambda i: i.update(shards={"file": "shard-00000.safetensors"}), "shards must be a list"),
    (lambda i: i["shards"][0].update(file=3), r"shards\[0\].file must be a file name"),
    (lambda i: i["shards"][0].update(count=True), r"shards\[0\].count must be a positive integer"),
    (lambda i: i.update(fingerprint=5), "fingerprint must be a string"),
    (lambda i: i.update(tokenizer_weights="abc"), "tokenizer_weights must be a weights digest"),
    (lambda i: i.update(tokenizer_weights="0" * 64), "shard shard-00000.safetensors records other tokenizer weights"),
])
def test_an_inconsistent_set_is_refused_with_the_reason(tmp_path, model, tamper, match):
    folder = _write_set(tmp_path, model)
    index = json.loads((folder / "index.json").read_text())
    tamper(index)
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match=match):
        read_token_set(folder)


def test_an_index_that_is_no_object_is_unreadable(tmp_path, model):
    folder = _write_set(tmp_path, model)
    for text in ["[1, 2]", "{", "null"]:
        (folder / "index.json").write_text(text)
        with pytest.raises(ValueError, match="unreadable index.json"):
            read_token_set(folder)


def test_bad_writer_arguments(tmp_path, model):
    layout = layout_for(model, "token")
    other = layout_for(flowmo.build(flowmo.flowmo_tiny().replace(code_channels=6, quantizer={"name": "lfq", "group_bits": 3})), "token")
    cases = [(dict(shard_size=0), ValueError, "shard_size"), (dict(shard_size=True), ValueError, "shard_size"),
             (dict(classes=[]), ValueError, "classes"), (dict(classes=["a", "a"]), ValueError, "classes"),
             (dict(classes="ab"), TypeError, "classes must be a list"), (dict(classes=["a", 1]), TypeError, "classes"),
             (dict(augment="hflip"), TypeError, "augment must be a list"),
             (dict(spec="x"), TypeError, "spec must be a flowmo.FlowMoSpec"),
             (dict(spec=model.spec.model_dump()), TypeError, "spec must be"),
             (dict(layout=layout.to_json()), TypeError, "layout must be a TokenLayout .parse"),
             (dict(layout=None), TypeError, "layout must be a TokenLayout"),
             (dict(overwrite="yes"), TypeError, "overwrite must be a bool"),
             (dict(tokenizer_weights="abc"), ValueError, "tokenizer_weights"),
             (dict(tokenizer_weights=b"0" * 64), TypeError, "tokenizer_weights"),
             (dict(layout=other), ValueError, "another tokenizer")]
    for kw, error, match in cases:
        with pytest.raises(error, match=match):
            TokenShardWriter(tmp_path / "s", **{**dict(spec=model.spec, layout=layout, classes=["a"]), **kw})
    assert not (tmp_path / "s").exists()
    w = TokenShardWriter(tmp_path / "s", spec=model.spec, layout=layout, classes=("a", "b"))  # a tuple is fine
    good = torch.zeros(2, layout.tokens, dtype=torch.int64)
    for args, error, match in [
            ((torch.zeros(2, layout.tokens + 1, dtype=torch.int64), torch.zeros(2, dtype=torch.int64), ["x", "y"]),
             ValueError, "indices"),
            ((good, torch.zeros(3, dtype=torch.int64), ["x", "y"]), ValueError, "labels"),
            ((good, torch.zeros(2), ["x", "y"]), TypeError, "labels must be an int64 tensor"),
            ((good, [0, 0], ["x", "y"]), TypeError, "labels must be an int64 tensor"),
            ((good, torch.tensor([0, 2]), ["x", "y"]), ValueError, r"labels must lie in \[0, 2\)"),
            ((good, torch.zeros(2, dtype=torch.int64), "xy"), TypeError, "sources must be a list"),
            ((good, torch.zeros(2, dtype=torch.int64), ["x", 2]), TypeError, "sources must be strings"),
            ((good, torch.zeros(2, dtype=torch.int64), ["x"]), ValueError, "source names")]:
        with pytest.raises(error, match=match):
            w.add(*args)
    # nothing was added: close() refuses (a set of no rows would not read back) and writes nothing
    with pytest.raises(ValueError, match="no rows were added"):
        w.close()
    assert not (tmp_path / "s").exists()
    with pytest.raises(ValueError, match="closed"):
        w.add(good, torch.zeros(2, dtype=torch.int64), ["x", "y"])


def test_the_tokenizer_weights_are_recorded_in_the_index_and_every_shard(tmp_path, model):
    from flowmo.state_dicts import weights_digest

    layout = layout_for(model, "token")
    digest = weights_digest(model)
    with TokenShardWriter(tmp_path / "set", spec=model.spec, layout=layout, classes=["a"], shard_size=2,
                          tokenizer_weights=digest) as w:
        w.add(*_rows(layout, 3, 1), ["x", "y", "z"])
    assert json.loads((tmp_path / "set" / "index.json").read_text())["tokenizer_weights"] == digest
    for shard in ["shard-00000.safetensors", "shard-00001.safetensors"]:
        assert read_tokens(tmp_path / "set" / shard).tokenizer_weights == digest
        assert read_token_set(tmp_path / "set" / shard).tokenizer_weights == digest
    assert read_token_set(tmp_path / "set").tokenizer_weights == digest
    # a set written without it (as before the digest existed) reads with None
    assert read_token_set(_write_set(tmp_path, model, "plain")).tokenizer_weights is None
    # a shard of another tokenizer's weights among the set's shards is refused
    write_tokens(tmp_path / "set" / "shard-00001.safetensors", torch.ones(1, layout.tokens, dtype=torch.int64),
                 spec=model.spec, sources=["z"], groups=False, labels=torch.zeros(1, dtype=torch.int64),
                 classes=["a"], layout=layout, tokenizer_weights="f" * 64)
    with pytest.raises(ValueError, match="shard-00001.safetensors records other tokenizer weights"):
        read_token_set(tmp_path / "set")


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


def test_a_token_set_prints_as_a_summary(tmp_path, model):
    ts = read_token_set(_write_set(tmp_path, model))
    assert repr(ts) == (f"TokenSet(3 sequences of {model.spec.code_length} tokens in [0, {ts.layout.vocab_size}), "
                        "2 classes, layout 'token', augment [])")
