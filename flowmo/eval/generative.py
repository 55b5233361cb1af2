"""Generation metrics of a set of images against a reference set, in ``flowmo eval``'s conventions.

:func:`evaluate_generation` measures generated images (an image folder or a tensor) against a
reference set (an image folder, a tensor, or statistics saved by :class:`ReferenceStats`) with
the FID InceptionV3 (:mod:`flowmo.nets.inception`) and reports

* ``gfid``: the Frechet distance of the 2048-d pool3 features (Heusel et al. 2017);
* ``sfid``: the same of the 2023-d spatial features (Nash et al. 2021; first 7 channels of
  ``mixed_6/conv``, as OpenAI's guided-diffusion evaluator);
* ``inception_score``: mean and std over ``splits`` groups of the generated images (Salimans et
  al. 2016; the 1008 logits ``pool3 @ W`` without bias, as the reference code);
* ``precision`` and ``recall``: Kynkaenniemi et al. 2019 with k nearest neighbours in pool3 space;

computed by the pure functions of :mod:`flowmo.eval.generation` (see their docstrings for the
math and its sources). As ``flowmo eval``: the network comes from its weight file
(``pt_inception-2015-12-05-6726825d.pth``, found in ``weights``, ``$FLOWMO_WEIGHTS_DIR`` or the
torch hub cache; :mod:`flowmo.nets.weights`), and when the file is absent every metric is
reported unavailable (``{"available": False, "missing": [file], "how": ...}``) instead of a
number; the protocol (network and weight file SHA-256, feature layers, k, splits, image
handling and resize) comes back with the figures.

Images: float (3, H, W) in [-1, 1]. A folder's files are listed as everywhere in flowmo
(:func:`flowmo.data.listing.list_folder_images`) and decoded by
:func:`flowmo.data.images.decode_image` (RGB, EXIF orientation applied, transparency on
white); with ``image_size`` S their short side is first resized to S (bicubic, antialiased)
and the centre S x S crop kept, as ``flowmo eval``'s standard loader. Then, as for ``flowmo
eval``'s rFID, the network itself resizes every image to 299 x 299 by plain bilinear
interpolation (``align_corners=False``, no antialiasing, aspect ratio not kept), pytorch-fid's
resize (:meth:`flowmo.nets.inception.FIDInceptionV3.preprocess`).
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch

from .generation import SPATIAL_DIM, inception_features, inception_score_from_logits, precision_recall
from .metrics import FeatureStats, frechet_distance
from .reference_stats import ReferenceStats, check_network, load_reference_stats

__all__ = ["evaluate_generation", "measure_reference", "GenerationResult", "ReferenceStats",
           "load_reference_stats", "METRICS", "FEATURE_LAYERS", "NETWORK_NAME"]

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
    "inception_score": "exp(E_x KL(p(y|x) || p(y))) of the generated images per group of consecutive images "
                       "[i N // splits, (i + 1) N // splits), mean and population std over the groups",
    "precision": "fraction of generated images inside the reference manifold (union of balls reaching each "
                 "reference feature's k-th nearest reference neighbour, inclusive)",
    "recall": "fraction of reference images inside the generated manifold (likewise)",
}


@dataclass
class GenerationResult:
    """What :func:`evaluate_generation` returns.

    metrics: ``gfid``, ``sfid`` (floats >= 0), ``inception_score`` (``{"mean", "std", "splits"}``),
        ``precision``, ``recall`` (floats in [0, 1]): each, when the network's weights are
        missing, ``{"available": False, "missing": [file names], "how": sentence}`` instead;
        ``n_generated`` and ``n_reference`` (images measured; without weights, images listed,
        since nothing is decoded then).
    protocol: JSON-serialisable: the network and its weight files (SHA-256), feature layers,
        ``k``, ``splits``, the image handling and resize, each set's source, the conventions.
    reference_stats: the reference set's :class:`ReferenceStats` (measured here or given), to
        save for later runs; None when unavailable.
    """

    metrics: dict
    protocol: dict
    reference_stats: Optional[ReferenceStats] = None

    def available(self) -> bool:
        """Whether the metrics were computed (the network's weights were found)."""
        return isinstance(self.metrics.get("gfid"), float)

    def to_dict(self) -> dict:
        """``{"metrics": ..., "protocol": ...}`` as ``flowmo eval-gen`` writes to metrics.json."""
        return {"metrics": self.metrics, "protocol": self.protocol}


# ---------------------------------------------------------------------------------------------- checks
def _check_int(value: Any, name: str, low: int, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an int >= {low}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def _check_tensor(x: torch.Tensor, name: str) -> torch.Tensor:
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (N, 3, H, W) in [-1, 1], got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] < 1 or x.shape[3] < 1:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it has no values)")
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds non-finite values (NaN or inf)")
    if x.numel() and (float(x.min()) < -1.001 or float(x.max()) > 1.001):
        raise ValueError(f"{name} must hold images in [-1, 1] (e.g. 2 * x - 1 of [0, 1] images), got values in "
                         f"[{float(x.min()):.4g}, {float(x.max()):.4g}]")
    return x


