"""Fashion-MNIST loading (examples.fashion.data) from small IDX files written here with
struct/numpy, the folder lookup and its error, the class-folder writer; one test on the real
files of Debian's dataset-fashion-mnist, skipped when they are absent."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import examples.fashion.data as fm
from examples.fashion.data import (
    CLASS_NAMES,
    FashionMNISTNotFound,
    class_folder_name,
    fashion_mnist_folder,
    load_fashion_mnist,
    write_class_folders,
)


def idx_bytes(arr: np.ndarray) -> bytes:
    """uint8 IDX bytes: 00 00 08 <ndim>, big-endian uint32 sizes, the bytes."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape) + arr.tobytes()


def make_folder(folder: Path, n_train=12, n_test=5, gz=("train-images-idx3-ubyte",), seed=0,
                images_shape=(28, 28), labels_max=9, n_labels=None):
    """The four files with random contents; names in ``gz`` are written gzip-compressed."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data = {}
    for split, (img_name, lab_name), n in (("train", fm.FILES["train"], n_train), ("test", fm.FILES["test"], n_test)):
        images = rng.integers(0, 256, size=(n, *images_shape), dtype=np.uint8)
        labels = rng.integers(0, labels_max + 1, size=n if n_labels is None else n_labels, dtype=np.uint8)
        for name, arr in ((img_name, images), (lab_name, labels)):
            raw = idx_bytes(arr)
            if name in gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(raw))
            else:
                (folder / name).write_bytes(raw)
        data[split] = (images, labels)
    return data


def test_load_small_folder(tmp_path):
    data = make_folder(tmp_path / "fm")
    for split in ("train", "test"):
        images, labels = load_fashion_mnist(tmp_path / "fm", split)
        assert images.dtype == np.uint8 and images.shape == data[split][0].shape
        assert labels.dtype == np.int64 and labels.shape == (data[split][0].shape[0],)
        assert np.array_equal(images, data[split][0])
        assert np.array_equal(labels, data[split][1].astype(np.int64))


def test_lookup_order_argument_env_debian(tmp_path, monkeypatch):
    a = make_folder(tmp_path / "a", seed=1)
    b = make_folder(tmp_path / "b", seed=2)
    monkeypatch.setenv(fm.ENV_VAR, str(tmp_path / "b"))
    assert np.array_equal(load_fashion_mnist(tmp_path / "a", "test")[0], a["test"][0])  # argument wins
    assert np.array_equal(load_fashion_mnist(split="test")[0], b["test"][0])  # then the variable
    monkeypatch.delenv(fm.ENV_VAR)
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", tmp_path / "a")
    assert fashion_mnist_folder() == tmp_path / "a"  # then the Debian folder


def test_absent_files_error_names_package_and_files(tmp_path, monkeypatch):
    monkeypatch.delenv(fm.ENV_VAR, raising=False)
    monkeypatch.setattr(fm, "DEBIAN_FOLDER", tmp_path / "nowhere")
    with pytest.raises(FashionMNISTNotFound) as info:
        load_fashion_mnist()
    msg = str(info.value)
    assert "dataset-fashion-mnist" in msg and "FLOWMO_FASHION_MNIST" in msg
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert name in msg
    assert isinstance(info.value, FileNotFoundError)
    # a folder with only the training files: the test split names what is missing
    make_folder(tmp_path / "partial")
    for name in fm.FILES["test"]:
        (tmp_path / "partial" / name).unlink()
    load_fashion_mnist(tmp_path / "partial", "train")
    with pytest.raises(FashionMNISTNotFound, match="lacks t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte"):
        load_fashion_mnist(tmp_path / "partial", "test")


def test_wrong_contents_refused(tmp_path):
    make_folder(tmp_path / "shape", images_shape=(28, 27))
    with pytest.raises(ValueError, match=r"\(N, 28, 28\)"):
        load_fashion_mnist(tmp_path / "shape")
    make_folder(tmp_path / "count", n_labels=3)
    with pytest.raises(ValueError, match="holds 3 labels but"):
        load_fashion_mnist(tmp_path / "count")
    make_folder(tmp_path / "label", labels_max=10, n_train=200)
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        load_fashion_mnist(tmp_path / "label")
    make_folder(tmp_path / "trunc")
    p = tmp_path / "trunc" / "t10k-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(tmp_path / "trunc", "test")
    with pytest.raises(ValueError, match="split must be"):
        load_fashion_mnist(tmp_path / "trunc", "validation")


@pytest.mark.skipif(not all(fm._find_file(fm.DEBIAN_FOLDER, n) for p in fm.FILES.values() for n in p),
                    reason="Debian's dataset-fashion-mnist is not installed (/usr/share/datasets/fashion-mnist)")
def test_real_debian_files():
    train_x, train_y = load_fashion_mnist(fm.DEBIAN_FOLDER, "train")
    test_x, test_y = load_fashion_mnist(fm.DEBIAN_FOLDER, "test")
    assert train_x.shape == (60000, 28, 28) and test_x.shape == (10000, 28, 28)
    # Xiao et al. 2017: 7,000 images per class, 6,000 train / 1,000 test
    assert np.bincount(train_y).tolist() == [6000] * 10
    assert np.bincount(test_y).tolist() == [1000] * 10
    # the first labels, as printed in the Fashion-MNIST Keras/TF tutorials
    assert train_y[:5].tolist() == [9, 0, 0, 3, 0]
    assert test_y[:5].tolist() == [9, 2, 1, 1, 6]
    assert train_x.min() == 0 and train_x.max() == 255


# ---------------------------------------------------------------- class folders


def test_class_folder_names_sort_in_label_order():
    names = [class_folder_name(i, n) for i, n in enumerate(CLASS_NAMES)]
    assert names[0] == "00_T-shirt-top" and names[9] == "09_Ankle-boot"
    assert sorted(names) == names and len(set(names)) == 10


def test_write_class_folders_layout_pixels_and_limit(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(9, 28, 28), dtype=np.uint8)
    labels = np.array([3, 1, 3, 3, 1, 0, 3, 1, 1])
    counts = write_class_folders(tmp_path / "out", images, labels, limit_per_class=3)
    assert counts == {3: 3, 1: 3, 0: 1}
    files = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.png"))
    assert files == ["00_T-shirt-top/00005.png", "01_Trouser/00001.png", "01_Trouser/00004.png",
                     "01_Trouser/00007.png", "03_Dress/00000.png", "03_Dress/00002.png", "03_Dress/00003.png"]
    with Image.open(tmp_path / "out" / "03_Dress" / "00002.png") as im:
        assert im.mode == "RGB" and im.size == (28, 28)
        rgb = np.asarray(im)
    assert np.array_equal(rgb, np.repeat(images[2][:, :, None], 3, axis=2))
    assert not list((tmp_path / "out").glob("**/.*"))  # no temporary files left


def test_write_class_folders_pad_resize_and_grey(tmp_path):
    images = np.full((2, 28, 28), 200, dtype=np.uint8)
    images[0, 0, 0] = 7
    labels = np.array([0, 9])
    write_class_folders(tmp_path / "pad", images, labels, size=32, mode="L")
    with Image.open(tmp_path / "pad" / "00_T-shirt-top" / "00000.png") as im:
        assert im.mode == "L" and im.size == (32, 32)
        a = np.asarray(im)
    # 2 black pixels on each side, the image unchanged inside
    assert a[:2].max() == 0 and a[-2:].max() == 0 and a[:, :2].max() == 0 and a[:, -2:].max() == 0
    assert a[2, 2] == 7 and np.array_equal(a[2:30, 2:30], images[0])
    # odd margin: 28 -> 31: left/top 1, right/bottom 2
    write_class_folders(tmp_path / "odd", images[1:], labels[1:], size=31, mode="L")
    with Image.open(tmp_path / "odd" / "09_Ankle-boot" / "00000.png") as im:
        a = np.asarray(im)
    assert a[1:29, 1:29].min() == 200 and a[0].max() == 0 and a[29:].max() == 0
    write_class_folders(tmp_path / "big", images, labels, size=64, fit="resize")
    with Image.open(tmp_path / "big" / "09_Ankle-boot" / "00001.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
        assert np.asarray(im).min() == 200  # a constant image stays constant under bicubic resizing


def test_write_class_folders_bad_input(tmp_path):
    x = np.zeros((2, 28, 28), dtype=np.uint8)
    y = np.array([0, 1])
    with pytest.raises(TypeError, match="images must be a uint8"):
        write_class_folders(tmp_path, x.astype(np.float32), y)
    with pytest.raises(TypeError, match="labels must be an integer"):
        write_class_folders(tmp_path, x, y.astype(float))
    with pytest.raises(ValueError, match="labels has 1 entries"):
        write_class_folders(tmp_path, x, y[:1])
    with pytest.raises(ValueError, match=r"labels must be in 0\.\.9"):
        write_class_folders(tmp_path, x, np.array([0, 10]))
    with pytest.raises(ValueError, match="fit='pad' cannot pad"):
        write_class_folders(tmp_path, x, y, size=20)
    with pytest.raises(ValueError, match="mode must be"):
        write_class_folders(tmp_path, x, y, mode="RGBA")
    with pytest.raises(ValueError, match="fit must be"):
        write_class_folders(tmp_path, x, y, size=32, fit="crop")
    with pytest.raises(ValueError, match="limit_per_class"):
        write_class_folders(tmp_path, x, y, limit_per_class=-1)
