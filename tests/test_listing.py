"""One folder listing for every reader: flowmo reconstruct/tokenize (flowmo.cli.io.list_images), flowmo
eval and the trainer (ImageFolderDataset) and token sets (class_folder_images) list a folder's
images as the same files in the same order, symbolic links included, so image i of a folder is
the same file (and, for a seed, decodes from the same noise) everywhere."""

import os

import numpy as np
import pytest
from PIL import Image

from flowmo.data.folders import ImageFolderDataset
from flowmo.data.listing import list_folder_images
from flowmo.data.token_shards import class_folder_images
from flowmo.cli.io import list_images


def _png(path, v):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(path)


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    _png(root / "sub" / "x.png", 10)
    _png(root / "sub-y.png", 20)
    _png(root / "real" / "r.png", 30)
    _png(root / ".hidden" / "h.png", 40)
    _png(tmp_path / "ext" / "e.png", 50)
    os.symlink(root / "real" / "r.png", root / "dup.png")        # a second name for a listed file
    os.symlink(root / "real", root / "link")                     # a second path to a listed folder
    os.symlink(tmp_path / "ext", root / "aaa")                   # a folder only reachable by a link
    os.symlink(root / "missing.png", root / "broken.png")        # a broken link
    os.symlink(root, root / "real" / "loop")                     # a link loop
    return root


def test_the_listing_rules(tree):
    files, bad = list_folder_images(tree)
    # sorted by relative name; dup.png (sorts before real/r.png) names r.png once; link/ is real/ again
    assert [rel for rel, _ in files] == ["aaa/e.png", "dup.png", "sub-y.png", "sub/x.png"]
    assert [(rel, why) for rel, _, why in bad] == [("broken.png", "a broken symbolic link")]
    with pytest.raises(NotADirectoryError):
        list_folder_images(tree / "sub-y.png")


def test_reconstruct_eval_and_training_list_the_same_files_in_the_same_order(tree):
    from_cli = [f.path for f in list_images(tree)]
    dataset = ImageFolderDataset(tree, 8, train=False)
    assert from_cli == list(dataset.files)
    assert [f.name for f in list_images(tree)] == [rel for rel, _ in list_folder_images(tree)[0]]


def test_class_folders_use_the_same_listing(tree, tmp_path):
    root = tmp_path / "classes"
    root.mkdir()
    os.symlink(tree, root / "a")  # a class folder that is a link
    _png(root / "b" / "1.png", 0)
    classes, items = class_folder_images(root)
    assert classes == ["a", "b"]
    assert [p for p, y in items if y == 0] == [p for _, p in list_folder_images(root / "a")[0]]
