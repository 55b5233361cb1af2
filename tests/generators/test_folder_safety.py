"""Folders of one kind are never overwritten by another's (a generator over a tokenizer folder or
a training run, a tokenizer over a generator folder or a run); a generator folder's config is
checked against the weights file's header before anything is allocated; strict version and
dtypes; the __main__ warning points at the user's line."""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import flowmo
from flowmo.data.folder_kinds import check_folder_kind, check_outside_run, folder_kind
from flowmo.generators import MaskGiT, load_generator, read_generator_config
from flowmo.folders.generator_folder import save_generator_folder

V, L, C = 16, 8, 3
SMALL = {"width": 32, "depth": 1, "heads": 2, "mlp_ratio": 2.0}
# what the two training commands write as RUN/config.json (their top-level sections)
TOKENIZER_RUN = {"model": {"preset": "tiny"}, "train": {"steps": 3}, "imports": []}
GENERATOR_RUN = {"generator": {"name": "maskgit"}, "train": {"tokens": "t", "steps": 3}}


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _maskgit(seed=0, **kw):
    torch.manual_seed(seed)
    return MaskGiT(vocab_size=V, seq_len=L, num_classes=C, **{**SMALL, **kw})


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("kinds") / "tok"
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(d)
    return d


def _folder_with(tmp_path, name, doc) -> Path:
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))
    (d / "marker.txt").write_text("the folder's own file")
    return d


# ----------------------------------------------------------------------------- the kinds
def test_each_kind_is_told_apart_by_its_config(tmp_path, tokenizer_folder):
    _maskgit().save_pretrained(tmp_path / "gen")
    assert folder_kind(tmp_path / "gen") == "generator"
    assert folder_kind(tokenizer_folder) == "tokenizer"
    assert folder_kind(_folder_with(tmp_path, "trun", TOKENIZER_RUN)) == "tokenizer-run"
    assert folder_kind(_folder_with(tmp_path, "grun", GENERATOR_RUN)) == "generator-run"
    for i, doc in enumerate(['{"format": "other-tool"}', "[1, 2]", "not json {", '{"a": 1}', '{"train": {}}']):
        assert folder_kind(_folder_with(tmp_path, f"u{i}", doc)) == "unknown", doc
    assert folder_kind(tmp_path / "new") is None
    (tmp_path / "empty").mkdir()
    assert folder_kind(tmp_path / "empty") is None
    with pytest.raises(ValueError, match="want must be"):
        check_folder_kind(tmp_path, "run")


# ----------------------------------------------------------------------------- saving a generator
@pytest.mark.parametrize("kind,doc,named", [
    ("tokenizer", None, "a tokenizer model folder"),
    ("tokenizer-run", TOKENIZER_RUN, "a tokenizer training run"),
    ("generator-run", GENERATOR_RUN, "a generator training run"),
    ("unknown", {"format": "other-tool", "version": 3}, "a config.json flowmo does not know"),
    ("not-json", "{ broken", "a config.json flowmo does not know"),
])
def test_a_generator_is_not_saved_over_another_kind_of_folder(tmp_path, tokenizer_folder, kind, doc, named):
    if doc is None:
        target = tmp_path / "tok"
        flowmo.build(flowmo.flowmo_tiny()).save_pretrained(target)
    else:
        target = _folder_with(tmp_path, kind, doc)
    before = _files(target)
    for save in (lambda: _maskgit().save_pretrained(target), lambda: save_generator_folder(_maskgit(), target)):
        with pytest.raises(ValueError, match="holds ") as e:
            save()
        assert named in str(e.value) and str(target) in str(e.value)
        assert _files(target) == before  # nothing written, nothing replaced


def test_a_generator_folder_is_overwritten_by_a_generator(tmp_path):
    _maskgit(0).save_pretrained(tmp_path / "g", metadata={"classes": ["a", "b", "c"]})
    second = _maskgit(1, depth=2)
    second.save_pretrained(tmp_path / "g", metadata={"classes": ["x", "y", "z"]})
    loaded = load_generator(tmp_path / "g")
    assert loaded.depth == 2 and loaded.metadata == {"classes": ["x", "y", "z"]}
    assert all(torch.equal(a, b) for a, b in zip(second.state_dict().values(), loaded.state_dict().values()))


