"""Generation metrics in flowmo eval's conventions: evaluate_generation and `flowmo eval-gen`.

No real Inception weights exist offline: a randomly initialised FIDInceptionV3's state dict is
saved under the weight file's name in a temporary folder (the numbers test the plumbing, not
ImageNet quality). Expected figures are composed independently: images read with PIL/numpy,
features from inception_features one image at a time, the distances from feature_statistics /
frechet_distance_of_features, the IS from softmax probabilities, precision/recall by brute force.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from flowmo.metrics.generation import frechet_distance_of_features, inception_features, inception_score
from flowmo.metrics.reference_stats import ReferenceStats, load_reference_stats
from flowmo.metrics.generative import evaluate_generation, measure_reference
from flowmo.nets.inception import FIDInceptionV3, inception_fid
from flowmo.nets.weight_specs import WEIGHT_SPECS

FILE = WEIGHT_SPECS["inception_fid"].filename  # pt_inception-2015-12-05-6726825d.pth


@pytest.fixture(autouse=True)
def _no_weight_files(tmp_path_factory, monkeypatch):
    from flowmo.nets import weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    monkeypatch.setattr(weights, "_lpips_package_dir", lambda: None)


def _random_weights(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    torch.save(FIDInceptionV3().state_dict(), folder / FILE)
    return folder


def _png_folder(folder, sizes, seed):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, s in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (s, s, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_gen")
    weights = _random_weights(root / "weights", 0)
    gen = _png_folder(root / "gen", [16] * 5, 1)
    ref = _png_folder(root / "ref", [16, 16, 20, 20, 20, 16], 2)  # two sizes: batches split by size
    (ref / "zz_bad.png").write_bytes(b"not an image")  # skipped and recorded, as flowmo eval does
    result = evaluate_generation(gen, ref, weights=weights, k=2, splits=2, batch_size=4)
    stats_file = result.reference_stats.save(root / "ref_stats.safetensors")
    return {"root": root, "weights": weights, "gen": gen, "ref": ref, "result": result, "stats": stats_file}


def _direct_features(net, folder):
    feats = []
    for path in sorted(folder.iterdir()):
        if path.name == "zz_bad.png":
            continue
        arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        x = torch.from_numpy(arr / 127.5 - 1.0).float().permute(2, 0, 1)[None]
        feats.append(inception_features(net, x))
    return (torch.cat([f.pool for f in feats]).double().numpy(), torch.cat([f.spatial for f in feats]).double().numpy(),
            torch.cat([f.logits for f in feats]).double().numpy())


def _brute_precision_recall(real, fake, k):
    def radii(x):
        d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself

    def inside(q, ref, r):
        d = np.sqrt(((q[:, None] - ref[None]) ** 2).sum(-1))
        return float(np.mean((d <= r[None]).any(axis=1)))

    return inside(fake, real, radii(real)), inside(real, fake, radii(fake))


def test_api_equals_the_direct_composition(setup):
    net = inception_fid(weights_path=setup["weights"] / FILE)
    g_pool, g_spatial, g_logits = _direct_features(net, setup["gen"])
    r_pool, r_spatial, _ = _direct_features(net, setup["ref"])
    m = setup["result"].metrics
    assert m["n_generated"] == 5 and m["n_reference"] == 6
    assert m["gfid"] == pytest.approx(frechet_distance_of_features(g_pool, r_pool), rel=1e-4)
    assert m["sfid"] == pytest.approx(frechet_distance_of_features(g_spatial, r_spatial), rel=1e-4)
    assert m["gfid"] > 0 and m["sfid"] > 0
    # the IS from probabilities (softmax in float64), groups [0, 2) and [2, 5) of the images in the
    # order numpy.random.RandomState(2020).permutation(5) (torch-fidelity's shuffle)
    p = np.exp(g_logits - g_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p = p[np.random.RandomState(2020).permutation(5)]
    groups = [inception_score(p[:2]).mean, inception_score(p[2:]).mean]
    assert m["inception_score"]["mean"] == pytest.approx(np.mean(groups), rel=1e-6)
    assert m["inception_score"]["std"] == pytest.approx(np.std(groups), rel=1e-3, abs=1e-9)
    assert m["inception_score"]["splits"] == 2
    prec, rec = _brute_precision_recall(r_pool, g_pool, 2)
    assert (m["precision"], m["recall"]) == (pytest.approx(prec), pytest.approx(rec))
    # the protocol names the network's file and its SHA-256, the layers, k, splits and the resize
    proto = setup["result"].protocol
    import hashlib

    f = proto["network"]["files"][0]
    assert f["file"] == FILE and f["sha256"] == hashlib.sha256((setup["weights"] / FILE).read_bytes()).hexdigest()
    assert proto["k"] == 2 and proto["splits"] == 2 and proto["splits_shuffle_seed"] == 2020
    assert "RandomState(2020).permutation(N)" in proto["conventions"]["inception_score"]
    assert "2023" in proto["feature_layers"]["sfid"] and "pool3" in proto["feature_layers"]["gfid"]
    assert "299x299" in proto["images"]["resize"] and "bilinear" in proto["images"]["resize"]
    assert proto["generated"]["images_available"] == 5 and proto["reference"]["images_available"] == 7
    assert [s.split(":")[0] for s in proto["reference"]["skipped_unreadable"]] == ["zz_bad.png"]
    json.dumps(setup["result"].to_dict())  # JSON-serialisable


def test_identical_sets_give_zero_distances_and_full_precision_recall(setup):
    x = torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(3)) * 2 - 1
    m = evaluate_generation(x, x.clone(), weights=setup["weights"], k=2).metrics
    assert m["gfid"] == pytest.approx(0.0, abs=1e-6) and m["sfid"] == pytest.approx(0.0, abs=1e-6)
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    assert m["inception_score"]["mean"] >= 1.0 and m["inception_score"]["std"] == 0.0


def test_reference_stats_round_trip_gives_identical_figures(setup):
    stats = load_reference_stats(setup["stats"])
    given = setup["result"].reference_stats
    assert torch.equal(stats.pool, given.pool) and np.array_equal(stats.spatial_sigma, given.spatial_sigma)
    assert stats.n_images == 6 and stats.record["network"]["files"][0]["file"] == FILE
    again = evaluate_generation(setup["gen"], setup["stats"], weights=setup["weights"], k=2, splits=2, batch_size=4)
    for key in ("gfid", "sfid", "inception_score", "precision", "recall", "n_generated", "n_reference"):
        assert again.metrics[key] == setup["result"].metrics[key], key
    assert again.protocol["reference"]["source"] == "reference statistics file"
    assert again.protocol["reference"]["network_check"].startswith("verified")
    # the file holds safetensors + a JSON record only
    from safetensors import safe_open

    with safe_open(str(setup["stats"]), framework="pt") as f:
        assert set(f.keys()) == {"pool", "pool_mu", "pool_sigma", "spatial_mu", "spatial_sigma"}
        assert json.loads(f.metadata()["record"])["n_images"] == 6


def test_statistics_of_other_weights_are_refused(setup, tmp_path):
    other = _random_weights(tmp_path / "other", 1)
    with pytest.raises(ValueError, match="SHA-256"):
        evaluate_generation(setup["gen"], setup["stats"], weights=other, k=2)


def test_without_weights_every_metric_is_unavailable_naming_the_file(setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for weights in (None, empty):
        res = evaluate_generation(setup["gen"], setup["ref"], weights=weights, k=2)
        for key in ("gfid", "sfid", "inception_score", "precision", "recall"):
            assert res.metrics[key]["available"] is False and res.metrics[key]["missing"] == [FILE]
            assert FILE in res.metrics[key]["how"]
        assert res.metrics["n_generated"] == 5 and res.metrics["n_reference"] == 7  # listed: nothing decoded
        assert res.reference_stats is None and not res.available()
    from flowmo.nets.weights import MissingWeightsError

    with pytest.raises(MissingWeightsError, match=FILE.replace(".", r"\.")):
        measure_reference(setup["ref"], weights=empty)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be"), ({"splits": 0}, "splits must be"), ({"batch_size": 0}, "batch_size must be"),
    ({"limit": 0}, "limit must be"), ({"k": 5}, "at least 6"), ({"splits": 6}, "splits = 6"),
])
def test_bad_arguments(setup, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate_generation(setup["gen"], setup["ref"], weights=setup["weights"], **kwargs)


def test_bad_images(setup, tmp_path):
    x = torch.zeros(4, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        evaluate_generation(x * 0 + 200.0, x, weights=setup["weights"])
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        evaluate_generation(torch.zeros(4, 1, 8, 8), x, weights=setup["weights"])
    with pytest.raises(TypeError, match="float tensor"):
        evaluate_generation(x.to(torch.uint8), x, weights=setup["weights"])
    with pytest.raises(FileNotFoundError, match="generated folder"):
        evaluate_generation(tmp_path / "nope", x, weights=setup["weights"])
    not_stats = tmp_path / "x.safetensors"
    not_stats.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        evaluate_generation(x, not_stats, weights=setup["weights"])
    with pytest.raises(ValueError, match="at least 2"):
        evaluate_generation(setup["gen"], x[:1], weights=setup["weights"], k=1)


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_metrics_json_with_the_protocol(setup, tmp_path, capsys):
    from flowmo.cli import main

    out = tmp_path / "out"
    assert main(["eval-gen", "--generated", str(setup["gen"]), "--reference", str(setup["stats"]), "--k", "2",
                 "--splits", "2", "--batch-size", "4", "--weights-dir", str(setup["weights"]),
                 "--output", str(out), "--device", "cpu"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    for key in ("gfid", "sfid", "inception_score", "precision", "recall"):
        assert res["metrics"][key] == setup["result"].metrics[key], key
    assert res["protocol"]["network"]["files"][0]["file"] == FILE and res["protocol"]["k"] == 2
    assert res["protocol"]["command"][:2] == ["flowmo", "eval-gen"]
    text = capsys.readouterr().out
    assert "gFID" in text and "precision" in text and "5 generated vs 6 reference" in text


def test_cli_without_weights_reports_unavailable(setup, tmp_path, capsys):
    from flowmo.cli import main

    out = tmp_path / "out"
    # exit status 3: nothing measured (a script must not take it for a measurement)
    assert main(["eval-gen", "--generated", str(setup["gen"]), "--reference", str(setup["ref"]), "--k", "2",
                 "--output", str(out)]) == 3
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert m["gfid"] == {"available": False, "missing": [FILE], "how": m["gfid"]["how"]}
    captured = capsys.readouterr()
    assert f"unavailable: missing {FILE}" in captured.out and "nothing measured" in captured.err


@pytest.mark.parametrize("argv, match", [
    (["--reference", "REF"], "give the generated images"),
    (["--generated", "NOPE", "--reference", "REF"], "--generated 'NOPE' is not a folder"),
    (["--generated", "GEN", "--reference", "NOPE"], "--reference 'NOPE' does not exist"),
    (["--generated", "GEN", "--generator", "GEN", "--reference", "REF"], "not both"),
    (["--generated", "GEN", "--reference", "REF", "--k", "0"], "expected a positive integer"),
    (["--generated", "GEN", "--reference", "REF", "--weights-dir", "NOPE"], "--weights-dir 'NOPE' is not a folder"),
    (["--generated", "GEN", "--reference", "STATS", "--save-reference-stats", "X"], "needs --reference to be an"),
    (["--generator", "GEN", "--reference", "REF"], "--generator needs --tokenizer"),
    (["--reference", "REF", "--save-reference-stats", "OUT"], FILE),  # nothing to measure with
])
def test_cli_bad_input_is_one_line_with_status_2(setup, tmp_path, capsys, argv, match):
    from flowmo.cli import main

    subst = {"REF": str(setup["ref"]), "GEN": str(setup["gen"]), "STATS": str(setup["stats"]),
             "OUT": str(tmp_path / "s.safetensors"), "NOPE": str(tmp_path / "nope"), "X": str(tmp_path / "x")}
    argv = [subst.get(a, a) for a in argv]
    match = match.replace("NOPE", str(tmp_path / "nope"))
    assert main(["eval-gen", *argv, "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowmo eval-gen: error:") and "\n" not in err and match in err


def test_cli_measures_the_reference_alone_and_generates_on_the_fly(setup, tmp_path):
    import argparse

    import flowmo
    from flowmo.cli import main
    from flowmo.cli.options import sampler_from_args
    from flowmo.data.token_layout import layout_for
    from flowmo.generators import MaskGiT, generate_images, load_generator

    stats = tmp_path / "s.safetensors"
    assert main(["eval-gen", "--reference", str(setup["ref"]), "--save-reference-stats", str(stats), "--limit", "4",
                 "--weights-dir", str(setup["weights"]), "--quiet"]) == 0
    saved = ReferenceStats.load(stats)
    assert saved.n_images == 4 and saved.record["source"]["limit"] == 4
    assert torch.equal(saved.pool, setup["result"].reference_stats.pool[:4])

    torch.manual_seed(0)
    tok = flowmo.build(flowmo.flowmo_tiny().replace(code_channels=4, quantizer={"group_bits": 2},
                                                    code_length=16)).eval()
    tok.save_pretrained(tmp_path / "tok")
    layout = layout_for(tok)
    torch.manual_seed(1)
    gen = MaskGiT(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=2, width=32, depth=1, heads=2,
                  mlp_ratio=2.0)
    gen.save_pretrained(tmp_path / "gen", metadata={"layout": layout.to_json(), "classes": ["a", "b"],
                                                    "tokenizer_fingerprint": tok.spec.fingerprint(),
                                                    "tokenizer_spec": tok.spec.model_dump(mode="json")})
    out = tmp_path / "out"
    assert main(["eval-gen", "--generator", str(tmp_path / "gen"), "--tokenizer", str(tmp_path / "tok"),
                 "--per-class", "2", "--steps", "2", "--decoder-steps", "2", "--seed", "4", "--reference", str(stats),
                 "--k", "1", "--weights-dir", str(setup["weights"]), "--output", str(out), "--quiet"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    assert res["protocol"]["generated"]["per_class"] == 2 and res["metrics"]["n_generated"] == 4
    sampler = sampler_from_args(tok.spec.sampler, argparse.Namespace(sampler=None, steps=2, solver=None, grid=None,
                                                                     cfg_scale=None))
    images = generate_images(load_generator(tmp_path / "gen"), tok, [0, 0, 1, 1], steps=2, seed=4, batch_size=32, sampler=sampler).images
    expected = evaluate_generation(images, saved, weights=setup["weights"], k=1).metrics
    for key in ("gfid", "sfid", "inception_score", "precision", "recall"):
        assert res["metrics"][key] == expected[key], key


def test_a_generate_folder_is_measured_by_its_record_not_its_grid(tmp_path):
    import json as _json

    import numpy as _np
    from PIL import Image as _Image

    from flowmo.metrics.generative_inputs import _Source

    out = tmp_path / "samples"
    out.mkdir()
    names = [f"0_a_{k:03d}.png" for k in range(4)]
    for n in names:
        _Image.fromarray(_np.zeros((8, 8, 3), _np.uint8)).save(out / n)
    _Image.fromarray(_np.zeros((20, 40, 3), _np.uint8)).save(out / "grid.png")
    (out / "generate.json").write_text(_json.dumps({"images": [{"file": n} for n in names], "grid": "grid.png"}))
    source = _Source(out, "generated", None, None)
    assert source.count == 4 and [rel for rel, _ in source.files] == names
    (out / "generate.json").write_text("{}")
    with pytest.raises(ValueError, match="generate.json is damaged"):
        _Source(out, "generated", None, None)
    (out / "generate.json").unlink()
    assert _Source(out, "generated", None, None).count == 5  # any other folder: every image


# ---------------------------------------------------------------- a stand-in network
@pytest.mark.parametrize("build, match", [
    (lambda: FIDInceptionV3(input_range="01"), "input_range='01'"),
    (lambda: FIDInceptionV3(num_classes=5), "num_classes=5"),
    (lambda: FIDInceptionV3().to("meta"), "meta device"),
])
def test_a_callers_inception_built_otherwise_is_refused(setup, build, match):
    """An Inception for [0, 1] inputs silently remapped [-1, 1] images to [-3, 1] (gFID 1.16
    for 0.23); another class count changed the Inception Score's classes."""
    net = build()
    for call in (lambda: evaluate_generation(setup["gen"], setup["ref"], inception=net, k=2),
                 lambda: measure_reference(setup["ref"], inception=net)):
        with pytest.raises(ValueError, match=match):
            call()


