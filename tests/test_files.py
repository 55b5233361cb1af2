"""Damaged, foreign and hostile files: model folders, released .pth checkpoints, training
checkpoints and the command line on top of them.

Every case is refused with a clear error (ValueError subclasses: StateDictMismatchError,
NotACheckpointError, CheckpointError; FileNotFoundError for absent files), or, where a
damage cannot be told from a valid file, the test pins down what happens (see
docs/reliability.md).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import random
import re
import shutil
import struct
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

import flowmo
from flowmo import FlowMo, StateDictMismatchError
from flowmo import cli
from flowmo.folders.convert import load_release_checkpoint
from flowmo.folders.release import NotACheckpointError, load_release_state_dict
from flowmo.train import Trainer, load_config
from flowmo.folders.checkpoints import CheckpointError, latest_checkpoint, list_checkpoints, load_checkpoint

SPEC = flowmo.flowmo_tiny()
WEIGHTS = "model.safetensors"
CONFIG = "config.json"

from conftest import random_png_folder


# ------------------------------------------------------------------ fixtures and helpers
@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread is several times faster than two on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return flowmo.build(SPEC).eval()


@pytest.fixture(scope="module")
def good(model, tmp_path_factory):
    """A from_pretrained folder of the tiny model."""
    return model.save_pretrained(tmp_path_factory.mktemp("good") / "model")


@pytest.fixture(scope="module")
def weights_bytes(good):
    return (good / WEIGHTS).read_bytes()


def header_length(data: bytes) -> int:
    return struct.unpack("<Q", data[:8])[0]


def header(data: bytes) -> dict:
    return json.loads(data[8: 8 + header_length(data)])


def folder(tmp_path, good, *, weights=None, config=None, name="m"):
    """A copy of the good folder with its weights (bytes) and/or config (text) replaced."""
    d = tmp_path / name
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(good, d)
    if weights is not None:
        (d / WEIGHTS).write_bytes(weights)
    if config is not None:
        (d / CONFIG).write_text(config)
    return d


def same_weights(a: FlowMo, b: FlowMo) -> bool:
    sb = b.state_dict()
    return all(torch.equal(v, sb[k]) for k, v in a.state_dict().items())


def record_start(data: bytes, info: zipfile.ZipInfo) -> int:
    """Offset of a stored zip record's data (the local header's name and extra lengths decide)."""
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len


def flip(data: bytes, pos: int, bit: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= 1 << bit
    return bytes(b)


class Payload:
    """Unpickling this calls ``open(path, "w")``: the file appears if a loader runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


# ------------------------------------------------------------------ model folders: weights
@pytest.mark.parametrize("cut", ["empty", 4, 8, "mid-header", "header-only", "half", "last-byte"])
def test_truncated_weights_are_refused(tmp_path, good, weights_bytes, cut):
    h = 8 + header_length(weights_bytes)
    n = {"empty": 0, "mid-header": 8 + (h - 8) // 2, "header-only": h, "half": len(weights_bytes) // 2,
         "last-byte": len(weights_bytes) - 1}.get(cut, cut)
    d = folder(tmp_path, good, weights=weights_bytes[:n])
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        FlowMo.from_pretrained(d)


def _npy() -> bytes:
    b = io.BytesIO()
    np.save(b, np.zeros((4, 4), dtype=np.float32))
    return b.getvalue()


def _pth(model) -> bytes:
    b = io.BytesIO()
    torch.save(model.state_dict(), b)
    return b.getvalue()


@pytest.mark.parametrize("kind", ["pth", "npy", "json", "text", "random"])
def test_wrong_format_weights_are_refused(tmp_path, good, model, kind):
    data = {"pth": lambda: _pth(model), "npy": _npy, "json": lambda: b'{"encoder.img_in.weight": [1, 2]}',
            "text": lambda: b"these are not weights\n", "random": lambda: os.urandom(4096)}[kind]()
    d = folder(tmp_path, good, weights=data)
    with pytest.raises(ValueError, match="is not a readable safetensors file"):
        FlowMo.from_pretrained(d)


