"""Models by name through the Hugging Face Hub, offline: a Hub cache prepared in the client's own
layout (models--owner--name/{blobs,snapshots,refs}) with small release-format files, and
HF_HUB_OFFLINE=1; the conversion cache; a damaged download; Hub repositories of our folders."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

import flowmo
from flowmo.folders import hub, upload

huggingface_hub = pytest.importorskip("huggingface_hub", reason="the Hub tests need huggingface_hub "
                                      "(pip install 'flowmo[hub]')")
from huggingface_hub import constants as hub_constants  # noqa: E402

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_file(cache, repo_id, filename, data: bytes, commit=COMMIT, lfs=None):
    """Put ``data`` in the Hub cache at ``cache`` as ``filename`` of ``repo_id`` (main = commit),
    its blob named by its etag as the client names it: the SHA-256 for an LFS file (by default
    ``.pth`` and ``.safetensors``, as the Hub's default .gitattributes), else git's blob id."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    if lfs if lfs is not None else filename.endswith((".pth", ".safetensors")):
        sha = hashlib.sha256(data).hexdigest()
    else:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    (root / "blobs").mkdir(parents=True, exist_ok=True)
    (root / "blobs" / sha).write_bytes(data)
    snap = root / "snapshots" / commit / filename
    snap.parent.mkdir(parents=True, exist_ok=True)
    if snap.exists() or snap.is_symlink():
        snap.unlink()
    snap.symlink_to(os.path.relpath(root / "blobs" / sha, snap.parent))
    (root / "refs").mkdir(exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    return root / "blobs" / sha


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """An offline Hub cache and an empty flowmo cache; flowmo_lo's spec shrunk to tiny."""
    cache = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("FLOWMO_CACHE", str(tmp_path / "flowmo_cache"))
    monkeypatch.setitem(hub.RELEASED, "flowmo_lo", ("flowmo_lo.pth", "tiny"))
    return cache


def _release_bytes(tmp_path, seed=0):
    torch.manual_seed(seed)
    ema, raw = flowmo.build("tiny"), flowmo.build("tiny")
    path = tmp_path / f"release{seed}.pth"
    torch.save({"model_ema_state_dict": ema.state_dict(), "model_state_dict": raw.state_dict()}, path)
    return path.read_bytes(), ema


def test_a_released_name_converts_once_and_loads_the_ema_weights(tmp_path, offline, monkeypatch):
    data, ema = _release_bytes(tmp_path)
    _cache_file(offline, hub.RELEASE_REPO, "flowmo_lo.pth", data)
    model = flowmo.FlowMo.from_pretrained("flowmo_lo")
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())
    folder = next((tmp_path / "flowmo_cache" / "released").iterdir())
    assert (folder / "source.json").is_file() and (folder / "README.md").is_file()
    # a second call loads the converted folder: the .pth is not read again
    from flowmo.folders import release

    def no_read(*a, **k):
        raise AssertionError("the release file was read again")

    monkeypatch.setattr(release, "load_release_state_dict", no_read)
    # the command line takes the same names
    from flowmo.cli import main
    from PIL import Image

    Image.new("RGB", (40, 40), (200, 30, 30)).save(tmp_path / "a.png")
    assert main(["reconstruct", "--model", "flowmo_lo", "--input", str(tmp_path / "a.png"), "--output",
                 str(tmp_path / "out"), "--steps", "1", "-q"]) == 0
    assert (tmp_path / "out").is_dir()
    again = flowmo.FlowMo.from_pretrained("flowmo_lo", dtype=torch.bfloat16)
    assert again.dtype == torch.bfloat16
    assert all(torch.equal(v, ema.state_dict()[k].to(torch.bfloat16)) for k, v in again.state_dict().items())


@pytest.mark.parametrize("lfs", [True, False])
def test_a_damaged_download_is_refused_and_nothing_is_cached(tmp_path, offline, lfs):
    data, _ = _release_bytes(tmp_path)
    blob = _cache_file(offline, hub.RELEASE_REPO, "flowmo_lo.pth", data, lfs=lfs)
    blob.write_bytes(data[: len(data) // 2])  # truncated: its name (the digest of the whole) no longer fits
    with pytest.raises(ValueError, match=rf"flowmo_lo.pth .*{blob.name}\) is damaged: its "
                                         rf"{'SHA-256' if lfs else 'git blob SHA-1'} is .*delete .*{blob.name}"):
        flowmo.FlowMo.from_pretrained("flowmo_lo")
    assert not any((tmp_path / "flowmo_cache" / "released").glob("flowmo_lo-*/source.json"))


def test_offline_without_the_file_says_so(tmp_path, offline):
    with pytest.raises(FileNotFoundError, match=r"flowmo_lo.pth in the Hub repository ksarge/FlowMo.*HF_HUB_OFFLINE"):
        flowmo.FlowMo.from_pretrained("flowmo_lo")


def test_a_hub_repository_of_our_folder_loads_with_revision_and_subfolder(tmp_path, offline):
    torch.manual_seed(3)
    m = flowmo.build("tiny")
    local = m.save_pretrained(tmp_path / "folder", card={"license": "mit", "name": "user/tok"})
    for f in ("config.json", "model.safetensors", "README.md"):
        _cache_file(offline, "user/tok", f"v1/{f}", (local / f).read_bytes())
    got = flowmo.FlowMo.from_pretrained("user/tok", subfolder="v1")
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in got.state_dict().items())
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub repository id"):
        flowmo.FlowMo.from_pretrained("user/other")
    with pytest.raises(FileNotFoundError, match="is it in a subfolder"):
        flowmo.FlowMo.from_pretrained("user/tok")  # the folder is in v1/
    with pytest.raises(ValueError, match="subfolder"):
        flowmo.FlowMo.from_pretrained("user/tok", subfolder="../..")


def test_a_local_folder_wins_over_a_name(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(4)
    m = flowmo.build("tiny")
    m.save_pretrained(tmp_path / "user" / "tok")
    got = flowmo.FlowMo.from_pretrained("user/tok")  # exists locally: no Hub lookup
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in got.state_dict().items())


def test_without_huggingface_hub_the_error_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name == "huggingface_hub" or name.startswith("huggingface_hub."):
            raise ImportError("No module named 'huggingface_hub'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"flowmo\[hub\]"):
        flowmo.FlowMo.from_pretrained("flowmo_lo")


def test_push_to_hub_uploads_our_folder(tmp_path, monkeypatch):
    calls = {}

    class FakeApi:
        def __init__(self, token=None):
            calls["token"] = token

        def create_repo(self, repo_id, **kw):
            calls["create"] = (repo_id, kw)

        def upload_folder(self, *, repo_id, folder_path, path_in_repo=None, **kw):
            calls["files"] = sorted(os.listdir(folder_path))
            calls["copy"] = shutil.copytree(folder_path, tmp_path / "uploaded")
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    m = flowmo.build("tiny")
    url = upload.push_to_hub(m, "user/tok", token="t0")
    assert url.endswith("/commit/1") and calls["token"] == "t0"
    assert calls["files"] == ["README.md", "config.json", "model.safetensors"]
    assert flowmo.FlowMo.from_pretrained(tmp_path / "uploaded").spec == m.spec
    assert "from_pretrained('user/tok')" in (tmp_path / "uploaded" / "README.md").read_text()  # card names the repo
    with pytest.raises(ValueError, match="repo_id"):
        upload.push_to_hub(m, "not a repo")
    # a folder is uploaded as it is: its own card (an exported run's figures) kept
    shutil.rmtree(tmp_path / "uploaded")
    folder = m.save_pretrained(tmp_path / "mine", card={"license": "mit", "evaluation": {"eval/psnr": 12.5}})
    upload.push_to_hub(folder, "user/tok")
    assert (tmp_path / "uploaded" / "README.md").read_text() == (folder / "README.md").read_text()
    with pytest.raises(ValueError, match="card applies"):
        upload.push_to_hub(folder, "user/tok", card={"license": "mit"})


def test_flowmo_eval_takes_a_hub_name_and_raw_is_refused_for_names(tmp_path, offline):
    import json

    from PIL import Image

    from flowmo.cli.eval import main as eval_main
    from flowmo.cli.io import load_model

    m = flowmo.build("tiny")
    local = m.save_pretrained(tmp_path / "folder")
    for f in ("config.json", "model.safetensors", "README.md"):
        _cache_file(offline, "user/tok", f, (local / f).read_bytes())
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(tmp_path / "imgs" / f"{i}.png")
    assert eval_main(["--model", "user/tok", "--data", str(tmp_path / "imgs"), "--output", str(tmp_path / "ev"),
                      "--steps", "1", "--lpips", "none", "--no-fid", "--workers", "0", "--quiet"]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())
    with pytest.raises(ValueError, match="raw"):
        load_model("user/tok", weights="raw")
    with pytest.raises(ValueError, match="--raw"):
        eval_main(["--model", "user/tok", "--raw", "--data", str(tmp_path / "imgs"), "--output",
                   str(tmp_path / "ev2"), "--quiet"])


# -- every cached file flowmo has a digest for is checked before its first use (issue 22, item 5) --


def _flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # the lowest bit of the last float's lowest byte, for offset -4: a finite value
    path.write_bytes(bytes(data))


def _no_hashing(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("a cached file was hashed again")

    monkeypatch.setattr(hub, "_file_digest", fail)


def _damage_hub_file(blob, offset):
    """Change one byte of ``blob`` (keeping its size and mtime): a flipped bit at ``offset``, or
    (None) the sampler's steps 25 -> 35 in a config.json, still a valid spec."""
    size, mtime = blob.stat().st_size, blob.stat().st_mtime_ns
    if offset is None:
        blob.write_text(blob.read_text().replace('"steps": 25', '"steps": 35', 1))
    else:
        _flip(blob, offset)
    os.utime(blob, ns=(mtime, mtime))
    assert blob.stat().st_size == size


@pytest.mark.parametrize("file, offset", [("model.safetensors", -4), ("config.json", None)])
def test_a_damaged_hub_blob_is_refused_naming_the_file(tmp_path, offline, monkeypatch, file, offset):
    torch.manual_seed(5)
    m = flowmo.build("tiny")
    local = m.save_pretrained(tmp_path / "folder")
    blobs = {f: _cache_file(offline, "user/tok", f, (local / f).read_bytes())
             for f in ("config.json", "model.safetensors", "README.md")}
    assert len(blobs["config.json"].name) == 40 and len(blobs["model.safetensors"].name) == 64  # git / LFS
    blob = blobs[file]
    algo = "SHA-256" if file.endswith(".safetensors") else "git blob SHA-1"
    refused = rf"the cached {file} of the Hub repository 'user/tok' \(.*{blob.name}\) is damaged: its {algo} is " \
              rf".*delete .*{blob.name} and load again online"
    _damage_hub_file(blob, offset)
    with pytest.raises(ValueError, match=refused):
        flowmo.FlowMo.from_pretrained("user/tok")
    blob.write_bytes((local / file).read_bytes())  # intact again
    got = flowmo.FlowMo.from_pretrained("user/tok")  # checked, and the check recorded
    assert all(torch.equal(v, m.state_dict()[k]) for k, v in got.state_dict().items()) and got.spec == m.spec
    with monkeypatch.context() as mp:
        _no_hashing(mp)
        flowmo.FlowMo.from_pretrained("user/tok")  # the recorded check stands: nothing hashed
    _damage_hub_file(blob, offset)  # after the record, with the same size and mtime
    with monkeypatch.context() as mp:
        _no_hashing(mp)
        with pytest.raises(AssertionError, match="hashed again"):  # a changed file is hashed again
            flowmo.FlowMo.from_pretrained("user/tok")
    with pytest.raises(ValueError, match=refused):
        flowmo.FlowMo.from_pretrained("user/tok")


DAMAGE = {
    "flipped weight": lambda d: _flip(d / "model.safetensors", -4),
    "truncated weights": lambda d: (d / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:-100]),
    "edited config": lambda d: (d / "config.json").write_text(
        (d / "config.json").read_text().replace('"steps": 25', '"steps": 35', 1)),
    "damaged source.json": lambda d: (d / "source.json").write_text("{"),
}


def test_a_damaged_converted_folder_is_converted_again_from_the_release(tmp_path, offline, monkeypatch):
    import warnings

    from safetensors.torch import load_file

    data, ema = _release_bytes(tmp_path)
    _cache_file(offline, hub.RELEASE_REPO, "flowmo_lo.pth", data)
    flowmo.FlowMo.from_pretrained("flowmo_lo")
    folder = next((tmp_path / "flowmo_cache" / "released").iterdir())
    config = (folder / "config.json").read_text()
    names = ("config.json", "model.safetensors", "README.md")
    for damage, apply in DAMAGE.items():
        apply(folder)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert hub.released_folder("flowmo_lo") == folder, damage
        weights = load_file(str(folder / "model.safetensors"))
        assert weights.keys() == ema.state_dict().keys(), damage
        assert all(torch.equal(v, ema.state_dict()[k]) for k, v in weights.items()), damage
        assert (folder / "config.json").read_text() == config, damage
        assert any("is damaged or incomplete: converting it again" in str(w.message) for w in caught), damage
        source = json.loads((folder / "source.json").read_text())  # the rebuilt folder's record
        assert source["files"] == {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in names}, damage
        assert source["sha256"] == hashlib.sha256(data).hexdigest()
        assert [p.name for p in folder.parent.iterdir()] == [folder.name], damage  # nothing left beside it
        with monkeypatch.context() as mp:
            _no_hashing(mp)  # the check of the conversion is recorded: a later use hashes nothing
            assert hub.released_folder("flowmo_lo") == folder, damage
    model = flowmo.FlowMo.from_pretrained("flowmo_lo")
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())