# ----------------------------------------------------------------------------- saving a tokenizer
@pytest.mark.parametrize("which,named", [("generator", "a generator folder"),
                                         ("tokenizer-run", "a tokenizer training run"),
                                         ("generator-run", "a generator training run"),
                                         ("unknown", "a config.json flowmo does not know")])
def test_a_tokenizer_is_not_saved_over_another_kind_of_folder(tmp_path, which, named):
    if which == "generator":
        target = tmp_path / "gen"
        _maskgit().save_pretrained(target)
    else:
        target = _folder_with(tmp_path, which, {"tokenizer-run": TOKENIZER_RUN, "generator-run": GENERATOR_RUN,
                                                "unknown": {"hello": "world"}}[which])
    before = _files(target)
    with pytest.raises(ValueError, match=named) as e:
        flowmo.build(flowmo.flowmo_tiny()).save_pretrained(target)
    assert str(target) in str(e.value)
    assert _files(target) == before


def test_a_tokenizer_folder_is_overwritten_by_a_tokenizer(tmp_path):
    flowmo.build(flowmo.flowmo_tiny()).save_pretrained(tmp_path / "t")
    spec = flowmo.flowmo_tiny().replace(code_length=8)
    flowmo.build(spec).save_pretrained(tmp_path / "t")
    assert flowmo.FlowMo.from_pretrained(tmp_path / "t").spec == spec


def test_a_file_is_refused_as_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        _maskgit().save_pretrained(tmp_path / "f")


