"""The streaming evaluator: per-image values against direct metric calls, FID and LPIPS
properties, unavailable metrics, codebook statistics, evaluate_model.

Networks here are randomly initialised and given explicitly (pretrained=False): these tests
check the evaluator's plumbing and aggregation, not the values of published metrics.
"""

import hashlib
import math

import numpy as np
import pytest
import torch
from torch import nn

import flowmo
from flowmo.metrics import Evaluator, codebook_statistics, evaluate_model, image_noise
from flowmo.metrics import codebook as codebook_mod
from flowmo.metrics.feature_stats import feature_statistics
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.pixel import psnr, ssim
from flowmo.metrics.eight_bit import to_uint8
from flowmo.nets import lpips_alex, lpips_vgg
from flowmo.nets.alexnet import AlexNet
from flowmo.nets.lpips import LPIPS
from flowmo.nets.weight_specs import WEIGHT_SPECS
from flowmo.data.photos import held_out_photos


@pytest.fixture(autouse=True)
def _no_weight_files(tmp_path_factory, monkeypatch):
    """No real weight file of this machine is ever seen: empty hub cache, no $FLOWMO_WEIGHTS_DIR,
    no lpips package."""
    from flowmo.nets import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(weights, "_lpips_package_dir", lambda: None)


class SmallFeatures(nn.Module):
    """A small random feature network (B, 3, H, W) -> (B, 12): FID plumbing without the cost
    of a 2048x2048 matrix square root."""

    def __init__(self, dim=12):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.conv = nn.Conv2d(3, dim, 5, stride=2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.2)
            self.conv.bias.zero_()

    def forward(self, x):
        return torch.tanh(self.conv(x)).mean(dim=(2, 3)) + torch.relu(self.conv(x)).amax(dim=(2, 3))


def _photos(n=10, size=32):
    x = held_out_photos(size)[:n]
    g = torch.Generator().manual_seed(3)
    r = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    return x, r


def _random_lpips():
    torch.manual_seed(0)
    return {"vgg": lpips_vgg(pretrained=False), "alex": lpips_alex(pretrained=False)}


