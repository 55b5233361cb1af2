"""Tests for flowmo.data.folders: image folders (incl. corrupt files) and built-in photos."""

import io
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from flowmo.data.photos import (
    BUILTIN_PHOTO_NAMES,
    DEFAULT_HOLDOUT,
    BuiltinPhotos,
    available_photos,
    held_out_photos,
    load_photo,
)
from flowmo.data.folders import ImageFolderDataset


def _photo(h, w, seed):
    rng = np.random.default_rng(seed)
    # Smooth gradient + noise so crops at different positions differ.
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 20, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "b" / "deep").mkdir(parents=True)
    (root / "a").mkdir()
    (root / ".hidden").mkdir()
    Image.fromarray(_photo(40, 60, 0)).save(root / "a" / "one.png")
    Image.fromarray(_photo(50, 30, 1)).save(root / "a" / "two.JPG", quality=95)
    Image.fromarray(_photo(33, 33, 2)).save(root / "b" / "three.jpeg")
    Image.fromarray(_photo(64, 80, 3)).convert("L").save(root / "b" / "deep" / "four.png")
    Image.fromarray(_photo(20, 90, 4)).convert("RGBA").save(root / "zz_rgba.png")
    Image.fromarray(_photo(30, 30, 5)).save(root / ".hidden" / "skip.png")
    Image.fromarray(_photo(30, 30, 5)).save(root / "._resource.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_folder_lists_recursively_sorted(folder):
    ds = ImageFolderDataset(folder, 16, train=False)
    rel = [p.relative_to(folder).as_posix() for p in ds.files]
    assert rel == ["a/one.png", "a/two.JPG", "b/deep/four.png", "b/three.jpeg", "zz_rgba.png"]
    assert len(ds) == 5
    only_png = ImageFolderDataset(folder, 16, extensions=(".png",))
    assert len(only_png) == 3


@pytest.mark.parametrize("train", [True, False])
def test_folder_shapes_and_range(folder, train):
    ds = ImageFolderDataset(folder, 24, train=train, hflip=True)
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 24, 24)
        assert x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
    assert ds.skipped == 0


def test_folder_eval_is_centre_crop(tmp_path):
    arr = _photo(32, 48, 9)  # short side already 32: no resize, only a crop
    Image.fromarray(arr).save(tmp_path / "x.png")
    x = ImageFolderDataset(tmp_path, 32, train=False)[0]
    expected = torch.from_numpy(arr[:, 8:40].copy()).permute(2, 0, 1).float() / 127.5 - 1
    assert torch.equal(x, expected)


def test_folder_train_crops_deterministic(folder):
    a = ImageFolderDataset(folder, 16, train=True, seed=3)
    b = ImageFolderDataset(folder, 16, train=True, seed=3)
    c = ImageFolderDataset(folder, 16, train=True, seed=4)
    idx = 0  # a/one.png: 40x60 -> 16x24, 9 horizontal crop positions
    assert torch.equal(a[idx], b[idx])
    # Order of access does not matter.
    later = [b[i] for i in reversed(range(len(b)))][::-1]
    assert all(torch.equal(a[i], later[i]) for i in range(len(a)))
    # Different seeds / epochs give different crops somewhere.
    assert any(not torch.equal(a[i], c[i]) for i in range(len(a)))
    first = [a[i] for i in range(len(a))]
    a.set_epoch(1)
    second = [a[i] for i in range(len(a))]
    assert any(not torch.equal(x, y) for x, y in zip(first, second))
    a.set_epoch(0)
    assert all(torch.equal(x, a[i]) for i, x in enumerate(first))


