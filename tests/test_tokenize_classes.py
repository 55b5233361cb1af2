"""`flowmo tokenize --classes`: a class-folder tree -> a labelled token set, with and without
mirrored copies, read back and checked against tokenizing the images (and mirrored files)
directly."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo.cli import main
from flowmo.data.token_layout import layout_for
from flowmo.data.token_set_reader import read_token_set
from flowmo.data.tokens import read_tokens
from flowmo.cli.io import load_image

CLASSES = ["ant", "bee", "cow"]  # folder names, deliberately created out of order below
PER_CLASS = {"ant": 2, "bee": 3, "cow": 2}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tok") / "model"
    flowmo.FlowMo(flowmo.flowmo_tiny()).save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree") / "images"
    rng = np.random.default_rng(3)
    for c in ["cow", "ant", "bee"]:
        (root / c).mkdir(parents=True)
        for i in range(PER_CLASS[c]):
            # 32x32 = the tiny model's size: no resize, so mirroring commutes with loading
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / c / f"im{i}.png")
    (root / "empty").mkdir()  # a folder without images is no class
    return root


def _tokenize(*args):
    return main(["tokenize", *map(str, args), "--device", "cpu", "-q"])


def _expected_rows(tree):
    """(relative name, label) in the documented order: classes by name, images by relative path."""
    return [(f"{c}/im{i}.png", label) for label, c in enumerate(CLASSES) for i in range(PER_CLASS[c])]


def test_class_tree_to_token_set_labels_and_tokens(tmp_path, tree, tokenizer):
    out = tmp_path / "set"
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--batch-size", 3,
                     "--shard-size", 3) == 0
    ts = read_token_set(out)
    rows = _expected_rows(tree)
    assert ts.classes == CLASSES
    assert ts.sources == [name for name, _ in rows]
    assert ts.labels.tolist() == [label for _, label in rows]
    assert ts.augment == ()
    # 7 rows in shards of 3: 3 + 3 + 1
    index = json.loads((out / "index.json").read_text())
    assert [s["count"] for s in index["shards"]] == [3, 3, 1]
    # auto layout of the tiny model (18 bits per token <= 2**20): one index per latent token
    model = flowmo.FlowMo.from_pretrained(tokenizer)
    assert ts.layout == layout_for(model, "token") and ts.layout.vocab_size == 2**18
    with torch.no_grad():
        direct = model.tokenize(torch.stack([load_image(tree / name, 32) for name, _ in rows]))
    assert torch.equal(ts.sequences, direct)


def test_hflip_rows_are_the_tokens_of_mirrored_images(tmp_path, tree, tokenizer):
    out = tmp_path / "set"
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--layout", "group",
                     "--hflip", "--batch-size", 4) == 0
    ts = read_token_set(out)
    rows = _expected_rows(tree)
    assert ts.augment == ("hflip",)
    assert ts.sources == [s for name, _ in rows for s in (name, name + "#hflip")]
    assert ts.labels.tolist() == [label for _, label in rows for _ in range(2)]
    assert ts.layout.kind == "group" and ts.layout.seq_len == 16 * 2 and ts.layout.vocab_size == 512

    # the mirrored files, written with Pillow and tokenized by the single-file command
    mirrored = tmp_path / "mirrored"
    mirrored.mkdir()
    for k, (name, _) in enumerate(rows):
        Image.open(tree / name).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(mirrored / f"{k:02d}.png")
    assert _tokenize("--model", tokenizer, "--input", mirrored, "--output", tmp_path / "m.safetensors", "--groups") == 0
    direct_mirrored = read_tokens(tmp_path / "m.safetensors").tokens  # (N, T, G)
    assert torch.equal(ts.sequences[1::2], direct_mirrored.reshape(len(rows), -1))
    # and the original rows are the plain images' group indices (the tree as a plain folder: the
    # files sorted by relative name, the order of the set's rows)
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", tmp_path / "o.safetensors", "--groups") == 0
    assert read_tokens(tmp_path / "o.safetensors").sources == [n for n, _ in rows]
    assert torch.equal(ts.sequences[0::2], read_tokens(tmp_path / "o.safetensors").tokens.reshape(len(rows), -1))
    # a mirrored image is (for random pixels) a different image: its tokens differ somewhere
    assert not torch.equal(ts.sequences[0::2], ts.sequences[1::2])


def test_an_existing_set_is_replaced_only_with_overwrite(tmp_path, tree, tokenizer, capsys):
    out = tmp_path / "set"
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--shard-size", 2) == 0
    capsys.readouterr()
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--overwrite",
                     "--hflip") == 0
    ts = read_token_set(out)
    assert len(ts) == 14 and ts.augment == ("hflip",)
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.safetensors"]  # old shards gone


@pytest.mark.parametrize("extra, message", [
    (["--hflip"], "--hflip applies only with --classes"),
    (["--layout", "group"], "--layout applies only with --classes"),
    (["--shard-size", "4"], "--shard-size applies only with --classes"),
])
def test_set_options_need_classes(tmp_path, tree, tokenizer, capsys, extra, message):
    assert _tokenize("--model", tokenizer, "--input", tree / "ant", "--output", tmp_path / "t.safetensors",
                     *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "t.safetensors").exists()


def test_classes_refuses_loose_images_groups_and_several_inputs(tmp_path, tree, tokenizer, capsys):
    loose = tmp_path / "loose"
    (loose / "a").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(loose / "a" / "x.png")
    Image.new("RGB", (32, 32)).save(loose / "stray.png")
    cases = [(["--input", loose], "outside class sub-folders"),
             (["--input", tree, "--groups"], "--layout group"),
             (["--input", tree / "ant", tree / "bee"], "one --input")]
    for args, message in cases:
        assert _tokenize("--model", tokenizer, *args, "--output", tmp_path / "s", "--classes") == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "s" / "index.json").exists()


def _tree_state(folder):
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(folder.rglob("*"))}


def test_a_failure_midway_keeps_the_old_set_with_overwrite(tmp_path, tree, tokenizer, capsys):
    out = tmp_path / "set"
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--shard-size", 2) == 0
    before, old = _tree_state(out), read_token_set(out)
    # the same tree with its last image truncated: its header reads, its pixels do not
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tree, bad)
    last = bad / "cow" / "im1.png"
    last.write_bytes(last.read_bytes()[: len(last.read_bytes()) // 2])
    capsys.readouterr()
    # batches of 2 in shards of 2: three shards are staged before the truncated image fails
    assert _tokenize("--model", tokenizer, "--input", bad, "--output", out, "--classes", "--overwrite",
                     "--shard-size", 2, "--batch-size", 2) != 0
    assert "truncated" in capsys.readouterr().err
    assert _tree_state(out) == before  # the old set as it was; no staged shards left
    again = read_token_set(out)
    assert again.sources == old.sources and torch.equal(again.sequences, old.sequences)
    # and a fresh output folder is not left behind by a failed run
    assert _tokenize("--model", tokenizer, "--input", bad, "--output", tmp_path / "fresh", "--classes",
                     "--shard-size", 2, "--batch-size", 2) != 0
    assert not (tmp_path / "fresh").exists()


def test_the_tokenizer_weights_are_recorded_and_checked_by_detokenize(tmp_path, tree, tokenizer, capsys):
    from flowmo.data.tokens import write_tokens
    from flowmo.state_dicts import token_weights_digest, weights_digest

    model = flowmo.FlowMo.from_pretrained(tokenizer)
    digest = token_weights_digest(model)  # the encoder's and quantizer's weights: what makes the tokens
    out = tmp_path / "set"
    assert _tokenize("--model", tokenizer, "--input", tree, "--output", out, "--classes", "--shard-size", 4) == 0
    assert json.loads((out / "index.json").read_text())["tokenizer_weights"] == digest
    assert read_tokens(out / "shard-00001.safetensors").tokenizer_weights == digest
    assert read_token_set(out).tokenizer_weights == digest
    # single token files record it too
    assert _tokenize("--model", tokenizer, "--input", tree / "ant", "--output", tmp_path / "t.safetensors") == 0
    assert read_tokens(tmp_path / "t.safetensors").tokenizer_weights == digest

    # a tokenizer of the same spec, re-initialised: detokenize refuses its tokens with the reason
    torch.manual_seed(5)
    other = tmp_path / "other"
    flowmo.FlowMo(flowmo.flowmo_tiny()).save_pretrained(other)
    assert flowmo.FlowMo.from_pretrained(other).spec.fingerprint() == model.spec.fingerprint()
    capsys.readouterr()
    detok = ["detokenize", "--tokens", str(tmp_path / "t.safetensors"), "--device", "cpu", "-q", "--steps", "1"]
    assert main([*detok, "--model", str(other), "--output", str(tmp_path / "o1")]) == 2
    assert "same architecture, other weights" in capsys.readouterr().err
    assert main([*detok, "--model", str(tokenizer), "--output", str(tmp_path / "o2")]) == 0
    # a token file without the digest (written before it existed) decodes with the spec check only
    tf = read_tokens(tmp_path / "t.safetensors")
    write_tokens(tmp_path / "old.safetensors", tf.tokens, spec=model.spec, sources=tf.sources, groups=False)
    assert read_tokens(tmp_path / "old.safetensors").tokenizer_weights is None
    assert main(["detokenize", "--tokens", str(tmp_path / "old.safetensors"), "--model", str(other), "--device", "cpu",
                 "-q", "--steps", "1", "--output", str(tmp_path / "o3")]) == 0
    # a decoder post-trained with the encoder frozen (a few-step decoder) makes the same tokens: accepted
    tuned = flowmo.FlowMo.from_pretrained(tokenizer)
    with torch.no_grad():
        next(tuned.decoder.parameters()).add_(0.5)
    tuned.save_pretrained(tmp_path / "tuned")
    assert weights_digest(tuned) != weights_digest(model) and token_weights_digest(tuned) == digest
    assert main([*detok, "--model", str(tmp_path / "tuned"), "--output", str(tmp_path / "o4")]) == 0
    # a file written when the whole model's digest was recorded still decodes with that model
    write_tokens(tmp_path / "whole.safetensors", tf.tokens, spec=model.spec, sources=tf.sources, groups=False,
                 tokenizer_weights=weights_digest(model))
    assert main(["detokenize", "--tokens", str(tmp_path / "whole.safetensors"), "--model", str(tokenizer), "--device",
                 "cpu", "-q", "--steps", "1", "--output", str(tmp_path / "o5")]) == 0
    assert main(["detokenize", "--tokens", str(tmp_path / "whole.safetensors"), "--model", str(other), "--device",
                 "cpu", "-q", "--steps", "1", "--output", str(tmp_path / "o6")]) == 2


def test_notes_for_empty_folders_and_a_parent_of_the_class_folders(tmp_path, tree, tokenizer, capsys):
    base = ["tokenize", "--model", str(tokenizer), "--classes", "--device", "cpu"]
    assert main([*base, "--input", str(tree), "--output", str(tmp_path / "s1")]) == 0
    err = capsys.readouterr().err
    assert "1 sub-folder(s) of --input hold no image and are not classes: empty" in err and "parent" not in err
    # the parent of a class tree: one "class" whose images all sit in sub-folders
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "train").symlink_to(tree)
    assert main([*base, "--input", str(parent), "--output", str(tmp_path / "s2")]) == 0
    assert "give the class folders' parent instead" in capsys.readouterr().err
