"""Weight resolution, safe reading and strict application (no real weights needed)."""

import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from flowmo.nets import weight_specs
from flowmo.nets import weights as W
from flowmo.nets.inception import inception_fid
from flowmo.nets.lpips import lpips_alex, lpips_vgg
from flowmo.nets.resnet import resnet50
from flowmo.nets.alexnet import alexnet
from flowmo.nets.vgg import vgg16
from flowmo.nets.weights import MissingWeightsError
from flowmo.nets.weight_io import WeightsFormatError

REAL_LPIPS_PACKAGE_DIR = W._lpips_package_dir  # captured before the autouse fixture patches it

torch.manual_seed(0)


# ------------------------------------------------------------------ helpers / fixtures
def _randomise_bn_stats(net):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return net


@pytest.fixture(scope="module")
def resnet_pair(tmp_path_factory):
    """A random ResNet-50 (non-trivial BN stats) and its state dict saved to disk."""
    net = _randomise_bn_stats(resnet50(pretrained=False))
    d = tmp_path_factory.mktemp("resnet")
    path = d / "resnet50-0676ba61.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def lpips_alex_files(tmp_path_factory):
    """A random LPIPS-Alex and its two files (trunk without classifier, heads)."""
    model = lpips_alex(pretrained=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        for k in range(5):
            getattr(model, f"lin{k}").model[1].weight.abs_()
    d = tmp_path_factory.mktemp("lpips_alex")
    torch.save(model.net.state_dict(), d / "alexnet-owt-7be5be79.pth")
    torch.save(model.heads().state_dict(), d / "alex.pth")
    return model, d


def _images(b=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, h, w, generator=g) * 2 - 1


# ---------------------------------------------------------------------- required_files
def test_required_files():
    assert weight_specs.required_files("vgg16") == ["vgg16-397923af.pth"]
    assert weight_specs.required_files("alexnet") == ["alexnet-owt-7be5be79.pth"]
    assert weight_specs.required_files("resnet50") == ["resnet50-0676ba61.pth"]
    assert weight_specs.required_files("inception_fid") == ["pt_inception-2015-12-05-6726825d.pth"]
    assert weight_specs.required_files("lpips_vgg") == ["vgg16-397923af.pth", "vgg.pth"]
    assert weight_specs.required_files("lpips_alex") == ["alexnet-owt-7be5be79.pth", "alex.pth"]
    assert weight_specs.WEIGHT_SPECS["resnet50"].names == (
        "resnet50-0676ba61.pth",
        "resnet50-11ad3fa6.pth",
        "resnet50-19c8e357.pth",
    )
    with pytest.raises(KeyError, match="unknown network"):
        weight_specs.required_files("vgg19")


# ---------------------------------------------------------------------- missing files
@pytest.mark.parametrize(
    "ctor, filename, url_part",
    [
        (vgg16, "vgg16-397923af.pth", "download.pytorch.org/models/vgg16-397923af.pth"),
        (alexnet, "alexnet-owt-7be5be79.pth", "download.pytorch.org/models/alexnet-owt-7be5be79.pth"),
        (resnet50, "resnet50-0676ba61.pth", "download.pytorch.org/models/resnet50-0676ba61.pth"),
        (inception_fid, "pt_inception-2015-12-05-6726825d.pth", "pytorch-fid/releases/download/fid_weights"),
        (lpips_vgg, "vgg16-397923af.pth", "vgg16-397923af.pth"),
        (lpips_alex, "alexnet-owt-7be5be79.pth", "alexnet-owt-7be5be79.pth"),
    ],
)
def test_missing_weights_error_names_file_places_and_fix(ctor, filename, url_part, tmp_path, monkeypatch):
    env_dir = tmp_path / "envdir"
    env_dir.mkdir()
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(env_dir))
    with pytest.raises(MissingWeightsError) as ei:
        ctor()
    msg = str(ei.value)
    assert isinstance(ei.value, FileNotFoundError)
    hub = Path(os.environ["TORCH_HOME"]) / "hub" / "checkpoints"
    assert filename in msg
    assert str(env_dir / filename) in msg
    assert str(hub / filename) in msg
    assert url_part in msg
    assert "FLOWMO_WEIGHTS_DIR" in msg and str(hub) in msg


