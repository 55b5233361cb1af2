"""The small demo classifier (examples.fashion.classifier): it learns a separable synthetic problem,
is deterministic given its generator, saves/loads identically, and refuses bad input."""

import json

import numpy as np
import pytest
import torch

from examples.fashion.classifier import (
    SmallClassifier,
    classifier_frechet,
    conditional_accuracy,
    load_classifier,
    train_classifier,
)
from flowmo.metrics.feature_stats import feature_statistics
from flowmo.metrics.frechet import frechet_distance


def synthetic(n_per_class: int, seed: int, size: int = 16):
    """Three classes of uint8 images: a bright horizontal bar, a bright vertical bar, a bright
    centre square, each at a random position/brightness over noise; linearly separable by eye."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label in range(3):
        for _ in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size))
            v = int(rng.integers(180, 256))
            o = int(rng.integers(2, size - 4))
            if label == 0:
                img[o:o + 2, :] = v
            elif label == 1:
                img[:, o:o + 2] = v
            else:
                c = size // 2
                img[c - 3:c + 3, c - 3:c + 3] = v
            images.append(img)
            labels.append(label)
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


@pytest.fixture(scope="module")
def trained():
    x, y = synthetic(40, seed=0)
    model = train_classifier(x, y, epochs=4, batch_size=16, lr=3e-3, generator=torch.Generator().manual_seed(1),
                             channels=(8, 16), feature_dim=32)
    return model, x, y


def test_learns_separable_problem(trained):
    model, _, _ = trained
    xt, yt = synthetic(30, seed=1)  # held-out draws
    acc = model.accuracy(xt, yt)
    assert acc >= 0.9, acc  # chance is 1/3
    assert model.training_record["final_epoch_train_accuracy"] > 0.8
    assert conditional_accuracy(model, xt, yt) == acc
    # requesting the wrong classes: mostly not assigned
    assert conditional_accuracy(model, xt, (yt + 1) % 3) <= 1 - acc


def test_deterministic_given_generator():
    x, y = synthetic(10, seed=2)
    kw = dict(epochs=1, batch_size=8, channels=(4, 8), feature_dim=16)
    a = train_classifier(x, y, generator=torch.Generator().manual_seed(5), **kw)
    b = train_classifier(x, y, generator=torch.Generator().manual_seed(5), **kw)
    c = train_classifier(x, y, generator=torch.Generator().manual_seed(6), **kw)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    assert torch.equal(train_classifier(x, y, generator=5, **kw).fc2.weight, a.fc2.weight)  # int seed


def test_save_load_identical(trained, tmp_path):
    model, x, _ = trained
    model.save(tmp_path / "clf")
    meta = json.loads((tmp_path / "clf" / "classifier.json").read_text())
    assert meta["format"] == "flowmo-classifier" and meta["config"]["channels"] == [8, 16]
    assert meta["training"]["epochs"] == 4
    loaded = load_classifier(tmp_path / "clf")
    assert torch.equal(loaded.logits(x), model.logits(x))
    assert torch.equal(loaded.predict(x), model.predict(x))
    assert torch.equal(loaded.features(x), model.features(x))
    assert SmallClassifier.load(tmp_path / "clf").config == model.config


def test_load_refuses_bad_folders(trained, tmp_path):
    model, _, _ = trained
    with pytest.raises(FileNotFoundError, match="classifier.json"):
        load_classifier(tmp_path / "nothing")
    model.save(tmp_path / "c")
    cfg = tmp_path / "c" / "classifier.json"
    meta = json.loads(cfg.read_text())
    meta["config"]["feature_dim"] = 33
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not match"):
        load_classifier(tmp_path / "c")
    meta["format"] = "something-else"
    cfg.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="not a flowmo-classifier"):
        load_classifier(tmp_path / "c")
    cfg.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_classifier(tmp_path / "c")


def test_input_conventions_agree(trained):
    model, x, _ = trained
    u8 = model.logits(x)
    f = torch.from_numpy(x).float() / 127.5 - 1  # float [-1, 1]
    torch.testing.assert_close(model.logits(f), u8)
    torch.testing.assert_close(model.logits(f[:, None]), u8)
    torch.testing.assert_close(model.logits(f[:, None].expand(-1, 3, -1, -1)), u8, rtol=1e-5, atol=1e-5)  # grey RGB
    torch.testing.assert_close(model.logits(torch.from_numpy(x)[:, None]), u8)
    # values beyond [-1, 1] are clamped
    torch.testing.assert_close(model.logits(f * 3), model.logits((f * 3).clamp(-1, 1)))


def test_features_shape_and_frechet(trained):
    model, x, _ = trained
    feats = model.features(x, batch_size=7)
    assert feats.shape == (120, 32) and feats.dtype == torch.float32
    torch.testing.assert_close(feats, model.features(x))
    assert classifier_frechet(model, x[::2], x[::2]) == 0.0
    mu_a, s_a = feature_statistics(feats[:60].double().numpy())
    mu_b, s_b = feature_statistics(feats[60:].double().numpy())
    assert classifier_frechet(model, x[:60], x[60:]) == pytest.approx(frechet_distance(mu_a, s_a, mu_b, s_b), rel=1e-6)
    assert classifier_frechet(model, x[:60], x[60:]) > 0


def test_bad_input(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="this classifier takes 16x16"):
        model.predict(np.zeros((2, 28, 28), dtype=np.uint8))
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 2, 16, 16), dtype=np.uint8))
    with pytest.raises(TypeError, match="uint8 .* or floating point"):
        model.predict(np.zeros((2, 16, 16), dtype=np.int32))
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        model.predict([[0]])
    with pytest.raises(ValueError, match="NaN"):
        model.predict(torch.full((1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.2"):
        model.accuracy(x, y + 5)
    with pytest.raises(TypeError, match="labels must be integers"):
        model.accuracy(x, y.astype(float))
    with pytest.raises(ValueError, match="labels has 3 entries"):
        model.accuracy(x, y[:3])
    with pytest.raises(ValueError, match="images_a needs at least 2"):
        classifier_frechet(model, x[:1], x)
    with pytest.raises(TypeError, match="SmallClassifier"):
        conditional_accuracy(object(), x, y)
    with pytest.raises(ValueError, match="labels has 2 entries"):
        train_classifier(x[:3], y[:2])
    with pytest.raises(ValueError, match="epochs"):
        train_classifier(x, y, epochs=0)
    with pytest.raises(ValueError, match="lr"):
        train_classifier(x, y, lr=-1.0)
    with pytest.raises(ValueError, match="square"):
        train_classifier(np.zeros((2, 16, 12), dtype=np.uint8), np.array([0, 1]))
    with pytest.raises(ValueError, match="multiple of 4"):
        train_classifier(np.zeros((2, 18, 18), dtype=np.uint8), np.array([0, 1]))
    with pytest.raises(ValueError, match="single class"):
        train_classifier(x[:2], np.zeros(2, dtype=np.int64))
    with pytest.raises(TypeError, match="generator"):
        train_classifier(x, y, generator="seed")
