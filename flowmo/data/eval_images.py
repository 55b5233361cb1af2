"""The images ``flowmo eval`` measures: the held-out built-in photos or an image folder (read as
the standard loader or as the release's evaluation loader reads it), each image with a global id
(its index in sorted order), and a folder's images in batches for one rank."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

__all__ = ["EvalImages", "open_images", "release_image_folder", "RELEASE_CROP"]


class _Items(torch.utils.data.Dataset):
    """(image, index, readable) for the given indices of an ImageFolderDataset; a substitute
    returned for an unreadable file is flagged, so it is dropped rather than counted twice."""

    def __init__(self, ds: Any, indices: Sequence[int]):
        self.ds, self.indices = ds, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        img = self.ds[i]
        ok = _item_name(self.ds, i) not in self.ds.bad_paths
        return img, i, ok


def _item_name(ds: Any, i: int) -> Any:
    """How a dataset's :attr:`bad_paths` names item ``i``: a folder's path, a shard item's
    ``"<shard>/<member>"``."""
    from flowmo.data.shards import TarShardDataset

    return ds.name(i) if isinstance(ds, TarShardDataset) else ds.files[i]


def folder_batches(ds: Any, indices: Sequence[int], batch_size: int, workers: int, skipped: list):
    """``(images, ids)`` batches of the folder ``ds``'s images ``indices`` (loaded by ``workers``
    processes); the paths of unreadable files are appended to ``skipped`` instead."""
    loader = torch.utils.data.DataLoader(_Items(ds, indices), batch_size=batch_size, shuffle=False,
                                         num_workers=workers)
    for images, ids, ok in loader:
        for i in ids[~ok].tolist():
            skipped.append(str(_item_name(ds, i)))
        if bool(ok.any()):
            yield images[ok], ids[ok]


def release_image_folder(root: Any, size: int) -> Any:
    """An ImageFolderDataset (``root``: folder, searched as by ``ImageFolderDataset``; ``size``:
    positive int) whose items, float32 (3, size, size) tensors in [-1, 1], are made as the
    release's evaluation loader makes them
    (``flowmo/data.py`` of the release: ``T.Resize(size)``, ``T.CenterCrop(size)`` on the PIL image,
    then ``(np.array(image) / 127.5 - 1.0).astype(np.float32)``), which is, for a PIL image:

    * the short side resized to ``size`` and the long side to ``int(size * long / short)``
      (truncated), PIL BILINEAR (torchvision's default interpolation; PIL antialiases when
      shrinking);
    * the crop offsets ``int(round((H - size) / 2.0))`` and ``int(round((W - size) / 2.0))``
      (torchvision's center_crop; Python's round, half to even);
    * float32 of ``u / 127.5 - 1`` computed in float64.

    Files are listed and decoded as by the standard loader (EXIF orientation applied,
    transparency on white; the release only calls ``.convert("RGB")``, which matters only for
    files with an EXIF orientation tag or transparency, and for 16/32-bit grey files, which
    the release's conversion clips to white: here they stay float, ``2 v - 1`` after the same
    resize and crop, with ``v`` in [0, 1] as :func:`flowmo.data.images.decode_image` gives it). Raises as ``ImageFolderDataset``
    (``FileNotFoundError`` / ``ValueError``) for a missing or empty folder or a bad size."""
    import numpy as np
    from PIL import Image

    from flowmo.data.folders import ImageFolderDataset

    class _ReleaseImageFolder(ImageFolderDataset):
        def _transform(self, img: Image.Image, index: int) -> torch.Tensor:
            s = self.image_size
            w, h = img.size
            short, long = (w, h) if w <= h else (h, w)
            new_long = int(s * long / short)
            img = img.resize((s, new_long) if w <= h else (new_long, s), Image.Resampling.BILINEAR)
            w, h = img.size
            top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
            img = img.crop((left, top, left + s, top + s))
            if img.mode == "F":  # 16/32-bit grey sources keep their precision (the release's
                # .convert("RGB") would clip them to white): 2 v - 1, the grey band on R, G, B
                grey = (np.asarray(img, dtype=np.float64).clip(0.0, 1.0) * 2.0 - 1.0).astype(np.float32)
                return torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous()
            arr = np.asarray(img, dtype=np.uint8)
            x = (arr / 127.5 - 1.0).astype(np.float32)
            return torch.from_numpy(x).permute(2, 0, 1).contiguous()

    return _ReleaseImageFolder(root, size, train=False)


RELEASE_CROP = ("RGB (EXIF orientation applied, transparency on white), as the release's loader: short side "
                "resized to {s} and long side to int({s} * long / short) with PIL bilinear (torchvision "
                "Resize), centre crop {s}x{s} at offsets int(round((H - {s}) / 2)), int(round((W - {s}) / 2)) "
                "(torchvision CenterCrop), float32(u / 127.5 - 1) computed in float64")


def _builtin_names() -> list[str]:
    from flowmo.data.photos import DEFAULT_HOLDOUT, available_photos

    parts = ("full", "top_left", "top_right", "bottom_left", "bottom_right")
    return [f"{n}/{p}" for n in available_photos(DEFAULT_HOLDOUT) for p in parts]

@dataclass
class EvalImages:
    """The images of one ``flowmo eval`` run: ``names[i]`` names image ``i`` (``photo/part`` or the
    path relative to the folder); ``info`` and ``crop`` are metrics.json's ``data`` and ``crop``
    records; ``images`` holds the built-in photos ((N, 3, S, S) float32 in [-1, 1]) or ``folder``
    the folder's ImageFolderDataset."""

    names: list
    info: dict
    crop: dict
    images: Optional[torch.Tensor] = None
    folder: Any = None