def write_random_alex_files(folder):
    """Random AlexNet trunk + LPIPS-Alex heads under the standard names (test files only)."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    torch.save(AlexNet(include_classifier=False).state_dict(), folder / WEIGHT_SPECS["alexnet"].filename)
    torch.save(LPIPS("alex").heads().state_dict(), folder / WEIGHT_SPECS["lpips_alex_heads"].filename)
    return folder


# ------------------------------------------------------------------------------------ aggregation
def test_per_image_values_equal_direct_metric_calls():
    x, r = _photos()
    nets = _random_lpips()
    ev = Evaluator(lpips_nets=nets, fid=False)
    ev.update(x[:4], r[:4], ids=[10, 11, 12, 13])
    ev.update(x[4:], r[4:], ids=list(range(4, 10)))
    got = ev.per_image()
    order = [10, 11, 12, 13] + list(range(4, 10))
    perm = np.argsort(order)
    assert got["id"].tolist() == sorted(order)
    np.testing.assert_array_equal(got["psnr"], psnr(x, r).numpy()[perm])
    np.testing.assert_array_equal(got["ssim"], ssim(x, r).numpy()[perm])
    q = (lambda t: to_uint8(t).float() / 127.5 - 1)
    for head, net in nets.items():
        direct = torch.cat([net(q(x[:4]), q(r[:4])), net(q(x[4:]), q(r[4:]))]).double().numpy()
        np.testing.assert_allclose(got[f"lpips_{head}"], direct[perm], rtol=1e-6, atol=1e-9)
    mse = ((to_uint8(x).double() - to_uint8(r).double()) ** 2).flatten(1).mean(1).numpy()
    np.testing.assert_array_equal(got["mse"], mse[perm])

    res = ev.compute()
    assert res["n_images"] == 10
    assert res["psnr"] == pytest.approx(float(psnr(x, r).mean()), abs=1e-12)
    assert res["ssim"] == pytest.approx(float(ssim(x, r).mean()), abs=1e-12)
    assert res["lpips_vgg"] == pytest.approx(float(got["lpips_vgg"].mean()), rel=1e-12)
    assert res["networks"]["lpips_vgg"]["source"].startswith("explicit")
    assert "rfid" not in res and res["codebook"] is None and res["seconds_per_image"] is None
    # the release's batches of 5: PSNR of the pooled MSE of images (0..4), (5..9) in id order
    m = got["mse"]
    want = np.mean([10 * math.log10(255**2 / m[:5].mean()), 10 * math.log10(255**2 / m[5:].mean())])
    assert res["psnr_batches_of_5"] == pytest.approx(want, abs=1e-12)


def test_exact_reconstructions_are_counted_and_capped():
    x, _ = _photos(4)
    ev = Evaluator(lpips=(), fid=False)
    ev.update(x, x)
    res = ev.compute()
    cap = 10 * math.log10(255**2 * 3 * 32 * 32)
    assert res["psnr_exact_images"] == 4 and res["psnr"] == pytest.approx(cap)
    assert res["ssim"] == pytest.approx(1.0)
    assert np.isinf(ev.per_image()["psnr"]).all()


def test_ids_must_be_unique_and_input_checked():
    x, r = _photos(4)
    ev = Evaluator(lpips=(), fid=False)
    ev.update(x[:2], r[:2], ids=[0, 1])
    ev.update(x[2:], r[2:], ids=[1, 2])
    with pytest.raises(ValueError, match="unique"):
        ev.compute()
    with pytest.raises(ValueError, match="shape"):
        ev.update(x, r[:2])
    with pytest.raises(ValueError, match="ids"):
        ev.update(x, r, ids=[0, 1])
    with pytest.raises(ValueError, match="no images"):
        Evaluator(lpips=(), fid=False).compute()


def test_best_and_worst_examples_by_psnr():
    x, _ = _photos(6)
    noise = torch.stack([torch.full_like(x[0], 0.02 * (i + 1)) for i in range(6)])
    r = (x + noise).clamp(-1, 1)  # error grows with the index
    ev = Evaluator(lpips=(), fid=False, keep_examples=2)
    for s in (0, 3):
        ev.update(x[s:s + 3], r[s:s + 3])
    ex = ev.examples()
    assert ex["ranked_by"] == "psnr"
    assert [e["id"] for e in ex["best"]] == [0, 1]
    assert [e["id"] for e in ex["worst"]] == [5, 4]
    assert torch.equal(ex["worst"][0]["original"], to_uint8(x[5]))
    assert torch.equal(ex["worst"][0]["reconstruction"], to_uint8(r[5]))


def test_examples_ranked_by_lpips_when_available():
    x, r = _photos(4)
    ev = Evaluator(lpips_nets={"alex": _random_lpips()["alex"]}, fid=False, keep_examples=1)
    ev.update(x, r)
    vals = ev.per_image()["lpips_alex"]
    ex = ev.examples()
    assert ex["ranked_by"] == "lpips_alex"
    assert ex["best"][0]["id"] == int(np.argmin(vals)) and ex["worst"][0]["id"] == int(np.argmax(vals))


# ------------------------------------------------------------------------------------ FID
def test_fid_of_a_set_against_itself_is_zero():
    x, _ = _photos(10, 48)
    x = torch.cat([x, x.flip(-1), x.flip(-2)])  # 30 images, 12 features: non-singular covariance
    ev = Evaluator(lpips=(), inception=SmallFeatures())
    ev.update(x[:16], x[:16])
    ev.update(x[16:], x[16:])
    res = ev.compute()
    assert abs(res["rfid"]) < 1e-8
    assert "rfid_note" in res  # fewer than 2048 images is flagged


def test_fid_equals_frechet_distance_of_the_features():
    x, r = _photos(10, 48)
    x, r = torch.cat([x, x.flip(-1)]), torch.cat([r, r.flip(-1)])
    net = SmallFeatures()
    ev = Evaluator(lpips=(), inception=net)
    for s in range(0, 20, 7):
        ev.update(x[s:s + 7], r[s:s + 7])
    q = (lambda t: to_uint8(t).float() / 127.5 - 1)
    with torch.no_grad():
        mu1, s1 = feature_statistics(net(q(x)))
        mu2, s2 = feature_statistics(net(q(r)))
    want = frechet_distance(mu1, s1, mu2, s2)
    assert want > 1e-3
    assert ev.compute()["rfid"] == pytest.approx(want, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------ LPIPS
def test_lpips_zero_on_identical_symmetric_positive_otherwise():
    x, r = _photos(4)
    nets = _random_lpips()
    same, ab, ba = (Evaluator(lpips_nets=nets, fid=False) for _ in range(3))
    same.update(x, x)
    ab.update(x, r)
    ba.update(r, x)
    for head in ("vgg", "alex"):
        k = f"lpips_{head}"
        assert np.all(same.per_image()[k] == 0)
        np.testing.assert_allclose(ab.per_image()[k], ba.per_image()[k], rtol=1e-6)
        assert np.all(ab.per_image()[k] > 0)


# ------------------------------------------------------------------------------------ weights
def test_absent_weights_are_reported_unavailable_with_file_names():
    x, r = _photos(2)
    ev = Evaluator()
    assert ev.nets == {}
    ev.update(x, r)
    res = ev.compute()
    assert res["lpips_vgg"]["available"] is False
    assert res["lpips_vgg"]["missing"] == ["vgg16-397923af.pth", "vgg.pth"]
    assert res["lpips_alex"]["missing"] == ["alexnet-owt-7be5be79.pth", "alex.pth"]
    assert res["rfid"]["missing"] == ["pt_inception-2015-12-05-6726825d.pth"]
    assert "FLOWMO_WEIGHTS_DIR" in res["rfid"]["how"] and "https://" in res["rfid"]["how"]
    assert isinstance(res["psnr"], float) and isinstance(res["ssim"], float)
    assert ev.weight_files() == []


def test_weights_from_a_folder_partial_and_hashed(tmp_path):
    folder = write_random_alex_files(tmp_path / "w")
    ev = Evaluator(weights_dir=folder)  # alex present; vgg and inception absent
    assert set(ev.nets) == {"lpips_alex"}
    assert ev.unavailable["lpips_vgg"]["missing"] == ["vgg16-397923af.pth", "vgg.pth"]
    assert str(folder) in ev.unavailable["rfid"]["how"]
    x, r = _photos(3)
    ev.update(x, r)
    q = (lambda t: to_uint8(t).float() / 127.5 - 1)
    direct = lpips_alex(weights_path=folder)(q(x), q(r)).double().numpy()
    np.testing.assert_allclose(ev.per_image()["lpips_alex"], direct, rtol=1e-6)
    files = {f["file"]: f for f in ev.weight_files()}
    assert set(files) == {"alexnet-owt-7be5be79.pth", "alex.pth"}
    for name, f in files.items():
        assert f["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    assert files["alexnet-owt-7be5be79.pth"]["name_hash_ok"] is False  # random file, not the published one
    assert files["alex.pth"]["name_hash_ok"] is None
    with pytest.raises(FileNotFoundError):
        Evaluator(weights_dir=tmp_path / "nope")


# ------------------------------------------------------------------------------------ codebook
def test_codebook_statistics_known_sets():
    s = codebook_statistics(np.full(8, 5), 8)
    assert s["usage"] == 1.0 and s["entropy_bits"] == pytest.approx(3.0) and s["perplexity"] == pytest.approx(8.0)
    s = codebook_statistics(np.array([10, 0, 0, 0]), 4)
    assert s["usage"] == 0.25 and s["entropy_bits"] == 0.0 and s["perplexity"] == 1.0
    s = codebook_statistics(np.array([1, 1, 0, 0]), 4)
    assert s["usage"] == 0.5 and s["entropy_bits"] == pytest.approx(1.0) and s["perplexity"] == pytest.approx(2.0)


@pytest.mark.parametrize("dense_limit", [2**20, 4])
def test_codebook_usage_per_group(monkeypatch, dense_limit):
    monkeypatch.setattr(codebook_mod, "DENSE_CODEBOOK_LIMIT", dense_limit)
    x, r = _photos(4)
    k = 16
    # group 0: every code equally often; group 1: always code 3
    tokens = torch.stack([torch.arange(4 * 8).reshape(4, 8) % k, torch.full((4, 8), 3)], dim=-1)
    ev = Evaluator(lpips=(), fid=False, codebook_size=k, bits_per_pixel=0.5)
    ev.update(x[:2], r[:2], tokens=tokens[:2], decoder_calls=4, seconds=2.0)
    ev.update(x[2:], r[2:], tokens=tokens[2:], decoder_calls=6, seconds=1.0)
    res = ev.compute()
    cb = res["codebook"]
    assert (cb["groups"], cb["tokens_per_image"], cb["codebook_size"]) == (2, 8, k)
    g0, g1 = cb["per_group"]
    assert g0["usage"] == 1.0 and g0["entropy_bits"] == pytest.approx(4.0) and g0["perplexity"] == pytest.approx(16)
    assert g1["usage"] == 1 / 16 and g1["entropy_bits"] == 0.0 and g1["perplexity"] == 1.0
    assert cb["entropy_bits"] == pytest.approx(2.0) and cb["max_entropy_bits"] == 4.0
    assert res["bits_per_pixel"] == 0.5
    assert res["decoder_calls_per_image"] == 5.0 and res["seconds_per_image"] == 0.75


def test_codebook_input_errors():
    x, r = _photos(2)
    ev = Evaluator(lpips=(), fid=False)
    with pytest.raises(ValueError, match="codebook size"):
        ev.update(x, r, tokens=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        ev.update(x, r, tokens=torch.full((2, 4), 4), codebook=4)
    with pytest.raises(TypeError):
        ev.update(x, r, tokens=torch.zeros(2, 4), codebook=4)
    ev.update(x, r, tokens=torch.zeros(2, 4, dtype=torch.long), codebook=4)
    with pytest.raises(ValueError, match="layout"):
        ev.update(x, r, tokens=torch.zeros(2, 5, dtype=torch.long), codebook=4)


def test_tokens_fn_gives_tokens():
    x, r = _photos(2)
    ev = Evaluator(lpips=(), fid=False, codebook_size=2,
                   tokens_fn=lambda im: (im.flatten(1)[:, :6] > 0).long())
    ev.update(x, r)
    assert ev.compute()["codebook"]["tokens_per_image"] == 6


# ------------------------------------------------------------------------------------ models
def test_image_noise_depends_on_seed_and_id_only():
    a = image_noise(3, [5, 9], (3, 4, 4))
    b = image_noise(3, [9], (3, 4, 4))
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(image_noise(4, [9], (3, 4, 4)), b)


def test_evaluate_model_on_a_tiny_flowmo():
    torch.manual_seed(0)
    model = flowmo.build(flowmo.flowmo_tiny()).eval()
    x = held_out_photos(32)[:4]
    sampler = {"steps": 2}
    res = evaluate_model(model, x, sampler=sampler, seed=1, batch_size=3, lpips=(), fid=False, progress=False)
    assert res["n_images"] == 4
    assert res["bits_per_pixel"] == model.spec.bits_per_pixel
    cb = res["codebook"]
    assert (cb["codebook_size"], cb["groups"], cb["tokens_per_image"]) == (512, 2, 16)
    with torch.no_grad():
        code = model.quantize(model.encode(x)).values
        out = model.decode(code, noise=image_noise(1, range(4), (3, 32, 32)), sampler=sampler)
    assert res["decoder_calls_per_image"] == out.decoder_calls
    assert res["seconds_per_image"] > 0
    assert res["psnr"] == pytest.approx(float(psnr(x, out.images).mean()), abs=1e-3)
    # limit, and an iterable of (images, ids) pairs
    res2 = evaluate_model(model, [(x[:2], [0, 1]), (x[2:], [2, 3])], sampler=sampler, seed=1, limit=3,
                          lpips=(), fid=False, progress=False)
    assert res2["n_images"] == 3


def test_evaluate_model_with_any_callable():
    x, r = _photos(4)
    table = {float(a.sum()): b for a, b in zip(x, r)}
    fn = (lambda im: torch.stack([table[float(a.sum())] for a in im]))
    res = evaluate_model(fn, x, batch_size=2, lpips=(), fid=False, progress=False,
                         tokens_fn=lambda im: torch.zeros(im.shape[0], 3, dtype=torch.long), codebook_size=2)
    assert res["psnr"] == pytest.approx(float(psnr(x, r).mean()), abs=1e-12)
    assert res["codebook"]["per_group"][0]["codes_used"] == 1
    assert res["decoder_calls_per_image"] is None and res["bits_per_pixel"] is None


def test_random_inception_plugs_in_with_2048_features():
    """The FID InceptionV3 (random here, explicitly) feeds 2048-d features; the 2048x2048 square
    root itself is left out (tens of seconds on two CPU cores)."""
    from flowmo.nets import inception_fid

    torch.manual_seed(0)
    x, r = _photos(3)
    ev = Evaluator(lpips=(), inception=inception_fid(pretrained=False))
    ev.update(x, r)
    assert {k: (s.count, s.dim) for k, s in ev._acc.feats.items()} == {"real": (3, 2048), "fake": (3, 2048)}