class _GreyLevelNet(FIDInceptionV3):
    """A stand-in FID network (a real FIDInceptionV3 module, so it is accepted as ``inception=``)
    with a cheap forward: pool3 holds 50 at the index of the image's class, the class being its
    mean grey level (classes ``c`` at levels ``-1 + 2 c / (C - 1)``), and ``fc.weight`` is the
    identity on those entries: the IS logits are 50 * one-hot of the class (a perfect
    classifier). pool3[1008:1200] is the spatial mean of the real ``Mixed_6d.branch1x1`` (conv,
    BatchNorm, ReLU) applied to the image area-resized to 17x17 and tiled to 768 channels, so
    gFID and sFID depend on a BatchNorm layer: batch statistics in training mode, running ones
    in eval mode."""

    def __init__(self, classes: int):
        torch.manual_seed(5)
        super().__init__()
        self.classes = classes
        with torch.no_grad():
            self.fc.weight.zero_()
            self.fc.weight[:classes, :classes] = torch.eye(classes)
            bn = self.Mixed_6d.branch1x1.bn
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        level = x.mean(dim=(1, 2, 3))
        cls = ((level + 1) / 2 * (self.classes - 1)).round().long()
        small = torch.nn.functional.interpolate(x, size=(17, 17), mode="area").repeat(1, 256, 1, 1)
        spatial = self.Mixed_6d.branch1x1(small)
        pool = torch.zeros(x.shape[0], 2048, dtype=x.dtype, device=x.device)
        pool[torch.arange(x.shape[0]), cls] = 50.0
        pool[:, 1008:1200] = spatial.mean(dim=(2, 3))
        return pool