def test_folder_works_in_dataloader_workers(folder):
    ds = ImageFolderDataset(folder, 16, seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    batch = next(iter(loader))
    assert torch.equal(batch, torch.stack([ds[i] for i in range(5)]))


def test_folder_corrupt_files_skipped_and_counted(folder):
    good = io.BytesIO()
    Image.fromarray(_photo(64, 64, 7)).save(good, format="JPEG", quality=95)
    data = good.getvalue()
    (folder / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "a" / "random.png").write_bytes(np.random.default_rng(0).bytes(500))
    (folder / "a" / "empty.webp").write_bytes(b"")

    ds = ImageFolderDataset(folder, 16, seed=0)
    names = [p.name for p in ds.files]
    assert len(ds) == 8
    out = [ds[i] for i in range(len(ds))]
    assert all(x.shape == (3, 16, 16) for x in out)
    assert ds.skipped == 3
    assert {p.name for p in ds.bad_paths} == {"truncated.jpg", "random.png", "empty.webp"}
    # A corrupt index still yields an image (the next readable file).
    assert ds[names.index("empty.webp")].shape == (3, 16, 16)
    # Repeated passes do not double count.
    _ = [ds[i] for i in range(len(ds))]
    assert ds.skipped == 3

    fresh = ImageFolderDataset(folder, 16, seed=0)
    bad = fresh.scan_corrupt()
    assert sorted(p.name for p in bad) == ["empty.webp", "random.png", "truncated.jpg"]
    assert fresh.skipped == 3 and len(fresh) == 5
    assert all(fresh[i].shape == (3, 16, 16) for i in range(len(fresh)))

    keep = ImageFolderDataset(folder, 16, seed=0)
    assert len(keep.scan_corrupt(drop=False)) == 3 and len(keep) == 8


def test_folder_substitution_is_next_readable_file(tmp_path):
    Image.fromarray(_photo(20, 20, 0)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    Image.fromarray(_photo(20, 20, 1)).save(tmp_path / "c.png")
    ds = ImageFolderDataset(tmp_path, 20, train=False)
    assert torch.equal(ds[1], ds[2])
    assert ds.skipped == 1


def test_folder_all_corrupt(tmp_path):
    (tmp_path / "x.png").write_bytes(b"nope")
    ds = ImageFolderDataset(tmp_path, 8)
    with pytest.raises(RuntimeError, match="no readable"):
        ds[0]
    with pytest.raises(ValueError, match="unreadable"):
        ImageFolderDataset(tmp_path, 8).scan_corrupt()


def test_folder_empty_and_missing(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "readme.txt").write_text("x")
    with pytest.raises(ValueError) as err:
        ImageFolderDataset(tmp_path, 8)
    assert str(tmp_path) in str(err.value) and ".png" in str(err.value) and ".jpg" in str(err.value)
    missing = tmp_path / "does_not_exist"
    with pytest.raises(FileNotFoundError, match="does_not_exist"):
        ImageFolderDataset(missing, 8)
    with pytest.raises(ValueError, match="not a directory"):
        ImageFolderDataset(tmp_path / "sub" / "readme.txt", 8)
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(tmp_path, 0)


# --------------------------------------------------------------------------
# built-in photos
# --------------------------------------------------------------------------

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def photos():
    return BuiltinPhotos(32, length=40, seed=0)


def test_builtin_available_sources():
    names = available_photos()
    assert set(names) <= set(BUILTIN_PHOTO_NAMES)
    for n in ("astronaut", "chelsea", "coffee", "rocket", "stereo_motorcycle"):
        assert n in names
    for n in names:
        arr = load_photo(n)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
        assert min(arr.shape[:2]) >= 256
    with pytest.raises(ValueError, match="unknown"):
        load_photo("camera")


def test_builtin_items(photos):
    xs = torch.stack([photos[i] for i in range(len(photos))])
    assert xs.shape == (40, 3, 32, 32) and xs.dtype == torch.float32
    assert xs.min() >= -1 and xs.max() <= 1
    # Distinct crops.
    flat = xs.flatten(1)
    dists = torch.cdist(flat, flat) + torch.eye(40) * 1e9
    assert dists.min() > 1e-3
    assert not set(photos.photo_names) & set(DEFAULT_HOLDOUT)


def test_builtin_deterministic(photos):
    other = BuiltinPhotos(32, length=40, seed=0)
    assert all(torch.equal(photos[i], other[i]) for i in (0, 7, 39, 13))
    # Survives pickling (DataLoader workers with spawn).
    clone = pickle.loads(pickle.dumps(other))
    assert torch.equal(clone[5], photos[5])
    seeded = BuiltinPhotos(32, length=40, seed=1)
    assert not torch.equal(seeded[3], photos[3])
    other.set_epoch(2)
    assert not torch.equal(other[3], photos[3])
    other.set_epoch(0)
    assert torch.equal(other[3], photos[3])
    ev = BuiltinPhotos(32, train=False, length=8)
    first = ev[4]
    ev.set_epoch(5)
    assert torch.equal(ev[4], first)


def test_builtin_crops_from_reduced_photos_match_full_size_resizes(photos):
    """Training crops are resized from the photo halved k times (cached): within 1/255 on
    average of resizing the same crop of the full-size photo (the reference computed here with
    PIL directly), the same item for the same draws, and the same items after pickling."""
    import flowmo.data.photos as ph

    for i in range(12):
        name = photos.photo_names[i % len(photos.photo_names)]
        full = photos._image(name)
        w, h = full.size
        g = ph._generator(photos.seed, photos.epoch, i)
        lo, hi = photos.scale
        side = max(1, min(min(w, h), round((lo + (hi - lo) * ph._uniform(g)) * min(w, h))))
        top, left = ph._randint(0, h - side, g), ph._randint(0, w - side, g)
        img = full.resize((32, 32), Image.BICUBIC, box=(left, top, left + side, top + side))
        if ph._uniform(g) < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ref = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 127.5 - 1
        assert (photos[i] - ref).abs().mean() * 127.5 < 1.0
    again = pickle.loads(pickle.dumps(photos))
    assert all(torch.equal(photos[i], again[i]) for i in range(12))


def test_held_out_disjoint_and_fixed():
    held = held_out_photos(32)
    avail = [n for n in DEFAULT_HOLDOUT if n in available_photos()]
    assert held.shape == (5 * len(avail), 3, 32, 32) and held.dtype == torch.float32
    assert held.min() >= -1 and held.max() <= 1
    assert torch.equal(held, held_out_photos(32))
    # First crop of the first held-out photo is its centred full short-side square.
    arr = load_photo(avail[0])
    h, w = arr.shape[:2]
    s = min(h, w)
    square = Image.fromarray(np.ascontiguousarray(arr[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]))
    ref = np.asarray(square.resize((32, 32), Image.Resampling.BICUBIC))
    ref = torch.from_numpy(ref.copy()).permute(2, 0, 1).float() / 127.5 - 1
    # PIL's resize(box=...) may read pixels just outside the box, so allow a small difference.
    assert (held[0] - ref).abs().mean() < 0.01

    # A custom holdout is removed from training and is what the held-out set shows.
    ds = BuiltinPhotos(16, length=4, holdout=("astronaut",))
    assert "astronaut" not in ds.photo_names and "chelsea" in ds.photo_names
    assert held_out_photos(16, holdout=("astronaut",)).shape == (5, 3, 16, 16)


def test_builtin_bad_arguments():
    with pytest.raises(ValueError, match="unknown"):
        BuiltinPhotos(16, holdout=("camera",))
    with pytest.raises(ValueError, match="scale"):
        BuiltinPhotos(16, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="length"):
        BuiltinPhotos(16, length=0)
    with pytest.raises(ImportError, match="pip install scikit-image"):
        BuiltinPhotos(16, holdout=BUILTIN_PHOTO_NAMES)