# ---------------------------------------------------------------------------------------------- images
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
            raise TypeError(f"{name} must be an image folder (a path) or a float tensor (N, 3, H, W), "
                            f"got {type(images).__name__}")
        from ..data.listing import list_folder_images

        root = Path(images).expanduser()
        if not root.exists():
            raise FileNotFoundError(f"{name} folder {str(root)!r} does not exist")
        if not root.is_dir():
            raise ValueError(f"{name} {str(root)!r} is not a folder")
        files, not_regular = list_folder_images(root)
        if not files:
            raise ValueError(f"{name}: no image files found under {str(root)!r} (searched recursively)")
        self.tensor = None
        self.files = files[:limit]
        self.info = {"source": "folder", "folder": str(root), "images_available": len(files), "limit": limit,
                     "not_regular": [f"{rel}: {why}" for rel, _, why in not_regular], "skipped_unreadable": []}
        self.count = len(self.files)

    def _load(self, path: Path) -> torch.Tensor:
        from ..data.images import center_crop, decode_image, image_to_tensor, resize_short_side

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
    from ..nets.inception import FIDInceptionV3, inception_fid
    from .networks import file_sha256, how_to_get, name_hash_ok, resolve_net_files, unavailable

    if inception is not None:
        if weights is not None:
            raise ValueError("give weights or inception, not both")
        if not isinstance(inception, FIDInceptionV3):
            raise TypeError(f"inception must be a flowmo.nets.inception.FIDInceptionV3, got {type(inception).__name__}")
        return inception, {"name": NETWORK_NAME, "source": "explicit module given by the caller",
                           "note": "weights unknown: comparable to published numbers only if the module holds the "
                                   "standard pretrained weights", "files": []}, None
    if weights is not None and not Path(weights).expanduser().exists():
        raise FileNotFoundError(f"weights {str(weights)!r} does not exist (give the folder holding "
                                "pt_inception-2015-12-05-6726825d.pth, or the file)")
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
    from ..devices import check_device

    return torch.device("cpu") if device is None else check_device(device, "device")


def _tqdm(progress: bool, total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="img", disable=not progress, desc=desc, dynamic_ncols=True)


