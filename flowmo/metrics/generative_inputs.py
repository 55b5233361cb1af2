"""The image sources and measurements behind :func:`flowmo.metrics.generative.evaluate_generation`:
a folder or tensor of images read in batches (the library's one folder listing and image
decoder), the FID InceptionV3 from its weight file, and the features measured in one pass."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

import torch

from flowmo.data.folder_kinds import kind_note
from flowmo.metrics.generation import SPATIAL_DIM, inception_features
from flowmo.metrics.feature_stats import FeatureStats

PathLike = Union[str, "os.PathLike[str]"]
Images = Union[PathLike, torch.Tensor]

#: The metrics :func:`evaluate_generation` reports, in order.
METRICS = ("gfid", "sfid", "inception_score", "precision", "recall")
NETWORK_NAME = ("FID InceptionV3 (pytorch-fid's port of the TF Inception graph of 2015-12-05, "
                "pt_inception-2015-12-05-6726825d.pth)")
#: Which features each metric uses.
FEATURE_LAYERS = {
    "gfid": "pool3: 2048-d average pool after Mixed_7c",
    "sfid": f"mixed_6/conv (Mixed_6d.branch1x1 after BN and ReLU, 17x17): its first 7 channels flattened in "
            f"NHWC order, {SPATIAL_DIM}-d (Nash et al. 2021; guided-diffusion's evaluator)",
    "inception_score": "1008 logits pool3 @ fc.weight.T without the bias (the reference IS code), softmax in float64",
    "precision_recall": "pool3 (2048-d), Euclidean k-nearest-neighbour balls (Kynkaenniemi et al. 2019)",
}
RESIZE = ("299x299 inside the FID InceptionV3: F.interpolate(mode='bilinear', align_corners=False, antialias=False) "
          "of the [-1, 1] images, aspect ratio not kept (pytorch-fid's resize; as flowmo eval's rFID)")
CONVENTIONS = {
    "gfid": "exact Frechet distance (never negative) between Gaussians fitted (float64, N - 1 covariance) to the "
            "pool3 features of the generated and the reference images",
    "sfid": "the same distance on the spatial features",
    "inception_score": "exp(E_x KL(p(y|x) || p(y))) of the generated images per group [i N // splits, "
                       "(i + 1) N // splits) of their order numpy.random.RandomState(2020).permutation(N) (listing "
                       "order permuted, as torch-fidelity's samples_shuffle with rng_seed 2020; no shuffle for one "
                       "group), mean and population std over the groups",
    "precision": "fraction of generated images inside the reference manifold (union of balls reaching each "
                 "reference feature's k-th nearest reference neighbour, inclusive); exact float64 distances "
                 "(guided-diffusion's evaluator uses float16: its figures can differ by about a percentage point)",
    "recall": "fraction of reference images inside the generated manifold (likewise)",
}


def _check_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` if a float (N, 3, H, W) tensor of finite values in [-1, 1] (within 0.001); TypeError /
    ValueError naming ``name`` otherwise."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (N, 3, H, W) in [-1, 1], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3 or 0 in x.shape[2:] or x.is_meta:
        raise ValueError(f"{name} must have shape (N, 3, H, W) and values, got {tuple(x.shape)} on {x.device}")
    lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 0.0)
    if not (-1.001 <= lo and hi <= 1.001):  # NaN fails too
        raise ValueError(f"{name} must hold images in [-1, 1] (2 * x - 1 of [0, 1] ones), got [{lo:.4g}, {hi:.4g}]")
    return x


# ---------------------------------------------------------------------------------------------- images
def _generate_record_images(root: Path) -> Optional[set]:
    """The relative names of the images a ``flowmo generate`` output folder's ``generate.json``
    lists (not its grid), or None for any other folder. ValueError for a damaged record."""
    import json

    path = root / "generate.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(entry["file"]) for entry in doc["images"]}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is damaged ({type(e).__name__}: {e}); it should list the images under 'images'") from None


class _Source:
    """One image set: its count, its description and its batches of float32 (B, 3, H, W) in
    [-1, 1] (a folder's unreadable files skipped and recorded in ``info``)."""

    def __init__(self, images: Images, name: str, image_size: Optional[int], limit: Optional[int]):
        self.name, self.image_size = name, image_size
        if isinstance(images, torch.Tensor):
            self.tensor = _check_tensor(images, name)[:limit]
            self.files: list = []
            self.info: dict = {"source": "tensor", "shape": list(images.shape), "limit": limit}
            self.count = int(self.tensor.shape[0])
            return
        if not isinstance(images, (str, os.PathLike)):
            raise TypeError(f"{name} must be an image folder or a float tensor (N, 3, H, W), got {type(images).__name__}")
        from flowmo.data.listing import list_folder_images

        root = Path(images).expanduser()
        if not root.is_dir():
            what, error = ("is not a folder", ValueError) if root.exists() else ("does not exist", FileNotFoundError)
            raise error(f"{name} folder {str(root)!r} {what}")
        files, not_regular = list_folder_images(root)
        record = _generate_record_images(root)
        if record is not None:  # a `flowmo generate` folder: its images, not its grid
            files = [(rel, path) for rel, path in files if rel in record]
        if not files:
            raise ValueError(f"{name}: no image files found under {str(root)!r} (searched recursively){kind_note(root)}")
        self.tensor = None
        self.files = files[:limit]
        self.info = {"source": "folder" if record is None else "folder of flowmo generate (the images its "
                     "generate.json lists)", "folder": str(root), "images_available": len(files), "limit": limit,
                     "not_regular": [f"{rel}: {why}" for rel, _, why in not_regular], "skipped_unreadable": []}
        self.count = len(self.files)

    def _load(self, path: Path) -> torch.Tensor:
        from flowmo.data.image_sizes import center_crop, resize_short_side
        from flowmo.data.images import decode_image, image_to_tensor

        img = decode_image(path)
        if self.image_size is not None:
            img = center_crop(resize_short_side(img, self.image_size), self.image_size)
        return image_to_tensor(img)

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Batches in order; a folder's consecutive images of one size share a batch."""
        if self.tensor is not None:
            for a in range(0, self.count, batch_size):
                yield self.tensor[a:a + batch_size]
            return
        pending: list = []
        for rel, path in self.files:
            try:
                x = self._load(path)
            except Exception as exc:  # noqa: BLE001 - any decoder error: skipped and recorded, as flowmo eval
                self.info["skipped_unreadable"].append(f"{rel}: {type(exc).__name__}: {exc}")
                continue
            if pending and (x.shape != pending[0].shape or len(pending) == batch_size):
                yield torch.stack(pending)
                pending = []
            pending.append(x)
        if pending:
            yield torch.stack(pending)


@dataclass
class _Measured:
    pool: torch.Tensor  # float32 (N, 2048), CPU
    pool_stats: FeatureStats
    spatial_stats: FeatureStats
    logits: Optional[torch.Tensor]  # float32 (N, 1008), CPU


def _measure(net: torch.nn.Module, source: _Source, batch_size: int, device: torch.device, logits: bool,
             progress: Optional[Callable[[int], None]]) -> _Measured:
    pools, lgs = [], []
    pool_stats, spatial_stats = FeatureStats(), FeatureStats()
    for x in source.batches(batch_size):
        f = inception_features(net, x.to(device=device, dtype=torch.float32))
        pool = f.pool.float().cpu()
        pools.append(pool)
        pool_stats.update(pool.double().numpy())
        spatial_stats.update(f.spatial.double().cpu().numpy())
        if logits:
            lgs.append(f.logits.float().cpu())
        if progress is not None:
            progress(x.shape[0])
    pool = torch.cat(pools) if pools else torch.empty(0, 2048)
    return _Measured(pool, pool_stats, spatial_stats, torch.cat(lgs) if logits and lgs else None)


# ---------------------------------------------------------------------------------------------- network
def _network(weights: Optional[PathLike], inception: Optional[torch.nn.Module]):
    """(network or None, its protocol record, the unavailable report or None)."""
    from flowmo.nets.inception import FIDInceptionV3, inception_fid
    from flowmo.metrics.networks import file_sha256, how_to_get, name_hash_ok, resolve_net_files, unavailable

    if inception is not None:
        if weights is not None:
            raise ValueError("give weights or inception, not both")
        if not isinstance(inception, FIDInceptionV3):
            raise TypeError(f"inception must be a flowmo.nets.inception.FIDInceptionV3, got {type(inception).__name__}")
        if (inception.input_range, inception.fc.out_features, inception.fc.weight.is_meta) != ("-11", 1008, False):
            got = f"num_classes={inception.fc.out_features}, input_range={inception.input_range!r} on {inception.fc.weight.device}"
            raise ValueError(f"inception must be FIDInceptionV3(num_classes=1008, input_range='-11') off the meta device, got {got}")
        return inception, {"name": NETWORK_NAME, "source": "explicit module given by the caller",
                           "note": "weights unknown: comparable to published numbers only if the module holds the "
                                   "standard pretrained weights", "files": []}, None
    if weights is not None and not Path(weights).expanduser().exists():
        raise FileNotFoundError(f"weights {str(weights)!r} does not exist (give pt_inception-2015-12-05-6726825d.pth or its folder)")
    found, missing = resolve_net_files("inception_fid", weights)
    if missing:
        report = unavailable(missing, how_to_get("inception_fid", missing, weights))
        return None, {"name": NETWORK_NAME, "source": "weight files", "files": [], "missing": missing}, report
    path = found["inception_fid"]
    sha = file_sha256(path)
    record = {"name": NETWORK_NAME, "source": "weight files",
              "files": [{"file": Path(path).name, "path": str(path), "sha256": sha,
                         "name_hash_ok": name_hash_ok(Path(path).name, sha)}]}
    return inception_fid(weights_path=path), record, None


# ---------------------------------------------------------------------------------------------- API
def _image_handling(image_size: Optional[int]) -> dict:
    folder = ("files decoded by flowmo.data.images.decode_image (RGB, EXIF orientation applied, transparency on "
              "white), v / 127.5 - 1")
    if image_size is not None:
        folder += (f"; short side resized to {image_size} (PIL bicubic, antialiased) and the centre "
                   f"{image_size}x{image_size} crop kept (flowmo eval's standard loader)")
    else:
        folder += "; at their own size (no crop)"
    return {"image_size": image_size, "folders": folder, "tensors": "float (N, 3, H, W) in [-1, 1] as given",
            "resize": RESIZE}


def _device(device) -> torch.device:
    from flowmo.devices import check_device

    return torch.device("cpu") if device is None else check_device(device, "device")


def _tqdm(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", disable=not progress, desc=desc, dynamic_ncols=True)