def test_missing_env_var_is_reported_as_not_set():
    with pytest.raises(MissingWeightsError, match=r"\$FLOWMO_WEIGHTS_DIR \(not set\)"):
        vgg16()


def test_missing_resnet_lists_accepted_alternatives():
    with pytest.raises(MissingWeightsError) as ei:
        resnet50()
    msg = str(ei.value)
    for name in ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth", "resnet50-19c8e357.pth"):
        assert name in msg


def test_missing_lpips_heads_named_when_trunk_present(lpips_alex_files, tmp_path, monkeypatch):
    _, d = lpips_alex_files
    trunk_only = tmp_path / "trunk"
    trunk_only.mkdir()
    (trunk_only / "alexnet-owt-7be5be79.pth").write_bytes((d / "alexnet-owt-7be5be79.pth").read_bytes())
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(trunk_only))
    with pytest.raises(MissingWeightsError) as ei:
        lpips_alex()
    msg = str(ei.value)
    assert "'alex.pth'" in msg
    assert "PerceptualSimilarity" in msg and "weights/v0.1/alex.pth" in msg
    assert "lpips package (not installed)" in msg


def test_explicit_path_that_does_not_exist_is_an_error_not_a_fallback(resnet_pair, tmp_path, monkeypatch):
    # a good file IS available through the env var, but the explicit path wins and is absent
    _, path = resnet_pair
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(path.parent))
    bogus = tmp_path / "nope" / "resnet50-0676ba61.pth"
    with pytest.raises(MissingWeightsError, match="nope"):
        resnet50(weights_path=bogus)


def test_pretrained_false_with_a_path_is_refused(tmp_path):
    with pytest.raises(ValueError):
        resnet50(weights_path=tmp_path / "x.pth", pretrained=False)


# ---------------------------------------------------------------------- round trips
def test_round_trip_explicit_path(resnet_pair):
    net, path = resnet_pair
    loaded = resnet50(weights_path=path)
    x = _images()
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


def test_round_trip_env_var_and_alternative_name(resnet_pair, tmp_path, monkeypatch):
    net, path = resnet_pair
    d = tmp_path / "w"
    d.mkdir()
    shutil.copyfile(path, d / "resnet50-19c8e357.pth")  # accepted alternative name
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(d))
    loaded = resnet50()
    x = _images(seed=3)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_old_checkpoint_without_bn_counters_loads(resnet_pair, tmp_path):
    net, _ = resnet_pair
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    p = tmp_path / "resnet50-19c8e357.pth"
    torch.save(sd, p)
    loaded = resnet50(weights_path=tmp_path)  # a folder: searched for all accepted names
    x = _images(seed=4)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_round_trip_fake_torch_home(tmp_path, monkeypatch):
    net = _randomise_bn_stats(inception_fid(pretrained=False))
    home = tmp_path / "th"
    ckpt = home / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    torch.save(net.state_dict(), ckpt / "pt_inception-2015-12-05-6726825d.pth")
    monkeypatch.setenv("TORCH_HOME", str(home))
    loaded = inception_fid()
    x = _images(b=1, h=32, w=32)
    torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_round_trip_lpips_env_dir(lpips_alex_files, monkeypatch):
    model, d = lpips_alex_files
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(d))
    loaded = lpips_alex()
    x, y = _images(seed=1), _images(seed=2)
    torch.testing.assert_close(loaded(x, y), model(x, y), rtol=0, atol=0)


def test_round_trip_lpips_explicit_paths(lpips_alex_files):
    model, d = lpips_alex_files
    loaded = lpips_alex(weights_path=d / "alex.pth", trunk_weights_path=d / "alexnet-owt-7be5be79.pth")
    also = lpips_alex(weights_path=d)  # one folder with both files
    x, y = _images(seed=5), _images(seed=6)
    want = model(x, y)
    torch.testing.assert_close(loaded(x, y), want, rtol=0, atol=0)
    torch.testing.assert_close(also(x, y), want, rtol=0, atol=0)