def _prepare(*, k, splits, batch_size, limit, image_size):
    k = _check_int(k, "k", 1)
    splits = _check_int(splits, "splits", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    limit = _check_int(limit, "limit", 1, allow_none=True)
    if image_size is not None:
        from ..data.images import check_size

        image_size = check_size(image_size)
    return k, splits, batch_size, limit, image_size


def measure_reference(reference: Images, *, image_size: Optional[int] = None, batch_size: int = 32,
                      device: Union[str, torch.device, None] = None, weights: Optional[PathLike] = None,
                      inception: Optional[torch.nn.Module] = None, limit: Optional[int] = None,
                      progress: bool = False) -> ReferenceStats:
    """Measure a reference set once, for :meth:`ReferenceStats.save` and later
    :func:`evaluate_generation` runs. Arguments as :func:`evaluate_generation`'s.

    Raises :class:`flowmo.nets.weights.MissingWeightsError` (naming the file) when the
    network's weights are absent (there is nothing to save then), and as
    :func:`evaluate_generation` for bad input."""
    from ..nets.weights import MissingWeightsError

    _, _, batch_size, limit, image_size = _prepare(k=1, splits=1, batch_size=batch_size, limit=limit,
                                                   image_size=image_size)
    source = _Source(reference, "reference", image_size, limit)
    net, network, missing = _network(weights, inception)
    if net is None:
        raise MissingWeightsError(f"cannot measure the reference set: missing {', '.join(missing['missing'])}; "
                                  f"{missing['how']}")
    dev = _device(device)
    return _reference_stats(net, network, source, batch_size, dev, image_size, progress)


def _reference_stats(net, network, source: _Source, batch_size, dev, image_size, progress) -> ReferenceStats:
    net.to(dev)
    bar = _tqdm(progress, source.count, "reference")
    try:
        m = _measure(net, source, batch_size, dev, False, bar.update)
    finally:
        bar.close()
    if m.pool.shape[0] < 2:
        raise ValueError(f"reference: {m.pool.shape[0]} readable images; at least 2 are needed")
    pool_mu, pool_sigma = m.pool_stats.statistics()
    spatial_mu, spatial_sigma = m.spatial_stats.statistics()
    record = {"n_images": int(m.pool.shape[0]), "network": network, "feature_layers": FEATURE_LAYERS,
              "images": _image_handling(image_size), "source": source.info}
    return ReferenceStats(pool=m.pool, pool_mu=pool_mu, pool_sigma=pool_sigma, spatial_mu=spatial_mu,
                          spatial_sigma=spatial_sigma, record=record)


def evaluate_generation(generated: Images, reference: Union[Images, ReferenceStats], *,
                        image_size: Optional[int] = None, batch_size: int = 32,
                        device: Union[str, torch.device, None] = None, weights: Optional[PathLike] = None,
                        inception: Optional[torch.nn.Module] = None, k: int = 3, splits: int = 1,
                        limit: Optional[int] = None, progress: bool = False) -> GenerationResult:
    """gFID, sFID, Inception Score, precision and recall of ``generated`` against ``reference``.

    Args:
        generated: an image folder (searched recursively; unreadable files are skipped and
            listed in the protocol's ``skipped_unreadable``, as ``flowmo eval`` does) or a float
            tensor (N, 3, H, W) in [-1, 1] (values beyond it by more than 0.001 are refused);
            N >= max(2, k + 1, splits) images.
        reference: an image folder, a float tensor (N, 3, H, W) in [-1, 1], a
            :class:`ReferenceStats` or the path of a file it saved (``.safetensors``);
            N >= max(2, k + 1).
        image_size: None (default): folder images at their own size; an int S: short side
            resized to S and centre-cropped S x S first (tensors are used as given). Every
            image is then resized to 299 x 299 by the network (module docstring).
        batch_size: images per network call (int >= 1).
        device: where the network runs (default CPU); also where precision/recall is computed.
        weights: the folder holding ``pt_inception-2015-12-05-6726825d.pth`` or the file itself
            (default: ``$FLOWMO_WEIGHTS_DIR``, then the torch hub cache).
        inception: an explicit :class:`~flowmo.nets.inception.FIDInceptionV3` instead of the
            weight file (its weights are recorded as unknown).
        k: neighbourhood size of precision/recall (int >= 1; 3 as Kynkaenniemi et al.).
        splits: groups of the Inception Score (int >= 1; 10 as the reference code over 50,000).
        limit: only the first ``limit`` images of each image set (listing order / rows; reference
            statistics are used whole).
        progress: show progress bars.

    Returns a :class:`GenerationResult` (metrics, protocol, reference statistics). Without the
    weight file every metric is reported unavailable naming the file (no network is run).

    Raises ``TypeError`` / ``ValueError`` naming the argument for bad input (wrong types,
    shapes, values outside [-1, 1], too few images, bad ``k`` / ``splits`` / ``batch_size``
    / ``limit`` / ``image_size``), ``FileNotFoundError`` for a missing folder, statistics
    file or ``weights`` path, and ``ValueError`` for reference statistics measured with
    other weights (:func:`flowmo.eval.reference_stats.check_network`).
    """
    from .. import __version__

    k, splits, batch_size, limit, image_size = _prepare(k=k, splits=splits,
                                                        batch_size=batch_size, limit=limit, image_size=image_size)
    stats: Optional[ReferenceStats] = None
    if isinstance(reference, ReferenceStats):
        stats, ref_info = reference, {"source": "reference statistics given as a ReferenceStats"}
    elif isinstance(reference, (str, os.PathLike)) and Path(reference).expanduser().is_file():
        stats = load_reference_stats(reference)
        ref_info = {"source": "reference statistics file", "path": str(Path(reference).expanduser())}
    if stats is not None:
        ref_info.update(n_images=stats.n_images, measured=stats.record)
        ref_source = None
        n_ref = stats.n_images
    else:
        ref_source = _Source(reference, "reference", image_size, limit)
        ref_info, n_ref = ref_source.info, ref_source.count
    gen_source = _Source(generated, "generated", image_size, limit)
    need_gen, need_ref = max(2, k + 1, splits), max(2, k + 1)
    if gen_source.count < need_gen:
        raise ValueError(f"generated has {gen_source.count} images; at least {need_gen} are needed (2 for a "
                         f"covariance, k + 1 = {k + 1} for precision/recall, splits = {splits} for the IS)")
    if n_ref < need_ref:
        raise ValueError(f"reference has {n_ref} images; at least {need_ref} are needed (2 for a covariance, "
                         f"k + 1 = {k + 1} for precision/recall)")
    dev = _device(device)
    net, network, missing = _network(weights, inception)
    protocol: dict = {
        "network": network,
        "feature_layers": dict(FEATURE_LAYERS),
        "k": k, "splits": splits,
        "images": _image_handling(image_size),
        "generated": gen_source.info, "reference": ref_info,
        "conventions": dict(CONVENTIONS),
        "batch_size": batch_size, "device": str(dev),
        "versions": {"flowmo": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }
    if net is None:
        metrics = {m: dict(missing) for m in METRICS}
        metrics.update(n_generated=gen_source.count, n_reference=n_ref)
        return GenerationResult(metrics, protocol, stats)
    if stats is not None:
        protocol["reference"]["network_check"] = check_network(stats, network)
    else:
        stats = _reference_stats(net, network, ref_source, batch_size, dev, image_size, progress)
    net.to(dev)
    bar = _tqdm(progress, gen_source.count, "generated")
    try:
        gen = _measure(net, gen_source, batch_size, dev, True, bar.update)
    finally:
        bar.close()
    n_gen = int(gen.pool.shape[0])
    if n_gen < need_gen:
        raise ValueError(f"generated has {n_gen} readable images; at least {need_gen} are needed")
    g_mu, g_sigma = gen.pool_stats.statistics()
    s_mu, s_sigma = gen.spatial_stats.statistics()
    score = inception_score_from_logits(gen.logits, splits=splits)
    pr = precision_recall(stats.pool, gen.pool, k=k, device=dev)
    metrics = {
        "gfid": frechet_distance(g_mu, g_sigma, stats.pool_mu, stats.pool_sigma),
        "sfid": frechet_distance(s_mu, s_sigma, stats.spatial_mu, stats.spatial_sigma),
        "inception_score": {"mean": score.mean, "std": score.std, "splits": splits},
        "precision": pr.precision,
        "recall": pr.recall,
        "n_generated": n_gen,
        "n_reference": stats.n_images,
    }
    return GenerationResult(metrics, protocol, stats)