# ----------------------------------------------------------------------------- exports outside the run
def test_an_export_over_the_runs_own_files_is_refused(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints" / "ckpt-00000002").mkdir(parents=True)
    (tmp_path / "link").symlink_to(run)
    monkeypatch.chdir(tmp_path)
    same, ckpts = "is the training run folder", "is inside the checkpoints of the training run folder"
    for export, where in ((run, same), (tmp_path / "link", same), (Path("runs/r/../r"), same), (Path("runs/r/"), same),
                          (run / "checkpoints", ckpts), (run / "checkpoints" / "ckpt-00000002", ckpts),
                          (Path("link/checkpoints/x"), ckpts)):
        with pytest.raises(ValueError, match=where) as e:
            check_outside_run(export, run, "--export", "--out")
        assert "--export" in str(e.value) and "--out" in str(e.value)
    # beside, above, or a sub-folder of the run other than checkpoints/ (RUN/model, as the demos write)
    for fine in (tmp_path / "runs", tmp_path / "runs" / "r2", tmp_path / "other", run / "model", Path("link/model")):
        check_outside_run(fine, run)


# ----------------------------------------------------------------------------- loading
@pytest.fixture
def built_on(monkeypatch):
    """The device type of every MaskGiT construction, in order (the default device then)."""
    devices: list = []
    original = MaskGiT.__init__

    @functools.wraps(original)
    def recording(self, *args, **kw):
        devices.append(torch.empty(()).device.type)
        original(self, *args, **kw)

    monkeypatch.setattr(MaskGiT, "__init__", recording)
    return devices


def _edit_config(folder: Path, **changes) -> None:
    doc = json.loads((folder / "config.json").read_text())
    for k, v in changes.items():
        if k in doc["config"]:
            doc["config"][k] = v
        else:
            doc[k] = v
    (folder / "config.json").write_text(json.dumps(doc))


def test_huge_sizes_are_refused_from_the_header_before_anything_is_allocated(tmp_path, built_on):
    _maskgit().save_pretrained(tmp_path / "g")
    built_on.clear()
    assert load_generator(tmp_path / "g").vocab_size == V
    assert built_on == ["meta", "cpu"]  # checked on meta, then built
    for field, value in (("vocab_size", 2 ** 45), ("seq_len", 2 ** 40), ("width", 2 ** 30), ("width", 2 ** 20),
                         ("num_classes", 2 ** 44)):
        folder = tmp_path / f"{field}{value}"
        _maskgit().save_pretrained(folder)
        _edit_config(folder, **{field: value})
        built_on.clear()
        with pytest.raises(ValueError) as e:
            load_generator(folder)
        if value == 2 ** 30:  # width 2^30: 3 x 2^30 x 2^30 float32: too large even to describe on the meta device
            assert "config.json: its config does not build a maskgit on the meta device" in str(e.value)
        else:
            assert f"{folder / 'model.safetensors'} does not fit the model" in str(e.value)
            assert "shape mismatch" in str(e.value)
        assert built_on == ["meta"], field  # never built for real


def test_a_config_with_more_layers_than_the_weights_is_refused_before_building(tmp_path, built_on):
    _maskgit().save_pretrained(tmp_path / "g")
    _edit_config(tmp_path / "g", depth=3)
    built_on.clear()
    with pytest.raises(ValueError, match=r"missing key\(s\): blocks\.1\."):
        load_generator(tmp_path / "g")
    assert built_on == ["meta"]


@pytest.mark.parametrize("version", [True, 1.0, "1", 2, None])
def test_the_version_must_be_the_integer_1(tmp_path, version):
    _maskgit().save_pretrained(tmp_path / "g")
    assert read_generator_config(tmp_path / "g")["version"] == 1
    _edit_config(tmp_path / "g", version=version)
    with pytest.raises(ValueError, match=r"has version .*this flowmo reads version 1"):
        read_generator_config(tmp_path / "g")
    with pytest.raises(ValueError, match="has version"):
        load_generator(tmp_path / "g")


@pytest.mark.parametrize("dtype", [torch.int64, torch.float16, torch.float64])
def test_a_tensor_of_another_dtype_is_refused_naming_the_key(tmp_path, dtype):
    g = _maskgit()
    g.save_pretrained(tmp_path / "g")
    weights = tmp_path / "g" / "model.safetensors"
    state = load_file(str(weights))
    key = next(k for k in state if k.endswith(".bias"))
    assert state[key].dtype == torch.float32
    state[key] = state[key].to(dtype)
    save_file(state, str(weights))
    with pytest.raises(ValueError, match="dtype mismatch") as e:
        load_generator(tmp_path / "g")
    msg = str(e.value)
    assert key in msg and str(dtype).removeprefix("torch.") in msg and "float32" in msg and str(weights) in msg


def test_a_damaged_weights_file_is_refused_naming_it(tmp_path):
    _maskgit().save_pretrained(tmp_path / "g")
    (tmp_path / "g" / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_generator(tmp_path / "g")


# ----------------------------------------------------------------------------- the __main__ warning
def test_the_main_warning_points_at_the_users_line(tmp_path):
    namespace = {"__name__": "__main__"}
    exec("from flowmo.generators import MaskGiT\n"
         "class MainGen(MaskGiT):\n"
         "    name = 'test_main_gen'\n", namespace)
    cls = namespace["MainGen"]
    flowmo.GENERATORS.register("test_main_gen")(cls)
    try:
        g = cls(vocab_size=V, seq_len=L, num_classes=0, **SMALL)
        with warnings.catch_warnings(record=True) as by_method:
            warnings.simplefilter("always")
            g.save_pretrained(tmp_path / "g0")
        with warnings.catch_warnings(record=True) as by_function:  # called directly: one frame less
            warnings.simplefilter("always")
            save_generator_folder(g, tmp_path / "g1")
        for caught in (by_method, by_function):
            [w] = [w for w in caught if "defined in __main__" in str(w.message)]
            assert w.filename == __file__, w.filename
        for d in ("g0", "g1"):
            assert "imports" not in json.loads((tmp_path / d / "config.json").read_text())
    finally:
        flowmo.GENERATORS.unregister("test_main_gen")