def test_header_bit_flips_are_refused_or_harmless(tmp_path, good, model, weights_bytes):
    """Single-bit flips in the 8-byte length and the JSON header: refused, or (a flip that keeps
    the header meaning the same, e.g. in the free-form metadata) loaded bit-identical."""
    h = 8 + header_length(weights_bytes)
    rng = random.Random(0)
    cases = [(p, b) for p in range(8) for b in range(8)]  # every bit of the length prefix
    cases += [(rng.randrange(8, h), rng.randrange(8)) for _ in range(60)]
    meta = weights_bytes.index(b'"flowmo"')  # inside the free-form metadata value: harmless
    cases += [(meta + 2, 0), (meta + 3, 1)]
    refused = harmless = 0
    d = folder(tmp_path, good)
    for pos, bit in cases:
        (d / WEIGHTS).write_bytes(flip(weights_bytes, pos, bit))
        try:
            loaded = FlowMo.from_pretrained(d)
        except ValueError:
            refused += 1
            continue
        assert same_weights(loaded, model), f"header flip at byte {pos} bit {bit} changed the weights silently"
        harmless += 1
    assert refused + harmless == len(cases) and refused >= len(cases) - 5 and harmless >= 2
    print(f"header flips: {refused} refused, {harmless} loaded identical of {len(cases)}")


def _offset(data: bytes, key: str) -> int:
    return 8 + header_length(data) + header(data)[key]["data_offsets"][0]


NORM = "decoder.double_blocks.0.img_attn.norm.key_norm.scale"  # float32 values 1.0


def test_data_bit_flip_to_inf_is_refused_naming_the_tensor(tmp_path, good, weights_bytes):
    # 1.0f is 0x3F800000 (little endian 00 00 80 3F); bit 30 (byte 3, bit 6) makes it 0x7F800000 = +Inf
    pos = _offset(weights_bytes, NORM) + 3
    d = folder(tmp_path, good, weights=flip(weights_bytes, pos, 6))
    with pytest.raises(StateDictMismatchError, match=f"non-finite.*{NORM}"):
        FlowMo.from_pretrained(d)


def test_data_bit_flip_in_the_mantissa_is_not_detected(tmp_path, good, model, weights_bytes):
    """Documented limit: safetensors has no checksum, so a flip that leaves a finite value loads."""
    pos = _offset(weights_bytes, NORM)
    d = folder(tmp_path, good, weights=flip(weights_bytes, pos, 0))
    loaded = FlowMo.from_pretrained(d)
    diff = [k for k, v in model.state_dict().items() if not torch.equal(v, loaded.state_dict()[k])]
    assert diff == [NORM]
    assert float(loaded.state_dict()[NORM].view(-1)[0]) == pytest.approx(1.0, abs=1e-6)