def _class_images(classes, per_class, seed):
    """(classes * per_class, 3, 8, 8) images listed class by class, image i of class c at grey level
    -1 + 2 c / (C - 1) plus a little noise (mean kept)."""
    g = torch.Generator().manual_seed(seed)
    levels = torch.linspace(-0.9, 0.9, classes).repeat_interleave(per_class)
    noise = torch.rand(classes * per_class, 3, 8, 8, generator=g) * 0.1 - 0.05
    noise -= noise.mean(dim=(1, 2, 3), keepdim=True)
    return (levels[:, None, None, None] + noise).clamp(-1, 1)


@pytest.fixture
def grey_net():
    return _GreyLevelNet(10)


def _numpy_is(logits: np.ndarray, splits: int) -> list:
    """The IS formula in numpy: per group of consecutive rows, exp(mean KL(p(y|x) || p(y)))."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n, out = len(p), []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(axis=0)
        out.append(math.exp(float(np.mean(np.sum(part * (np.log(part) - np.log(marginal)), axis=1)))))
    return out


def _flags(module):
    return [m.training for m in module.modules()]


def _buffers(module):
    return {k: v.clone() for k, v in module.named_buffers()}


def test_images_listed_class_by_class_measured_by_a_callers_network_in_training_mode(grey_net, tmp_path):
    # one evaluate_generation call (each costs two 2048-d matrix square roots) checks both:
    # (1) the Inception Score's groups: 10 classes x 20 images listed class by class (as `flowmo
    #     generate` and `eval-gen --per-class` write them), a perfect classifier, splits = 2;
    # (2) a caller's network in training mode (one block in eval mode: a mixed state to give back)
    #     runs in eval mode: the reference is the same images in reverse order, so in batches of 64
    #     every batch differs, and only batch-independent features give gFID = sFID = 0.
    images = _class_images(10, 20, 0)
    folder = tmp_path / "by_class"
    folder.mkdir()
    for i, img in enumerate(images):
        arr = ((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        Image.fromarray(arr).save(folder / f"class{i // 20:02d}_{i % 20:03d}.png")
    decoded = torch.round((images + 1) * 127.5) / 127.5 - 1  # what the folder's files decode to
    classes = np.repeat(np.arange(10), 20)
    logits = np.zeros((200, 1008))
    logits[np.arange(200), classes] = 50.0
    expected = _numpy_is(logits[np.random.RandomState(2020).permutation(200)], 2)
    assert np.mean(expected) > 9.0 and np.mean(_numpy_is(logits, 2)) == pytest.approx(5.0, abs=1e-9)

    grey_net.train()
    grey_net.Conv2d_1a_3x3.eval()
    flags, buffers = _flags(grey_net), _buffers(grey_net)
    r = evaluate_generation(folder, decoded.flip(0), inception=grey_net, splits=2, k=1, batch_size=64)
    m = r.metrics
    assert m["inception_score"]["mean"] == pytest.approx(np.mean(expected), rel=1e-9)
    assert m["inception_score"]["std"] == pytest.approx(np.std(expected), rel=1e-6, abs=1e-9)
    assert r.protocol["splits_shuffle_seed"] == 2020
    # (one group gives the same figure for any order of the same images: tests/eval/test_generation_metrics.py)
    assert m["gfid"] == pytest.approx(0.0, abs=1e-4) and m["sfid"] == pytest.approx(0.0, abs=1e-4)
    assert m["precision"] == 1.0 and m["recall"] == 1.0
    ref = decoded[::20]
    stats_4 = measure_reference(ref, inception=grey_net, batch_size=4)
    stats_1 = measure_reference(ref, inception=grey_net, batch_size=1)
    torch.testing.assert_close(stats_4.pool, stats_1.pool, rtol=1e-5, atol=1e-6)
    frozen = _GreyLevelNet(10).eval()  # the features are the eval-mode network's
    with torch.no_grad():
        torch.testing.assert_close(stats_4.pool, frozen(ref), rtol=1e-5, atol=1e-6)
    # the caller's network is left as it was: flags, BatchNorm statistics, device
    assert _flags(grey_net) == flags
    after = _buffers(grey_net)
    assert all(torch.equal(after[k], v) for k, v in buffers.items())
    assert next(grey_net.parameters()).device == torch.device("cpu")


@pytest.mark.parametrize("bottleneck", ["lfq", "kl"])
def test_eval_gen_without_inception_weights_refuses_a_continuous_tokenizer_first_else_measures_nothing(
        tmp_path, monkeypatch, capsys, bottleneck):
    """Exit 3 (nothing measured, before generating) when the Inception weights are absent; a
    tokenizer without tokens is refused first (exit 2), so the user is not sent for weights."""
    import flowmo
    from flowmo.cli import main
    from flowmo.data.token_layout import layout_for
    from flowmo.generators import MaskGiT

    monkeypatch.delenv("FLOWMO_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    (tmp_path / "w").mkdir()
    torch.manual_seed(0)
    lfq = flowmo.build(flowmo.flowmo_tiny())
    layout = layout_for(lfq)
    gen = MaskGiT(vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=0, width=32, depth=1, heads=2,
                  mlp_ratio=2.0)
    gen.save_pretrained(tmp_path / "gen", metadata={"layout": layout.to_json(),
                                                    "tokenizer_fingerprint": lfq.spec.fingerprint(),
                                                    "tokenizer_spec": lfq.spec.model_dump(mode="json")})
    tok = lfq if bottleneck == "lfq" else flowmo.build(flowmo.flowmo_tiny().replace(quantizer={"name": "kl"}))
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "ref").mkdir()
    from PIL import Image
    Image.new("RGB", (32, 32)).save(tmp_path / "ref" / "a.png")
    rc = main(["eval-gen", "--generator", str(tmp_path / "gen"), "--tokenizer", str(tmp_path / "tok"),
               "--per-class", "1", "--reference", str(tmp_path / "ref"), "--weights-dir", str(tmp_path / "w"),
               "--output", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    if bottleneck == "kl":
        assert rc == 2 and "--tokenizer's bottleneck 'kl' is continuous: it has no tokens" in err, err
    else:
        assert rc == 3 and "nothing measured: the Inception weights are missing" in err, err
        assert not (tmp_path / "out").exists()
