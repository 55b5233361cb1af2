"""The tokenizer trainer's evaluation: the held-out images (:func:`held_out_images`), PSNR / SSIM
of the reconstructions of each weight set (raw, EMA), each figure named by its weights and
decoded from the library's one per-image noise recipe (:func:`reconstruction_metrics`), and
those figures in words (:func:`describe_eval`)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from flowmo.metrics.pixel import psnr, ssim
from flowmo.samplers.noise import image_noise

from ..data.folders import ImageFolderDataset
from ..data.photos import held_out_photos
from ..model import FlowMo

__all__ = ["WEIGHT_WORDS", "describe_eval", "eval_set_words", "held_out_images", "reconstruction_metrics"]

WEIGHT_WORDS = {"raw": "raw weights", "ema": "EMA weights"}


def describe_eval(metrics: dict) -> str:
    """Held-out figures of :func:`reconstruction_metrics` in words, each named by its weights:
    ``"raw weights: PSNR 10.70 dB, SSIM 0.2500; EMA weights: PSNR ..."``."""
    return "; ".join(f"{words}: PSNR {metrics[f'eval/{w}/psnr']:.2f} dB, SSIM {metrics[f'eval/{w}/ssim']:.4f}"
                     for w, words in WEIGHT_WORDS.items() if f"eval/{w}/psnr" in metrics)


def eval_set_words(data: Any) -> str:
    """What the trainer's evaluation images are, for its log lines (``data``: ``train.data``):
    ``"held-out"`` for the built-in photos (chelsea and coffee are never trained on), else
    ``"training-image"`` (the first images of the training folder or shards: not held out)."""
    return "held-out" if data.folder is None and data.shards is None else "training-image (not held-out)"


def held_out_images(data: Any, n: int, image_size: int) -> tuple[Tensor, list[int]]:
    """The evaluation images of a run on ``data`` (its ``train.data``), ``n`` of them (at most),
    and their global ids, as ``(B, 3, image_size, image_size)`` floats in [-1, 1]: the built-in
    held-out photos 0..n-1, or the first n files of the training folder in the library's one
    listing (:func:`flowmo.data.listing.list_folder_images`) or the first n items of the
    training shards (:class:`flowmo.data.shards.TarShardDataset`), an unreadable one skipped
    with its id (as ``flowmo eval --limit n`` skips it), so image id i decodes from the same
    noise here and in ``flowmo eval``. ValueError when none of them is readable."""
    if data.folder is None and data.shards is None:
        images = held_out_photos(image_size)[:n]
        return images, list(range(images.shape[0]))
    if data.shards is not None:
        from ..data.shards import TarShardDataset, expand_shards

        paths = expand_shards(data.shards if isinstance(data.shards, str) else list(data.shards))
        for k in range(1, len(paths) + 1):  # the first n items: index only the shards that hold them
            ds = TarShardDataset([str(p) for p in paths[:k]], image_size, train=False)
            if len(ds) >= n:
                break
        name, source = ds.name, f"train.data.shards {data.shards!r}"
    else:
        ds = ImageFolderDataset(data.folder, image_size, train=False)
        name, source = (lambda i: ds.files[i]), f"train.data.folder {data.folder!r}"
    images, ids = [], []
    for i in range(min(n, len(ds))):
        image = ds[i]  # for an unreadable item, a substitute: dropped below
        if name(i) not in ds.bad_paths:
            images.append(image)
            ids.append(i)
    if not images:
        raise ValueError(f"none of the first {n} images of {source} is readable")
    return torch.stack(images), ids


@torch.no_grad()
def reconstruction_metrics(weight_sets: dict[str, FlowMo], x: Tensor, ids: list[int], seed: int,
                           steps: Optional[int]) -> tuple[dict[str, float], list[Tensor]]:
    """PSNR and SSIM (uint8 convention) of each weight set's reconstructions of the images ``x``
    (``(B, 3, H, W)`` in [-1, 1], global ids ``ids``): ``eval/<name>/psnr`` and
    ``eval/<name>/ssim`` per ``weight_sets`` name (``raw``, ``ema``), and the rows ``[x, recon
    of each set...]`` for a PNG. Image id ``i`` is decoded from
    :func:`flowmo.samplers.noise.image_noise` ``(seed, [i])``: the noise ``flowmo eval --seed
    <seed>`` and ``flowmo reconstruct --seed <seed>`` use for image ``i``, with every weight set;
    ``steps``: the sampler's steps (None: the model's sampler). Each model's train/eval mode is
    restored."""
    sampler = {"steps": steps} if steps else None
    metrics, rows = {}, [x]
    for name, model in weight_sets.items():
        was_training = model.training
        model.eval()
        noise = image_noise(seed, ids, x.shape[1:], device=x.device, dtype=model.dtype)
        recon = model.reconstruct(x, noise=noise, sampler=sampler)
        model.train(was_training)
        metrics[f"eval/{name}/psnr"] = float(psnr(x, recon).mean())
        metrics[f"eval/{name}/ssim"] = float(ssim(x, recon).mean())
        rows.append(recon)
    return metrics, rows
