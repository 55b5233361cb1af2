"""Generation metrics of a set of images against a reference set, in ``flowmo eval``'s conventions.

:func:`evaluate_generation` measures generated images (an image folder or a tensor) against a
reference set (an image folder, a tensor, or statistics saved by :class:`ReferenceStats`) with
the FID InceptionV3 (:mod:`flowmo.nets.inception`) and reports

* ``gfid``: the Frechet distance of the 2048-d pool3 features (Heusel et al. 2017);
* ``sfid``: the same of the 2023-d spatial features (Nash et al. 2021; first 7 channels of
  ``mixed_6/conv``, as OpenAI's guided-diffusion evaluator);
* ``inception_score``: mean and std over ``splits`` groups of the generated images (Salimans et
  al. 2016; the 1008 logits ``pool3 @ W`` without bias, as the reference code), the groups cut
  from a fixed seeded shuffle of the images (``numpy.random.RandomState(2020).permutation(N)``
  of the listing order, as torch-fidelity; recorded as the protocol's ``splits_shuffle_seed``),
  so that a folder listed class by class does not give each group only a few classes;
* ``precision`` and ``recall``: Kynkaenniemi et al. 2019 with k nearest neighbours in pool3 space,
  float64 distances (guided-diffusion's evaluator uses float16; about a percentage point apart);

computed by the pure functions of :mod:`flowmo.metrics.generation` (see their docstrings for the
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
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import torch

from flowmo.metrics.generation import IS_SHUFFLE_SEED, inception_score_from_logits, precision_recall
from flowmo.metrics.generative_inputs import (
    CONVENTIONS,
    FEATURE_LAYERS,
    METRICS,
    _device,
    _image_handling,
    _measure,
    _network,
    _Source,
    _tqdm,
)
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.inputs import _check_int
from flowmo.metrics.reference_stats import ReferenceStats, check_network, load_reference_stats

__all__ = ["evaluate_generation", "measure_reference", "GenerationResult"]

PathLike = Union[str, "os.PathLike[str]"]
Images = Union[PathLike, torch.Tensor]

@dataclass
class GenerationResult:
    """What :func:`evaluate_generation` returns.

    metrics: ``gfid``, ``sfid`` (floats >= 0), ``inception_score`` (``{"mean", "std", "splits"}``),
        ``precision``, ``recall`` (floats in [0, 1]): each, when the network's weights are
        missing, ``{"available": False, "missing": [file names], "how": sentence}`` instead;
        ``n_generated`` and ``n_reference`` (images measured; without weights, images listed,
        since nothing is decoded then).
    protocol: JSON-serialisable: the network and its weight files (SHA-256), feature layers,
        ``k``, ``splits`` and ``splits_shuffle_seed``, the image handling and resize, each set's
        source, the conventions.
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
def _prepare(*, k, splits, batch_size, limit, image_size):
    k, splits, batch_size = _check_int(k, "k"), _check_int(splits, "splits"), _check_int(batch_size, "batch_size")
    limit = _check_int(limit, "limit", allow_none=True)
    if image_size is not None:
        from flowmo.data.image_sizes import check_size

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
    from flowmo.nets.weights import MissingWeightsError

    _, _, batch_size, limit, image_size = _prepare(k=1, splits=1, batch_size=batch_size, limit=limit,
                                                   image_size=image_size)
    source = _Source(reference, "reference", image_size, limit)
    net, network, missing = _network(weights, inception)
    if net is None:
        raise MissingWeightsError(f"cannot measure the reference set: missing {missing['missing']}; {missing['how']}")
    dev = _device(device)
    with _placed(net, dev):
        return _reference_stats(net, network, source, batch_size, dev, image_size, progress)


@contextmanager
def _placed(net: torch.nn.Module, dev: torch.device) -> Iterator[None]:
    """``net`` on ``dev`` for the block, then back on the device it was on (a caller's network
    is left where it was; the networks run in eval mode inside
    :func:`~flowmo.metrics.generation.inception_features`)."""
    home = next(net.parameters()).device
    net.to(dev)
    try:
        yield
    finally:
        net.to(home)


def _reference_stats(net, network, source: _Source, batch_size, dev, image_size, progress) -> ReferenceStats:
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
            weight file (its weights are recorded as unknown). It is run in eval mode without
            gradients and left as it was: each submodule's ``training`` flag, its buffers
            (BatchNorm statistics) and its device.
        k: neighbourhood size of precision/recall (int >= 1; 3 as Kynkaenniemi et al.).
        splits: groups of the Inception Score (int >= 1; 10 as the reference code over 50,000),
            cut from the images shuffled by the fixed seed 2020 (module docstring).
        limit: only the first ``limit`` images of each image set (listing order / rows; reference
            statistics are used whole).
        progress: show progress bars.

    Returns a :class:`GenerationResult` (metrics, protocol, reference statistics). Without the
    weight file every metric is reported unavailable naming the file (no network is run).

    Raises ``TypeError`` / ``ValueError`` naming the argument for bad input (wrong types,
    shapes, values outside [-1, 1], too few images, bad ``k`` / ``splits`` / ``batch_size``
    / ``limit`` / ``image_size``), ``FileNotFoundError`` for a missing folder, statistics
    file or ``weights`` path, and ``ValueError`` for reference statistics measured with
    other weights (:func:`flowmo.metrics.reference_stats.check_network`).
    """
    from flowmo import __version__

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
        raise ValueError(f"generated has {gen_source.count} images; at least {need_gen} are needed (k + 1, splits = {splits})")
    if n_ref < need_ref:
        raise ValueError(f"reference has {n_ref} images; at least {need_ref} are needed (2 and k + 1)")
    dev = _device(device)
    net, network, missing = _network(weights, inception)
    protocol: dict = {
        "network": network,
        "feature_layers": dict(FEATURE_LAYERS),
        "k": k, "splits": splits, "splits_shuffle_seed": IS_SHUFFLE_SEED,
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
    with _placed(net, dev):
        if ref_source is not None:
            stats = _reference_stats(net, network, ref_source, batch_size, dev, image_size, progress)
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
    score = inception_score_from_logits(gen.logits, splits=splits, shuffle_seed=IS_SHUFFLE_SEED)
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