def _save(tensors: dict, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def test_extra_missing_and_misshaped_tensors_are_named(tmp_path, good, model):
    sd = dict(model.state_dict())
    cases = {
        "extra": ({**sd, "decoder.extra.weight": torch.zeros(2)}, "1 unexpected key(s): decoder.extra.weight"),
        "missing": ({k: v for k, v in sd.items() if k != "encoder.img_in.bias"}, "1 missing key(s): encoder.img_in.bias"),
        "shape": ({**sd, "encoder.img_in.bias": torch.zeros(7)}, "encoder.img_in.bias: expected (128,), got (7,)"),
        "empty": ({}, "missing key"),
    }
    for name, (tensors, message) in cases.items():
        d = folder(tmp_path, good, name=name)
        _save(tensors, d / WEIGHTS)
        with pytest.raises(StateDictMismatchError, match=re.escape(message)):
            FlowMo.from_pretrained(d)


def test_non_finite_weights_are_refused(tmp_path, good, model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["decoder.img_in.weight"][0, 0] = float("nan")
    d = folder(tmp_path, good)
    _save(sd, d / WEIGHTS)
    with pytest.raises(StateDictMismatchError, match="non-finite.*decoder.img_in.weight"):
        FlowMo.from_pretrained(d)


def test_other_dtypes_in_the_file_are_cast(tmp_path, good, model):
    """Not damage: float16 weights load into the float32 model (cast, as load_state_dict does)."""
    d = folder(tmp_path, good)
    _save({k: v.half() for k, v in model.state_dict().items()}, d / WEIGHTS)
    loaded = FlowMo.from_pretrained(d)
    assert loaded.dtype == torch.float32
    w = model.state_dict()["decoder.img_in.weight"]
    assert torch.equal(loaded.state_dict()["decoder.img_in.weight"], w.half().float())


# ------------------------------------------------------------------ model folders: config.json
def test_config_with_unknown_field_is_refused(tmp_path, good):
    cfg = json.loads((good / CONFIG).read_text())
    for bad, where in (({**cfg, "extra_field": 1}, "extra_field"),
                       ({**cfg, "sampler": {**cfg["sampler"], "stepz": 3}}, "sampler.stepz")):
        d = folder(tmp_path, good, config=json.dumps(bad))
        with pytest.raises(ValueError, match=rf"not a valid FlowMo spec.*unexpected field {where}"):
            FlowMo.from_pretrained(d)


@pytest.mark.parametrize("field", ["image_size", "code_length", "sampler", "quantizer", "encoder"])
def test_config_with_missing_field_is_refused(tmp_path, good, field):
    cfg = json.loads((good / CONFIG).read_text())
    del cfg[field]
    d = folder(tmp_path, good, config=json.dumps(cfg))
    with pytest.raises(ValueError, match=field):
        FlowMo.from_pretrained(d)


@pytest.mark.parametrize("text", ["", "{not json", "[1, 2]", "null", '{"image_size": "big"}', "\udcff"])
def test_invalid_config_is_refused(tmp_path, good, text):
    d = folder(tmp_path, good)
    (d / CONFIG).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(ValueError, match="is not a valid FlowMo spec"):
        FlowMo.from_pretrained(d)


def test_spec_that_does_not_match_its_weights(tmp_path, good):
    deeper = SPEC.replace(decoder={**SPEC.decoder.model_dump(), "depth": 3})
    wider = SPEC.replace(encoder={**SPEC.encoder.model_dump(), "width": 192, "heads": 6})
    channels = SPEC.replace(code_channels=9, quantizer={"name": "lfq", "group_bits": 9})
    patch = SPEC.replace(patch_size=2)
    for spec, message in ((deeper, "missing key"), (wider, "shape mismatch"), (channels, "shape mismatch"),
                          (patch, "shape mismatch")):
        d = folder(tmp_path, good, config=spec.to_json())
        with pytest.raises(StateDictMismatchError, match=message):
            FlowMo.from_pretrained(d)


def test_absent_files(tmp_path, good):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        FlowMo.from_pretrained(tmp_path / "nowhere")
    for name in (CONFIG, WEIGHTS):
        d = folder(tmp_path, good, name=f"no_{name}")
        (d / name).unlink()
        with pytest.raises(FileNotFoundError, match=name):
            FlowMo.from_pretrained(d)


# ------------------------------------------------------------------ released .pth checkpoints
@pytest.fixture(scope="module")
def release_pth(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("release") / "flowmo_tiny.pth"
    sd = model.state_dict()
    torch.save({"model_ema_state_dict": sd, "model_state_dict": sd, "total_steps": 3}, path)
    return path


def test_release_truncated_and_empty_are_refused(tmp_path, release_pth):
    data = release_pth.read_bytes()
    for n in (0, 1, 100, len(data) // 3, len(data) - 1):
        p = tmp_path / f"cut{n}.pth"
        p.write_bytes(data[:n])
        with pytest.raises(NotACheckpointError):
            load_release_state_dict(p)


def test_release_bit_flips_are_refused_or_harmless(tmp_path, release_pth, model):
    """The zip records' CRC-32s are checked: a flip anywhere is refused, except in bytes that
    carry no data (zip padding), which load bit-identical."""
    data = release_pth.read_bytes()
    rng = random.Random(1)
    with zipfile.ZipFile(release_pth) as z:  # flips in every record's data, the pickle included
        infos = z.infolist()
    positions = [rng.randrange(len(data)) for _ in range(40)]
    for info in infos:
        if info.file_size:
            positions.append(record_start(data, info) + rng.randrange(info.file_size))
    refused = harmless = 0
    p = tmp_path / "flipped.pth"
    for pos in positions:
        p.write_bytes(flip(data, pos, rng.randrange(8)))
        try:
            loaded = load_release_checkpoint(p, spec=SPEC)
        except NotACheckpointError:
            refused += 1
            continue
        assert same_weights(loaded, model), f"flip at byte {pos} changed the weights silently"
        harmless += 1
    assert refused >= len(positions) - 5
    print(f"release .pth flips: {refused} refused, {harmless} loaded identical of {len(positions)}")


def test_release_damaged_tensor_data_names_the_damage(tmp_path, release_pth):
    data = release_pth.read_bytes()
    with zipfile.ZipFile(release_pth) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and i.file_size)
    pos = record_start(data, info) + info.file_size // 2
    p = tmp_path / "flipped.pth"
    p.write_bytes(flip(data, pos, 3))
    with pytest.raises(NotACheckpointError, match="is damaged.*CRC"):
        load_release_state_dict(p)


def _zip_of_text() -> bytes:
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w") as z:
        z.writestr("notes/readme.txt", "not a checkpoint")
    return b.getvalue()


def _safetensors(model) -> bytes:
    from safetensors.torch import save

    return save(model.state_dict())


@pytest.mark.parametrize("kind", ["zip_of_text", "npy", "json", "safetensors", "random", "text"])
def test_release_wrong_formats_are_refused(tmp_path, model, kind):
    data = {"zip_of_text": _zip_of_text, "npy": _npy, "json": lambda: b'{"model_ema_state_dict": {}}',
            "safetensors": lambda: _safetensors(model), "random": lambda: os.urandom(5000),
            "text": lambda: b"hello\n"}[kind]()
    p = tmp_path / f"{kind}.pth"
    p.write_bytes(data)
    with pytest.raises(NotACheckpointError):
        load_release_state_dict(p)


def test_release_non_finite_weights_are_refused(tmp_path, model):
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["encoder.img_in.weight"][1, 1] = float("inf")
    p = tmp_path / "inf.pth"
    torch.save({"model_ema_state_dict": sd}, p)
    with pytest.raises(StateDictMismatchError, match="non-finite.*encoder.img_in.weight"):
        load_release_checkpoint(p, spec=SPEC)


@pytest.mark.parametrize("container", ["raw_pickle", "torch_zip", "torch_legacy", "beside_real_weights"])
def test_malicious_pickle_is_refused_without_running(tmp_path, model, container):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    payload = {"model_ema_state_dict": Payload(marker), "total_steps": 1}
    if container == "raw_pickle":
        p.write_bytes(pickle.dumps(payload))
    elif container == "torch_zip":
        torch.save(payload, p)
    elif container == "torch_legacy":
        torch.save(payload, p, _use_new_zipfile_serialization=False)
    else:  # a checkpoint with real weights and one poisoned entry
        torch.save({"model_ema_state_dict": model.state_dict(), "model_state_dict": model.state_dict(),
                    "extra": Payload(marker)}, p)
    assert not marker.exists()
    with pytest.raises(NotACheckpointError, match="weights_only"):
        load_release_checkpoint(p, spec=SPEC)
    assert not marker.exists(), "the payload ran"
    # the payload is real: an unrestricted unpickler would have created the file
    pickle.loads(pickle.dumps(Payload(marker))).close()
    assert marker.exists()


# ------------------------------------------------------------------ training checkpoints
@pytest.fixture(scope="module")
def images_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    random_png_folder(root, 4, seed=3)
    return root


def train_config(images_folder, **train):
    cfg = {
        "model": "tiny",
        "train": {
            "steps": 2, "seed": 4, "device": "cpu",
            "data": {"folder": str(images_folder)},
            "optim": {"lr": 1e-3, "batch_size": 2},
            "ema": {"decay": 0.9, "every": 1},
            "checkpoint": {"every": 1, "keep_last": 3},
            "log": {"every": 1, "images_every": 1000, "tensorboard": False, "progress": False},
            "eval": {"enabled": False},
        },
    }
    cfg["train"].update(train)
    return cfg


@pytest.fixture(scope="module")
def run_dir(images_folder, tmp_path_factory):
    """A finished 2-step run with checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("run") / "run"
    t = Trainer(load_config(train_config(images_folder)), out, log=lambda s: None)
    t.fit()
    t.close()
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [1, 2]
    return out


def _truncate(name):
    def f(ck):
        (ck / name).write_bytes((ck / name).read_bytes()[:200])
    return f


def _write(name, text):
    def f(ck):
        (ck / name).write_text(text)
    return f


def _edit_state(fn):
    def f(ck):
        state = json.loads((ck / "state.json").read_text())
        fn(state)
        (ck / "state.json").write_text(json.dumps(state))
    return f


def _nan_weights(ck):
    from safetensors.torch import load_file

    sd = load_file(str(ck / "model.safetensors"))
    sd["decoder.img_in.weight"][0, 0] = float("nan")
    _save(sd, ck / "model.safetensors")


def _flip_data(ck):
    data = (ck / "optimizer.safetensors").read_bytes()
    (ck / "optimizer.safetensors").write_bytes(flip(data, 4, 5))  # the header length


DAMAGE = {
    "truncated model.safetensors": (_truncate("model.safetensors"), "model.safetensors is not a readable"),
    "truncated optimizer.safetensors": (_truncate("optimizer.safetensors"), "optimizer.safetensors is not a readable"),
    "bit-flipped optimizer header": (_flip_data, "optimizer.safetensors is not a readable"),
    "garbled ema.safetensors": (_write("ema.safetensors", "garbage"), "ema.safetensors is not a readable"),
    "truncated state.json": (_truncate("state.json"), "state.json is not valid JSON"),
    "empty state.json": (_write("state.json", ""), "state.json is not valid JSON"),
    "state.json not an object": (_write("state.json", "[1, 2]"), "state.json does not hold a JSON object"),
    "state.json without step": (_edit_state(lambda s: s.pop("step")), "is damaged.*KeyError.*step"),
    "state.json without optimizer": (_edit_state(lambda s: s.pop("optimizer")), "is damaged.*optimizer"),
    "state.json with a short RNG state": (_edit_state(lambda s: s.update(torch_rng=s["torch_rng"][:8])), "is damaged"),
    "state.json with a text step": (_edit_state(lambda s: s.update(step="two")), "is damaged"),
    "model.safetensors deleted": (lambda ck: (ck / "model.safetensors").unlink(), "has no model.safetensors"),
    "ema.safetensors deleted": (lambda ck: (ck / "ema.safetensors").unlink(), "has no ema.safetensors"),
    "NaN in the weights": (_nan_weights, "is damaged.*non-finite.*decoder.img_in.weight"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_from_a_damaged_checkpoint_is_refused_naming_it(tmp_path, run_dir, images_folder, damage):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    ckpt = latest_checkpoint(out / "checkpoints")
    fn, message = DAMAGE[damage]
    fn(ckpt)
    config = load_config(train_config(images_folder, steps=3))
    with pytest.raises(CheckpointError, match=message) as e:
        Trainer(config, out, resume=True, log=lambda s: None)
    assert str(ckpt) in str(e.value)


def test_moving_the_damaged_checkpoint_away_resumes_from_the_previous(tmp_path, run_dir, images_folder):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    ckpt = latest_checkpoint(out / "checkpoints")
    _truncate("model.safetensors")(ckpt)
    shutil.move(str(ckpt), str(tmp_path / "damaged"))
    t = Trainer(load_config(train_config(images_folder, steps=3)), out, resume=True, log=lambda s: None)
    assert t.step == 1


def test_load_checkpoint_refuses_damaged_parts(tmp_path, run_dir):
    ck = tmp_path / "ck"
    shutil.copytree(latest_checkpoint(run_dir / "checkpoints"), ck)
    _truncate("renorm.safetensors")(ck)
    with pytest.raises(CheckpointError, match="renorm.safetensors is not a readable safetensors file"):
        load_checkpoint(ck)
    with pytest.raises(CheckpointError, match="has no missing.safetensors"):
        load_checkpoint(ck, ["missing"])
    (ck / "state.json").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(CheckpointError, match="state.json is not valid JSON"):
        load_checkpoint(ck, [])
    (ck / "state.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        load_checkpoint(ck, [])


# ------------------------------------------------------------------ the command line
def run_cli(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *, contains=(), debug=False):
    assert rc != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("flowmo") and ": error: " in lines[-1], err
    if debug:
        assert "Traceback (most recent call last)" in err
    else:
        assert len(lines) == 1 and "Traceback" not in err, err
    for c in contains:
        assert c in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("img") / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p)
    return p


@pytest.mark.parametrize("debug", [False, True])
def test_cli_truncated_model_folder(tmp_path, good, weights_bytes, image_file, capsys, debug):
    d = folder(tmp_path, good, weights=weights_bytes[:1000])
    argv = (["--debug"] if debug else []) + ["reconstruct", "--model", d, "--input", image_file,
                                             "--output", tmp_path / "out", "--steps", "1"]
    rc, _, err = run_cli(argv, capsys)
    assert rc == 2
    assert_one_line_error(rc, err, contains=("model.safetensors is not a readable safetensors file",), debug=debug)


def test_cli_config_missing_a_field(tmp_path, good, image_file, capsys):
    cfg = json.loads((good / CONFIG).read_text())
    del cfg["code_length"]
    d = folder(tmp_path, good, config=json.dumps(cfg))
    rc, _, err = run_cli(["tokenize", "--model", d, "--input", image_file, "--output", tmp_path / "t.safetensors"],
                         capsys)
    assert rc == 2
    assert_one_line_error(rc, err, contains=("code_length",))


def test_cli_convert_refuses_a_malicious_pickle_without_running_it(tmp_path, capsys):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.pth"
    torch.save({"model_ema_state_dict": Payload(marker)}, p)
    rc, _, err = run_cli(["convert", "--checkpoint", p, "--output", tmp_path / "out"], capsys)
    assert rc == 2
    assert_one_line_error(rc, err, contains=("weights_only",))
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_cli_convert_refuses_a_bit_flipped_checkpoint(tmp_path, release_pth, capsys):
    data = release_pth.read_bytes()
    p = tmp_path / "flipped.pth"
    p.write_bytes(flip(data, len(data) // 2, 0))
    rc, _, err = run_cli(["convert", "--checkpoint", p, "--output", tmp_path / "out"], capsys)
    assert_one_line_error(rc, err, contains=("is damaged",))


def test_cli_train_resume_from_a_damaged_checkpoint(tmp_path, run_dir, images_folder, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    _truncate("model.safetensors")(latest_checkpoint(out / "checkpoints"))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(train_config(images_folder, steps=3)))
    rc, _, err = run_cli(["train", "--config", cfg, "--out", out, "--resume"], capsys)
    assert rc == 2
    assert_one_line_error(rc, err, contains=("ckpt-00000002", "model.safetensors is not a readable"))
    rc, _, err = run_cli(["--debug", "train", "--config", cfg, "--out", out, "--resume"], capsys)
    assert_one_line_error(rc, err, debug=True)


def test_cli_damaged_token_file(tmp_path, good, capsys):
    p = tmp_path / "tokens.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    rc, _, err = run_cli(["detokenize", "--model", good, "--tokens", p, "--output", tmp_path / "out"], capsys)
    assert rc == 2
    assert_one_line_error(rc, err, contains=("is not a readable safetensors file",))
