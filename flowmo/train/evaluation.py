"""The trainer's evaluation: held-out PSNR / SSIM of the raw weights and of the EMA weights, each
figure named by its weights, decoded from the library's one per-image noise recipe, and the PNGs
of originals over reconstructions; :func:`describe_eval` says the figures in words."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..model import FlowMo
from .sampler import derive_seed

__all__ = ["EvaluationMixin", "WEIGHT_WORDS", "describe_eval"]

WEIGHT_WORDS = {"raw": "raw weights", "ema": "EMA weights"}


def describe_eval(metrics: dict) -> str:
    """Held-out figures of :meth:`EvaluationMixin.evaluate` in words, each named by its weights:
    ``"raw weights: PSNR 10.70 dB, SSIM 0.2500; EMA weights: PSNR ..."``."""
    return "; ".join(f"{words}: PSNR {metrics[f'eval/{w}/psnr']:.2f} dB, SSIM {metrics[f'eval/{w}/ssim']:.4f}"
                     for w, words in WEIGHT_WORDS.items() if f"eval/{w}/psnr" in metrics)


def eval_set_words(data: Any) -> str:
    """What the trainer's evaluation images are, for its log lines (``data``: ``train.data``):
    ``"held-out"`` for the built-in photos (chelsea and coffee are never trained on), else
    ``"training-image"`` (the first images of the training folder or shards: not held out)."""
    return "held-out" if data.folder is None and data.shards is None else "training-image (not held-out)"


class EvaluationMixin:
    """:class:`~flowmo.train.Trainer`'s evaluation methods (they use its model, EMA, config,
    device and output folder)."""

    def ema_model(self) -> FlowMo:
        """A copy of the model with the EMA weights."""
        m = FlowMo(self.config.model).to(self.device)
        sd = self.model.state_dict()
        m.load_state_dict({k: self.ema[k].to(sd[k].dtype) if k in self.ema else v for k, v in sd.items()})
        return m.eval()

    def held_out_with_ids(self) -> tuple[Tensor, list[int]]:
        """The held-out images (train.eval.images of them) and their global ids: the built-in
        held-out photos 0..n-1, or the first n files of the training folder in the library's one
        listing (:func:`flowmo.data.listing.list_folder_images`) or the first n items of the
        training shards (:class:`flowmo.data.shards.TarShardDataset`), an unreadable one skipped
        with its id (as ``flowmo eval --limit n`` skips it), so image id i decodes from the same
        noise here and in ``flowmo eval``."""
        from ..data.folders import ImageFolderDataset
        from ..data.photos import held_out_photos

        n = self.tc.eval.images
        s = self.config.model.image_size
        d = self.tc.data
        if d.folder is None and d.shards is None:
            images = held_out_photos(s)[:n]
            return images, list(range(images.shape[0]))
        if d.shards is not None:
            from ..data.shards import TarShardDataset, expand_shards

            paths = expand_shards(d.shards if isinstance(d.shards, str) else list(d.shards))
            for k in range(1, len(paths) + 1):  # the first n items: index only the shards that hold them
                ds = TarShardDataset([str(p) for p in paths[:k]], s, train=False)
                if len(ds) >= n:
                    break
            name, source = ds.name, f"train.data.shards {d.shards!r}"
        else:
            ds = ImageFolderDataset(d.folder, s, train=False)
            name, source = (lambda i: ds.files[i]), f"train.data.folder {d.folder!r}"
        images, ids = [], []
        for i in range(min(n, len(ds))):
            image = ds[i]  # for an unreadable item, a substitute: dropped below
            if name(i) not in ds.bad_paths:
                images.append(image)
                ids.append(i)
        if not images:
            raise ValueError(f"none of the first {n} images of {source} is readable")
        return torch.stack(images), ids

    def held_out(self) -> Tensor:
        """The held-out images (:meth:`held_out_with_ids` without the ids)."""
        return self.held_out_with_ids()[0]

    def weight_sets(self) -> dict[str, FlowMo]:
        """The run's weight sets by name: ``raw`` (the trained weights) and, when ``train.ema``
        is enabled, ``ema`` (:meth:`ema_model`: what ``--export`` and ``flowmo export`` write)."""
        sets = {"raw": self.model}
        if self.ema:
            sets["ema"] = self.ema_model()
        return sets

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out PSNR and SSIM (uint8 convention) of each weight set (:meth:`weight_sets`):
        ``eval/raw/psnr``, ``eval/raw/ssim`` and, with EMA, ``eval/ema/psnr``, ``eval/ema/ssim``;
        and a PNG of the originals over each set's reconstructions (raw, then EMA).

        Held-out image id ``i`` (:meth:`held_out_with_ids`) is decoded from
        :func:`flowmo.samplers.noise.image_noise` ``(train.seed, [i])``: the noise
        ``flowmo eval --seed <train.seed>`` and ``flowmo reconstruct --seed <train.seed>`` use
        for image ``i``, with every weight set."""
        from flowmo.metrics.pixel import psnr, ssim
        from ..data.grids import save_image_rows
        from flowmo.samplers.noise import image_noise

        if not hasattr(self, "_held_out_ids"):
            self._held_out, self._held_out_ids = self.held_out_with_ids()
        x = self._held_out.to(self.device)
        sampler = {"steps": self.tc.eval.steps} if self.tc.eval.steps else None
        metrics, rows = {}, [x]
        for name, model in self.weight_sets().items():
            was_training = model.training
            model.eval()
            # held-out image i is decoded from the noise of `flowmo eval --seed <train.seed>` for image i
            noise = image_noise(self.tc.seed, self._held_out_ids, x.shape[1:], device=self.device, dtype=model.dtype)
            recon = model.reconstruct(x, noise=noise, sampler=sampler)
            model.train(was_training)
            metrics[f"eval/{name}/psnr"] = float(psnr(x, recon).mean())
            metrics[f"eval/{name}/ssim"] = float(ssim(x, recon).mean())
            rows.append(recon)
        if self.ctx.main:
            save_image_rows(rows, self.out / "eval" / f"step_{self.step:08d}.png")
        return metrics

    @torch.no_grad()
    def save_images(self, images: Tensor) -> Path:
        from ..data.grids import save_image_rows

        self.model.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "images", self.step))
        recon = self.model.reconstruct(images, generator=g)
        self.model.train()
        path = self.out / "images" / f"step_{self.step:08d}.png"
        save_image_rows([images, recon], path)
        return path