def test_lpips_heads_from_installed_lpips_package(lpips_alex_files, tmp_path, monkeypatch):
    model, d = lpips_alex_files
    pkg = tmp_path / "site" / "lpips"
    (pkg / "weights" / "v0.1").mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('must only be located, never imported')\n")
    (pkg / "weights" / "v0.1" / "alex.pth").write_bytes((d / "alex.pth").read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(W, "_lpips_package_dir", REAL_LPIPS_PACKAGE_DIR)
    assert W.resolve_weights("lpips_alex_heads") == pkg / "weights" / "v0.1" / "alex.pth"
    loaded = lpips_alex(trunk_weights_path=d / "alexnet-owt-7be5be79.pth")
    x, y = _images(seed=7), _images(seed=8)
    torch.testing.assert_close(loaded(x, y), model(x, y), rtol=0, atol=0)


def test_search_order_explicit_then_env_then_hub(tmp_path, monkeypatch):
    name = "vgg.pth"
    env_dir, hub_home = tmp_path / "env", tmp_path / "home"
    hub = hub_home / "hub" / "checkpoints"
    for d in (env_dir, hub):
        d.mkdir(parents=True)
        (d / name).write_bytes(b"x")
    explicit = tmp_path / "mine.pth"
    explicit.write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(hub_home))
    assert W.resolve_weights("lpips_vgg_heads") == hub / name
    monkeypatch.setenv("FLOWMO_WEIGHTS_DIR", str(env_dir))
    assert W.resolve_weights("lpips_vgg_heads") == env_dir / name
    assert W.resolve_weights("lpips_vgg_heads", explicit) == explicit
    assert W.resolve_weights("lpips_vgg_heads", str(explicit)) == explicit


def test_loading_uses_torch_load_weights_only_on_cpu(lpips_alex_files, monkeypatch):
    _, d = lpips_alex_files
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    lpips_alex(weights_path=d)
    assert len(calls) == 2
    for kw in calls:
        assert kw.get("weights_only") is True
        assert kw.get("map_location") == "cpu"


# ---------------------------------------------------------------------- refused files
def _heads_sd(shapes=(64, 192, 384, 256, 256)):
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate(shapes)}


def _lpips_alex_with_heads(lpips_alex_files, tmp_path, heads_file_bytes=None, heads_obj=None):
    _, d = lpips_alex_files
    p = tmp_path / "alex.pth"
    if heads_obj is not None:
        torch.save(heads_obj, p)
    else:
        p.write_bytes(heads_file_bytes)
    return lpips_alex(weights_path=p, trunk_weights_path=d)


def test_wrong_keys_refused_listing_them(resnet_pair, tmp_path):
    net, _ = resnet_pair
    sd = dict(net.state_dict())
    sd["layer9.0.conv1.weight"] = sd.pop("layer1.0.conv1.weight")
    del sd["fc.bias"]
    p = tmp_path / "bad.pth"
    torch.save(sd, p)
    with pytest.raises(WeightsFormatError) as ei:
        resnet50(weights_path=p)
    msg = str(ei.value)
    assert "missing keys (2)" in msg and "layer1.0.conv1.weight" in msg and "fc.bias" in msg
    assert "unexpected keys (1)" in msg and "layer9.0.conv1.weight" in msg
    assert str(p) in msg


def test_wrong_shapes_refused_listing_them(lpips_alex_files, tmp_path):
    with pytest.raises(WeightsFormatError) as ei:
        _lpips_alex_with_heads(lpips_alex_files, tmp_path, heads_obj=_heads_sd((64, 192, 384, 256, 128)))
    msg = str(ei.value)
    assert "shape mismatches (1)" in msg
    assert "lin4.model.1.weight: file (1, 128, 1, 1) vs network (1, 256, 1, 1)" in msg


def test_vgg_heads_for_alex_trunk_refused(lpips_alex_files, tmp_path):
    with pytest.raises(WeightsFormatError, match="shape mismatches"):
        _lpips_alex_with_heads(lpips_alex_files, tmp_path, heads_obj=_heads_sd((64, 128, 256, 512, 512)))


