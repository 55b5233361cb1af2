"""A streaming reconstruction evaluator for image tokenizers (FlowMo or any other).

:class:`Evaluator` takes batches of originals and reconstructions (float tensors
(B, 3, H, W) in [-1, 1]) with ``update`` and reports, with ``compute``:

Two protocols (``protocol=``; see :mod:`flowmo.metrics` and docs/evaluation.md):
``"standard"`` (default) and ``"release"``, the released FlowMo evaluation's conventions
(``flowmo/evaluate.py`` of the release), so that figures compare with the paper's Table 1.

* ``psnr``: standard: PSNR per image on the 8-bit images (data range 255, MSE over all
  channels and pixels of the image), averaged over images (``psnr_mean_over_images``).
  An exact reconstruction (MSE 0) has infinite PSNR; in the mean it counts as the PSNR of
  the smallest non-zero MSE an image of that size can have (one channel of one pixel off
  by one level), and ``psnr_exact_images`` says how many there were.
  ``psnr_batches_of_5`` is the PSNR of the pooled MSE of consecutive groups of 5 images
  (in id order) averaged over groups (:func:`~flowmo.metrics.batched_psnr`), the
  release's averaging; under ``"release"`` it is the headline ``psnr``.
* ``ssim``: SSIM per image on the 8-bit images, averaged over images. Standard:
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)``; release: scikit-image's defaults as
  the release calls them (7x7 uniform window, sample covariances, data range 1 on
  ``u8 / 255``).
* ``lpips_vgg`` / ``lpips_alex``: LPIPS v0.1 per image, averaged. Standard: on the 8-bit
  images; release: on the float images as the release does (originals as its loader
  gives them, reconstructions clamped to [-1, 1]).
* ``rfid``: the Frechet distance between InceptionV3 pool3 (2048-d) features of the
  originals and of the reconstructions (pt_inception-2015-12-05 weights, float64
  statistics, the exact distance of :func:`~flowmo.metrics.frechet_distance`,
  never negative). Network inputs per protocol as for LPIPS.
* ``bits_per_pixel``, ``codebook`` (per token group: fraction of codes used, entropy in
  bits, perplexity), ``decoder_calls_per_image`` and ``seconds_per_image`` when known.

8 bits: standard rounds (``round((x + 1) * 127.5)``), so results do not depend on
sub-quantisation noise and equal those on saved PNGs; release truncates in float32 as the
release does (:func:`~flowmo.metrics.quantise_pair`).

A network metric whose weight files are absent is reported as
``{"available": False, "missing": [file names], "how": "..."}`` and never computed with
random weights. Networks can also be given explicitly (``lpips_nets={"vgg": module}``,
``inception=module``), e.g. randomly initialised ones in tests: numbers from such
networks test the plumbing only and are not comparable to published values.

Under an initialised ``torch.distributed`` process group ``compute`` (a collective: call
it on every rank) gathers the per-image values, the feature sums and the code counts, so
every rank gets the result of one process that saw all images. Means use ``math.fsum``
(exactly rounded, independent of order), so PSNR, SSIM and LPIPS means are bitwise equal
to a single-process run that computed the same per-image values.

:func:`evaluate_model` runs a model (a :class:`~flowmo.FlowMo` or any callable mapping
images to reconstructions) over data and feeds an evaluator.

The parts: this module turns batches into per-image values (the 8-bit ones by
:func:`flowmo.metrics.pixel.per_image_values`); :mod:`flowmo.metrics.state` holds what
is accumulated and merged (dataclasses) and derives the metrics; :mod:`flowmo.metrics.networks`
finds and loads the networks and prepares their inputs; :mod:`flowmo.metrics.codebook` counts codes;
:mod:`flowmo.metrics.collectives` gathers over a process group;
:mod:`flowmo.metrics.conventions` words the conventions; :mod:`flowmo.metrics.run` is
:func:`evaluate_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from flowmo.devices import check_device
from flowmo.nets.frozen import evaluating
from flowmo.metrics.collectives import computed_on_rank0, gather_objects, world_and_rank
from flowmo.metrics.codebook import count_tokens
from flowmo.metrics.conventions import LPIPS_NETS
from flowmo.metrics.state import Accumulated, Merged, _to_id_array, select_examples
from flowmo.metrics.networks import file_sha256, how_to_get, name_hash_ok, resolve_net_files, unavailable
from flowmo.metrics.eight_bit import _release_originals, _uint8_pair
from flowmo.metrics.inputs import _check_int, _check_pair, _check_protocol
from flowmo.metrics.pixel import _ssim_min_size, per_image_values

__all__ = ["Evaluator"]


# ---------------------------------------------------------------------------------------------- evaluator
class Evaluator:
    """Streaming reconstruction metrics; see the module docstring for every convention.

    Args:
        lpips: LPIPS heads to compute, any of ``"vgg"``, ``"alex"`` (``()`` for none).
        fid: compute rFID.
        weights_dir: the folder holding the weight files; without it ``$FLOWMO_WEIGHTS_DIR``
            and the torch hub cache are searched (see :mod:`flowmo.nets.weights`).
        device: where the networks run (default: the device of the images given to ``update``);
            a malformed or unavailable device raises ValueError naming ``device``.
        lpips_nets: explicit LPIPS modules by head name (used instead of weight files).
        inception: an explicit FID feature network ((B, 3, H, W) in [-1, 1] -> (B, D)).
            Explicit modules run in eval mode without gradients (BatchNorm on its running
            statistics, which stay unchanged), and each submodule's ``training`` flag is given
            back after every ``update`` (:func:`flowmo.nets.frozen.evaluating`); they are moved
            to the device where they run and stay there.
        tokens_fn: ``originals -> tokens`` used when ``update`` gets no ``tokens``.
        codebook_size: codes per token group (``update(codebook=...)`` overrides).
        bits_per_pixel: the code's bits per image pixel, reported as given.
        keep_examples: how many best and worst reconstructions to keep (by ``rank_by``).
        rank_by: the per-image metric that orders examples (default: ``lpips_vgg``, else
            ``lpips_alex``, else ``psnr``, whichever is available first).
        distributed: gather over the default process group in ``compute`` (None: when one
            is initialised with more than one rank).
        protocol: ``"standard"`` (default) or ``"release"``: how images become 8 bits, the SSIM
            window, the headline PSNR and the network inputs (see the module docstring,
            :mod:`flowmo.metrics` and docs/evaluation.md).
    """

    def __init__(
        self,
        lpips: Sequence[str] = ("vgg", "alex"),
        fid: bool = True,
        weights_dir: Optional[Union[str, os.PathLike]] = None,
        device: Union[str, torch.device, None] = None,
        lpips_nets: Optional[Mapping[str, nn.Module]] = None,
        inception: Optional[nn.Module] = None,
        tokens_fn: Optional[Callable[[Tensor], Tensor]] = None,
        codebook_size: Optional[int] = None,
        bits_per_pixel: Optional[float] = None,
        keep_examples: int = 0,
        rank_by: Optional[str] = None,
        distributed: Optional[bool] = None,
        protocol: str = "standard",
    ):
        self.protocol = _check_protocol(protocol)
        if isinstance(lpips, str):
            lpips = (lpips,)
        lpips, lpips_nets = tuple(lpips), dict(lpips_nets or {})
        for arg, heads in (("lpips heads", lpips), ("lpips_nets keys", lpips_nets)):
            if not set(heads) <= set(LPIPS_NETS):
                raise ValueError(f"{arg} must be among {sorted(LPIPS_NETS)}, got {sorted(heads)}")
        keep_examples = _check_int(keep_examples, "keep_examples", 0)
        self.weights_dir = None if weights_dir is None else Path(weights_dir).expanduser()
        if self.weights_dir is not None and not self.weights_dir.is_dir():
            raise FileNotFoundError(f"weights_dir {str(self.weights_dir)!r} is not a folder")
        self.device = None if device is None else check_device(device, "device")
        self.tokens_fn = tokens_fn
        self.codebook_size = codebook_size
        self.bits_per_pixel = bits_per_pixel
        self.keep_examples = keep_examples
        self.distributed = distributed

        # networks: name -> module; unavailable: name -> report; info: name -> provenance
        self.nets: dict[str, nn.Module] = {}
        self.unavailable: dict[str, dict] = {}
        self.net_info: dict[str, dict] = {}
        heads = list(dict.fromkeys(list(lpips) + list(lpips_nets)))
        for head in heads:
            metric = f"lpips_{head}"
            if head in lpips_nets:
                self._add_explicit(metric, lpips_nets[head])
            else:
                self._add_from_files(metric, LPIPS_NETS[head])
        if inception is not None:
            self._add_explicit("rfid", inception)
        elif fid:
            self._add_from_files("rfid", "inception_fid")
        self.metric_names = [f"lpips_{h}" for h in heads] + (["rfid"] if (fid or inception is not None) else [])

        if rank_by is None:
            rank_by = next((m for m in ("lpips_vgg", "lpips_alex") if m in self.nets), "psnr")
        elif rank_by not in ("psnr", "ssim") and rank_by not in self.nets:
            raise ValueError(f"rank_by must be 'psnr', 'ssim' or one of the LPIPS metrics {sorted(self.nets)}, got {rank_by!r}")
        self.rank_by = rank_by
        self.reset()

    # -- state
    def reset(self) -> None:
        """Forget every image seen."""
        self._acc = Accumulated.empty([m for m in self.nets if m.startswith("lpips")], fid="rfid" in self.nets)
        self._merged: Optional[Merged] = None
        if not hasattr(self, "_net_device"):
            self._net_device: dict[str, torch.device] = {}
            self._hash_cache: dict[str, str] = {}

    def _world(self) -> tuple[int, int]:
        return world_and_rank(self.distributed)

    # -- update
    @torch.no_grad()
    def update(self, originals: Tensor, reconstructions: Tensor, *, ids: Any = None, tokens: Optional[Tensor] = None,
               codebook: Optional[int] = None, decoder_calls: Optional[Union[int, float]] = None,
               seconds: Optional[float] = None) -> None:
        """Add a batch.

        Args:
            originals, reconstructions: (B, 3, H, W) float tensors in [-1, 1]. The value range rule
                of :mod:`flowmo.metrics`: originals may exceed [-1, 1] by at most 1e-3;
                reconstructions are clamped to it (an unclipped sampler's overshoot is fine) unless
                their range shows [0, 255] data (nothing negative, something above 2); anything else
                raises ``ValueError`` naming the argument.
            ids: one unique integer per image (e.g. its index in the data set); default: a running
                count (``count * world_size + rank`` under a process group).
            tokens: the images' codes: (B, T) token indices or (B, T, G) indices per token group.
            codebook: codes per group for ``tokens`` (default: the constructor's ``codebook_size``).
            decoder_calls: decoder evaluations per image for this batch.
            seconds: time spent reconstructing this batch.
        """
        originals, reconstructions = _check_pair(originals, reconstructions)
        b, win = originals.shape[0], _ssim_min_size(self.protocol)
        if originals.shape[1] != 3 or b and min(originals.shape[-2:]) < win:
            raise ValueError(f"originals must have shape (B, 3, H, W), H, W >= {win}, got {tuple(originals.shape)}")
        if b == 0:
            return
        world, rank = self._world()
        if ids is None:
            ids_arr = (np.arange(self._acc.n_local, self._acc.n_local + b, dtype=np.int64) * world + rank)
        else:
            ids_arr = _to_id_array(ids, b)
        if tokens is None and self.tokens_fn is not None:
            tokens = self.tokens_fn(originals)
        if tokens is not None:
            self._update_codes(tokens, b, codebook)

        o8, r8 = _uint8_pair(originals, reconstructions, self.protocol)
        for k, v in per_image_values(o8, r8, self.protocol).items():  # psnr, ssim, mse, psnr_cap, npix
            self._acc.values[k].append(v)

        dev = self.device or originals.device
        of, rf = self._network_inputs(originals, reconstructions, o8, r8, dev)
        for m in self.nets:
            if m.startswith("lpips"):
                with evaluating(self._net(m, dev)) as net:
                    v = net(of, rf)
                self._acc.values[m].append(v.detach().double().reshape(b).cpu().numpy())
        if self._acc.feats is not None:
            with evaluating(self._net("rfid", dev)) as inc:
                real, fake = inc(of), inc(rf)
            self._acc.feats["real"].update(real.detach().double().cpu().numpy())
            self._acc.feats["fake"].update(fake.detach().double().cpu().numpy())

        if decoder_calls is not None:
            self._acc.calls[0] += float(decoder_calls) * b
            self._acc.calls[1] += b
        if seconds is not None:
            self._acc.seconds.append(float(seconds))
            self._acc.timed_images += b
        self._acc.ids.append(ids_arr)
        self._acc.n_local += b
        if self.keep_examples:
            key = self._acc.values[self.rank_by][-1] if self.rank_by in self._acc.values else None
            self._keep(ids_arr, key, o8.cpu(), r8.cpu())
        self._merged = None

    def _update_codes(self, tokens: Tensor, b: int, codebook: Optional[int]) -> None:
        size = codebook if codebook is not None else self.codebook_size
        self._acc.codes = count_tokens(self._acc.codes, tokens, b, size)

    # -- examples
    def _goodness(self, values: np.ndarray) -> np.ndarray:
        return -values if self.rank_by.startswith("lpips") else values

    def _keep(self, ids: np.ndarray, key: Optional[np.ndarray], o8: Tensor, r8: Tensor) -> None:
        if key is None:
            return
        good = self._goodness(key)
        new = [(float(good[i]), int(ids[i]), float(key[i]), o8[i].clone(), r8[i].clone()) for i in range(len(ids))]
        self._acc.examples = select_examples(self._acc.examples["best"] + self._acc.examples["worst"] + new,
                                          self.keep_examples)

    # -- gathering
    def _merge(self) -> Merged:
        """Every process's accumulation merged (a collective under a process group), cached until
        the next ``update``."""
        if self._merged is None:
            states = gather_objects(self._acc.portable(), self._world()[0])
            self._merged = Merged.from_states(states, self.keep_examples)
        return self._merged

    # -- results
    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image values of every image seen (on all ranks), sorted by id: ``id``, ``psnr``,
        ``ssim``, ``mse`` (uint8 scale) and each available ``lpips_*``. A collective under a
        process group."""
        m = self._merge()
        out = {"id": m.ids.copy()}
        out.update({k: v.copy() for k, v in m.values.items() if k not in ("psnr_cap", "npix")})
        return out

    def examples(self) -> dict[str, list[dict]]:
        """The best and worst kept reconstructions by ``rank_by``: lists of dicts with ``id``,
        ``value``, ``original`` and ``reconstruction`` (uint8 (3, H, W) tensors), best first in
        ``best``, worst first in ``worst``. A collective under a process group."""
        m = self._merge()
        conv = (lambda e: {"id": e[1], "value": e[2], "original": e[3], "reconstruction": e[4]})
        return {"best": [conv(e) for e in m.examples["best"]],
                "worst": [conv(e) for e in m.examples["worst"]],
                "ranked_by": self.rank_by}

    def compute(self) -> dict:
        """Every metric over all images seen (all ranks); see the module docstring.

        Under a process group this is a collective: the values are gathered on every rank,
        rank 0 computes the result (the rFID matrix square root once) and broadcasts it."""
        m = self._merge()
        return computed_on_rank0(lambda: self._compute(m), *self._world())

    def _compute(self, m: Merged) -> dict:
        return m.results(protocol=self.protocol, metric_names=self.metric_names, unavailable=self.unavailable,
                         bits_per_pixel=self.bits_per_pixel, net_info=self.net_info)

    # ------------------------------------------------------------------ networks
    def _add_explicit(self, metric: str, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"the network for {metric} must be a torch.nn.Module, got {type(module).__name__}")
        self.nets[metric] = module  # run under flowmo.nets.frozen.evaluating: its own mode is left alone
        self.net_info[metric] = {
            "source": "explicit module given by the caller",
            "note": "weights unknown to the evaluator: comparable to published numbers only if the module "
                    "holds the standard pretrained weights",
        }

    def _add_from_files(self, metric: str, net: str) -> None:
        from flowmo.nets import inception_fid, lpips_alex, lpips_vgg

        found, missing = resolve_net_files(net, self.weights_dir)
        if missing:
            self.unavailable[metric] = unavailable(missing, how_to_get(net, missing, self.weights_dir))
            return
        if net == "inception_fid":
            module = inception_fid(weights_path=found["inception_fid"])
        elif net == "lpips_vgg":
            module = lpips_vgg(weights_path=found["lpips_vgg_heads"], trunk_weights_path=found["vgg16"])
        else:
            module = lpips_alex(weights_path=found["lpips_alex_heads"], trunk_weights_path=found["alexnet"])
        self.nets[metric] = module
        self.net_info[metric] = {"source": "weight files", "files": [str(p) for p in found.values()]}

    def weight_files(self, hashes: bool = True) -> list[dict]:
        """The weight files used: network, file name, path and (with ``hashes``) SHA-256, plus
        whether the hash prefix in a torch hub name matches it (None for names without one)."""
        out = []
        for metric, info in self.net_info.items():
            for p in info.get("files", []):
                entry: dict[str, Any] = {"metric": metric, "file": Path(p).name, "path": str(p)}
                if hashes:
                    sha = self._hash_cache.get(p) or file_sha256(p)
                    self._hash_cache[p] = sha
                    entry["sha256"] = sha
                    entry["name_hash_ok"] = name_hash_ok(Path(p).name, sha)
                out.append(entry)
        return out

    def _net(self, metric: str, device: torch.device) -> nn.Module:
        net = self.nets[metric]
        if self._net_device.get(metric) != device:
            net.to(device)
            self._net_device[metric] = device
        return net

    def _network_inputs(self, originals: Tensor, reconstructions: Tensor, o8: Tensor, r8: Tensor,
                        dev: torch.device) -> tuple[Tensor, Tensor]:
        """The [-1, 1] float32 images LPIPS and Inception see under the protocol."""
        if self.protocol == "release":
            # the release feeds its float images: loader originals, clamped reconstructions, both
            # through (x + 1) / 2 (and back by 2 * y - 1 for LPIPS / inside the FID Inception)
            of = _release_originals(originals).to(dev)
            rf = reconstructions.to(device=dev, dtype=torch.float32).clamp(-1.0, 1.0)
            return ((of + 1.0) / 2.0) * 2.0 - 1.0, ((rf + 1.0) / 2.0) * 2.0 - 1.0
        return o8.to(dev).float() / 127.5 - 1.0, r8.to(dev).float() / 127.5 - 1.0