def open_images(data: str, size: int, protocol: str) -> EvalImages:
    """The images ``--data`` names (``"builtin"``, an existing folder, or tar shards: a ``.tar``
    file or brace pattern, :class:`flowmo.data.shards.TarShardDataset`, items in shard order) at
    ``size`` pixels, read as ``protocol`` (``"standard"`` or ``"release"``, folders only) reads a
    folder. Raises as ``ImageFolderDataset`` / ``TarShardDataset`` (``FileNotFoundError`` /
    ``ValueError``) for missing or empty data."""
    if data == "builtin":
        from flowmo.data.photos import held_out_photos

        names = _builtin_names()
        info: dict[str, Any] = {
            "source": "builtin",
            "description": "the held-out built-in photos (scikit-image chelsea and coffee): per photo the centred "
                           "square of the full short side, then half-size squares centred on the four quadrant "
                           "centres, each resized to the image size (PIL bicubic, antialiased)",
            "images_available": len(names),
        }
        crop = {"image_size": size, "method": "builtin held-out crops (see data.description)"}
        return EvalImages(names, info, crop, images=held_out_photos(size))
    from flowmo.data.folders import ImageFolderDataset
    from flowmo.data.shards import TarShardDataset, is_shard_pattern

    if is_shard_pattern(data):
        if protocol == "release":
            raise ValueError("--protocol release reads an image folder as the release's loader does; tar shards are "
                             "read with the standard crop (--protocol standard)")
        shard_ds = TarShardDataset(data, size, train=False)
        names = [shard_ds.name(i) for i in range(len(shard_ds))]
        info = {"source": "shards", "shards": [str(p) for p in shard_ds.shards], "images_available": len(names)}
        crop = {"image_size": size,
                "method": f"RGB (EXIF orientation applied, transparency on white), short side resized to {size} "
                          f"(PIL bicubic, antialiased), centre crop {size}x{size}"}
        return EvalImages(names, info, crop, folder=shard_ds)
    if protocol == "release":
        folder_ds = release_image_folder(Path(data).expanduser(), size)
    else:
        folder_ds = ImageFolderDataset(Path(data).expanduser(), size, train=False)
    names = [p.relative_to(folder_ds.root).as_posix() for p in folder_ds.files]
    info = {"source": "folder", "folder": str(folder_ds.root), "images_available": len(names),
            "extensions": list(folder_ds.extensions)}
    crop = {"image_size": size,
            "method": f"RGB (EXIF orientation applied, transparency on white), short side resized to {size} "
                      f"(PIL bicubic, antialiased), centre crop {size}x{size}"}
    if protocol == "release":
        crop["method"] = RELEASE_CROP.format(s=size)
    return EvalImages(names, info, crop, folder=folder_ds)