@pytest.mark.parametrize(
    "obj, match",
    [
        ([torch.zeros(1)], "expected a state dict"),
        (torch.zeros(3), "expected a state dict"),
        ({"lin0.model.1.weight": 1.0}, "tensor value"),
        ({0: torch.zeros(1)}, "string key"),
    ],
    ids=["list", "tensor", "non-tensor-value", "non-string-key"],
)
def test_non_state_dict_refused(lpips_alex_files, tmp_path, obj, match):
    with pytest.raises(WeightsFormatError, match=match):
        _lpips_alex_with_heads(lpips_alex_files, tmp_path, heads_obj=obj)


def test_garbage_file_refused(lpips_alex_files, tmp_path):
    with pytest.raises(WeightsFormatError, match="Refused"):
        _lpips_alex_with_heads(lpips_alex_files, tmp_path, heads_file_bytes=b"this is not a checkpoint\n")


class _Payload:
    """Unpickling this would create ``marker`` (a harmless stand-in for real malice)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("fmt", ["torch_zip", "raw_pickle"])
def test_malicious_pickle_refused_and_not_executed(lpips_alex_files, tmp_path, fmt):
    marker = tmp_path / "PWNED"
    payload = {"lin0.model.1.weight": _Payload(marker)}
    evil = tmp_path / "evil"
    evil.mkdir()
    p = evil / "alex.pth"
    if fmt == "torch_zip":
        torch.save(payload, p)
    else:
        with open(p, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    # sanity: an unrestricted unpickler would have run the payload
    assert not marker.exists()
    with pytest.raises(WeightsFormatError, match="weights_only") as ei:
        W.read_state_dict(p)
    assert "Nothing in it was executed" in str(ei.value) and str(p) in str(ei.value)
    with pytest.raises(WeightsFormatError):
        _lpips_alex_with_heads(lpips_alex_files, tmp_path / "evil", heads_file_bytes=p.read_bytes())
    with pytest.raises(WeightsFormatError):
        vgg16(weights_path=p)
    assert not marker.exists()


def test_payload_really_would_execute_without_weights_only(tmp_path):
    """Guards the test above: the payload is live under a plain unpickler."""
    marker = tmp_path / "PWNED"
    data = pickle.dumps({"k": _Payload(marker)})
    pickle.loads(data)
    assert marker.exists()


# ---------------------------------------------------------------------- VGG trunk files
@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """Random VGG16 features plus a (deliberately tiny, fake) classifier entry, the way a
    full torchvision file carries classifier.* keys next to features.*."""
    net = vgg16(pretrained=False, include_classifier=False)
    sd = dict(net.state_dict())
    sd["classifier.6.bias"] = torch.zeros(3)
    d = tmp_path_factory.mktemp("vgg")
    torch.save(sd, d / "vgg16-397923af.pth")
    return net, d


def test_vgg_features_only_ignores_classifier_keys(vgg_features_file):
    net, d = vgg_features_file
    loaded = vgg16(weights_path=d / "vgg16-397923af.pth", include_classifier=False)
    x = _images(1, 32, 32)
    for a, b in zip(loaded.lpips_features(x), net.lpips_features(x)):
        assert torch.equal(a, b)


def test_full_vgg_refuses_a_file_without_the_full_classifier(vgg_features_file):
    _, d = vgg_features_file
    with pytest.raises(WeightsFormatError) as ei:
        vgg16(weights_path=d)
    msg = str(ei.value)
    assert "classifier.0.weight" in msg and "classifier.6.weight" in msg
    assert "shape mismatches (1)" in msg and "classifier.6.bias: file (3,) vs network (1000,)" in msg


def test_lpips_vgg_round_trip_folder(vgg_features_file, tmp_path):
    net, d = vgg_features_file
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) for k, c in enumerate((64, 128, 256, 512, 512))}
    torch.save(heads, tmp_path / "vgg.pth")
    model = lpips_vgg(weights_path=tmp_path / "vgg.pth", trunk_weights_path=d)
    for k, v in heads.items():
        assert torch.equal(model.heads().state_dict()[k], v)
    assert torch.equal(model.net.features[0].weight, net.features[0].weight)
    x, y = _images(1, 32, 32, 1), _images(1, 32, 32, 2)
    assert model(x, y) > 0 and model(x, x) == 0
