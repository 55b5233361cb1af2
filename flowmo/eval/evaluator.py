"""A streaming reconstruction evaluator for image tokenizers (FlowMo or any other).

:class:`Evaluator` takes batches of originals and reconstructions (float tensors
(B, 3, H, W) in [-1, 1]) with ``update`` and reports, with ``compute``:

Two protocols (``protocol=``; see :mod:`flowmo.eval.metrics` and docs/evaluation.md):
``"standard"`` (default) and ``"release"``, the released FlowMo evaluation's conventions
(``flowmo/evaluate.py`` of the release), so that figures compare with the paper's Table 1.

* ``psnr``: standard: PSNR per image on the 8-bit images (data range 255, MSE over all
  channels and pixels of the image), averaged over images (``psnr_mean_over_images``).
  An exact reconstruction (MSE 0) has infinite PSNR; in the mean it counts as the PSNR of
  the smallest non-zero MSE an image of that size can have (one channel of one pixel off
  by one level), and ``psnr_exact_images`` says how many there were.
  ``psnr_batches_of_5`` is the PSNR of the pooled MSE of consecutive groups of 5 images
  (in id order) averaged over groups (:func:`~flowmo.eval.metrics.batched_psnr`), the
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
  statistics, the exact distance of :func:`~flowmo.eval.metrics.frechet_distance`,
  never negative). Network inputs per protocol as for LPIPS.
* ``bits_per_pixel``, ``codebook`` (per token group: fraction of codes used, entropy in
  bits, perplexity), ``decoder_calls_per_image`` and ``seconds_per_image`` when known.

8 bits: standard rounds (``round((x + 1) * 127.5)``), so results do not depend on
sub-quantisation noise and equal those on saved PNGs; release truncates in float32 as the
release does (:func:`~flowmo.eval.metrics.quantise_pair`).

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
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..devices import check_device
from ..data.noise import image_noise
from .codebook import DENSE_CODEBOOK_LIMIT, CodeCounts, code_summary, codebook_statistics
from .conventions import (
    CONVENTIONS,
    FID_CONVENTION,
    LPIPS_CONVENTION,
    LPIPS_NETS,
    PSNR5_CONVENTION,
    PSNR_CONVENTION,
    QUANTISATION,
    SSIM_CONVENTION,
)
from .networks import file_sha256, how_to_get, name_hash_ok, resolve_net_files, unavailable
from .metrics import (
    RELEASE_PSNR_BATCH,
    FeatureStats,
    _check_protocol,
    _compute_device,
    _psnr_from_mse,
    _ssim_min_size,
    _ssim_quantised,
    batched_psnr,
    frechet_distance,
    quantise_pair,
    release_originals,
)

__all__ = [
    "Evaluator",
    "evaluate_model",
    "image_noise",
    "codebook_statistics",
    "file_sha256",
    "LPIPS_NETS",
    "DENSE_CODEBOOK_LIMIT",
    # kept importable from here (they live in flowmo.eval.conventions)
    "QUANTISATION",
    "CONVENTIONS",
    "PSNR_CONVENTION",
    "PSNR5_CONVENTION",
    "SSIM_CONVENTION",
    "LPIPS_CONVENTION",
    "FID_CONVENTION",
]

_DATA_RANGE = 255.0


# ---------------------------------------------------------------------------------------------- helpers
def _mean(values: np.ndarray) -> float:
    return math.fsum(values.tolist()) / len(values) if len(values) else float("nan")


def _to_id_array(ids: Any, n: int) -> np.ndarray:
    if isinstance(ids, Tensor):
        if ids.is_floating_point():
            raise ValueError(f"ids must be integers, got dtype {ids.dtype}")
        arr = ids.detach().cpu().numpy()
    else:
        arr = np.asarray(ids)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"ids must be a 1-D sequence of {n} integers (one per image), got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"ids must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


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
            :mod:`flowmo.eval.metrics` and docs/evaluation.md).
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
        lpips = tuple(lpips)
        for name in lpips:
            if name not in LPIPS_NETS:
                raise ValueError(f"lpips heads must be among {sorted(LPIPS_NETS)}, got {name!r}")
        lpips_nets = dict(lpips_nets or {})
        for name in lpips_nets:
            if name not in LPIPS_NETS:
                raise ValueError(f"lpips_nets keys must be among {sorted(LPIPS_NETS)}, got {name!r}")
        if isinstance(keep_examples, bool) or not isinstance(keep_examples, int) or keep_examples < 0:
            raise ValueError(f"keep_examples must be a non-negative int, got {keep_examples!r}")
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
            raise ValueError(f"rank_by must be 'psnr', 'ssim' or an available LPIPS metric "
                             f"({sorted(k for k in self.nets if k.startswith('lpips'))}), got {rank_by!r}")
        self.rank_by = rank_by
        self.reset()

    # -- networks
    def _add_explicit(self, metric: str, module: nn.Module) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"the network for {metric} must be a torch.nn.Module, got {type(module).__name__}")
        module.eval()
        self.nets[metric] = module
        self.net_info[metric] = {
            "source": "explicit module given by the caller",
            "note": "weights unknown to the evaluator: comparable to published numbers only if the module "
                    "holds the standard pretrained weights",
        }

    def _add_from_files(self, metric: str, net: str) -> None:
        from ..nets import inception_fid, lpips_alex, lpips_vgg

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

    # -- state
    def reset(self) -> None:
        """Forget every image seen."""
        self._ids: list[np.ndarray] = []
        self._values: dict[str, list[np.ndarray]] = {k: [] for k in ("psnr", "ssim", "mse", "psnr_cap", "npix")}
        for m in self.nets:
            if m.startswith("lpips"):
                self._values[m] = []
        self._feats = {"real": FeatureStats(), "fake": FeatureStats()} if "rfid" in self.nets else None
        self._codes: Optional[CodeCounts] = None
        self._calls = [0, 0]  # sum over images of decoder calls, images with a count
        self._seconds: list[float] = []
        self._timed_images = 0
        self._examples: dict[str, list] = {"best": [], "worst": []}
        self._n_local = 0
        self._merged: Optional[dict] = None
        if not hasattr(self, "_net_device"):
            self._net_device: dict[str, torch.device] = {}
            self._hash_cache: dict[str, str] = {}

    def _world(self) -> tuple[int, int]:
        import torch.distributed as dist

        use = self.distributed
        active = dist.is_available() and dist.is_initialized()
        if use is None:
            use = active and dist.get_world_size() > 1
        if use and not active:
            raise RuntimeError("distributed=True but no torch.distributed process group is initialised")
        return (dist.get_world_size(), dist.get_rank()) if use else (1, 0)

    # -- update
    @torch.no_grad()
    def update(self, originals: Tensor, reconstructions: Tensor, *, ids: Any = None, tokens: Optional[Tensor] = None,
               codebook: Optional[int] = None, decoder_calls: Optional[Union[int, float]] = None,
               seconds: Optional[float] = None) -> None:
        """Add a batch.

        Args:
            originals, reconstructions: (B, 3, H, W) float tensors in [-1, 1]. The value range rule
                of :mod:`flowmo.eval.metrics`: originals may exceed [-1, 1] by at most 1e-3;
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
        if not isinstance(originals, Tensor) or not isinstance(reconstructions, Tensor):
            raise TypeError("originals and reconstructions must be torch.Tensors")
        if originals.shape != reconstructions.shape:
            raise ValueError(f"reconstructions must have the shape of originals: {tuple(originals.shape)} vs "
                             f"{tuple(reconstructions.shape)}")
        if originals.ndim != 4 or originals.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(originals.shape)}")
        b = originals.shape[0]
        if b == 0:
            return
        world, rank = self._world()
        if ids is None:
            ids_arr = (np.arange(self._n_local, self._n_local + b, dtype=np.int64) * world + rank)
        else:
            ids_arr = _to_id_array(ids, b)
        if tokens is None and self.tokens_fn is not None:
            tokens = self.tokens_fn(originals)
        if tokens is not None:
            self._update_codes(tokens, b, codebook)

        # 8 bits under the protocol (validates finiteness, dtype and device)
        o8, r8 = quantise_pair(originals, reconstructions, self.protocol)
        win = _ssim_min_size(self.protocol)
        if min(originals.shape[-2:]) < win:
            raise ValueError(f"images must be at least {win}x{win} pixels for SSIM ({self.protocol} protocol), "
                             f"got {tuple(originals.shape[-2:])}")
        cdev = _compute_device(o8.device)
        a, b8 = o8.to(device=cdev, dtype=torch.float64), r8.to(device=cdev, dtype=torch.float64)
        mse = (a - b8).square().flatten(1).mean(1)
        self._values["psnr"].append(_psnr_from_mse(mse).cpu().numpy())
        self._values["ssim"].append(_ssim_quantised(a, b8, self.protocol).cpu().numpy())
        self._values["mse"].append(mse.cpu().numpy())
        npix = originals[0].numel()
        self._values["psnr_cap"].append(np.full(b, 10.0 * math.log10(_DATA_RANGE**2 * npix)))
        self._values["npix"].append(np.full(b, npix, dtype=np.int64))

        dev = self.device or originals.device
        of, rf = self._network_inputs(originals, reconstructions, o8, r8, dev)
        for m in self.nets:
            if m.startswith("lpips"):
                v = self._net(m, dev)(of, rf)
                self._values[m].append(v.detach().double().reshape(b).cpu().numpy())
        if self._feats is not None:
            inc = self._net("rfid", dev)
            self._feats["real"].update(inc(of).detach().double().cpu().numpy())
            self._feats["fake"].update(inc(rf).detach().double().cpu().numpy())

        if decoder_calls is not None:
            self._calls[0] += float(decoder_calls) * b
            self._calls[1] += b
        if seconds is not None:
            self._seconds.append(float(seconds))
            self._timed_images += b
        self._ids.append(ids_arr)
        self._n_local += b
        if self.keep_examples:
            key = self._values[self.rank_by][-1] if self.rank_by in self._values else None
            self._keep(ids_arr, key, o8.cpu(), r8.cpu())
        self._merged = None

    def _network_inputs(self, originals: Tensor, reconstructions: Tensor, o8: Tensor, r8: Tensor,
                        dev: torch.device) -> tuple[Tensor, Tensor]:
        """The [-1, 1] float32 images LPIPS and Inception see under the protocol."""
        if self.protocol == "release":
            # the release feeds its float images: loader originals, clamped reconstructions, both
            # through (x + 1) / 2 (and back by 2 * y - 1 for LPIPS / inside the FID Inception)
            of = release_originals(originals).to(dev)
            rf = reconstructions.to(device=dev, dtype=torch.float32).clamp(-1.0, 1.0)
            return ((of + 1.0) / 2.0) * 2.0 - 1.0, ((rf + 1.0) / 2.0) * 2.0 - 1.0
        return o8.to(dev).float() / 127.5 - 1.0, r8.to(dev).float() / 127.5 - 1.0

    def _update_codes(self, tokens: Tensor, b: int, codebook: Optional[int]) -> None:
        if not isinstance(tokens, Tensor) or tokens.is_floating_point() or tokens.dtype == torch.bool:
            raise TypeError("tokens must be an integer torch.Tensor of shape (B, T) or (B, T, G)")
        if tokens.ndim not in (2, 3) or tokens.shape[0] != b:
            raise ValueError(f"tokens must have shape ({b}, T) or ({b}, T, G), got {tuple(tokens.shape)}")
        size = codebook if codebook is not None else self.codebook_size
        if size is None:
            raise ValueError("codebook statistics need the codebook size: pass codebook= to update "
                             "or codebook_size= to Evaluator")
        size = int(size)
        t = tokens.shape[1]
        g = tokens.shape[2] if tokens.ndim == 3 else 1
        idx = tokens.detach().reshape(b * t, g).cpu().numpy().astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f"tokens must lie in [0, {size}), got values in [{idx.min()}, {idx.max()}]")
        if self._codes is None:
            self._codes = CodeCounts(size, g, t)
        elif (self._codes.codebook_size, self._codes.groups, self._codes.tokens_per_image) != (size, g, t):
            raise ValueError("tokens changed layout between batches: codebook size, groups and tokens per image "
                             f"were ({self._codes.codebook_size}, {self._codes.groups}, "
                             f"{self._codes.tokens_per_image}), now ({size}, {g}, {t})")
        self._codes.update(idx)

    # -- examples
    def _goodness(self, values: np.ndarray) -> np.ndarray:
        return -values if self.rank_by.startswith("lpips") else values

    def _keep(self, ids: np.ndarray, key: Optional[np.ndarray], o8: Tensor, r8: Tensor) -> None:
        if key is None:
            return
        good = self._goodness(key)
        new = [(float(good[i]), int(ids[i]), float(key[i]), o8[i].clone(), r8[i].clone()) for i in range(len(ids))]
        self._examples = _select_examples(self._examples["best"] + self._examples["worst"] + new,
                                          self.keep_examples)

    # -- gathering
    def _local_state(self) -> dict:
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
        return {
            "ids": np.concatenate(self._ids) if self._ids else np.zeros(0, dtype=np.int64),
            "values": {k: cat(v) for k, v in self._values.items()},
            "feats": None if self._feats is None else {k: s.state_dict() for k, s in self._feats.items()},
            "codes": self._codes,
            "calls": list(self._calls),
            "seconds": list(self._seconds),
            "timed": self._timed_images,
            "examples": self._examples["best"] + self._examples["worst"],
        }

    def _merge(self) -> dict:
        if self._merged is not None:
            return self._merged
        import torch.distributed as dist

        world, _ = self._world()
        local = self._local_state()
        if world > 1:
            states: list = [None] * world
            dist.all_gather_object(states, local)
        else:
            states = [local]
        ids = np.concatenate([s["ids"] for s in states]).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) and np.any(ids[1:] == ids[:-1]):
            dup = sorted(set(ids[1:][ids[1:] == ids[:-1]].tolist()))[:10]
            raise ValueError(f"image ids must be unique across updates (and ranks); repeated: {dup}")
        values = {k: np.concatenate([s["values"][k] for s in states])[order] for k in local["values"]}
        feats = None
        if local["feats"] is not None:
            feats = {}
            for k in ("real", "fake"):
                acc = FeatureStats()
                for s in states:
                    acc.merge(FeatureStats.from_state_dict(s["feats"][k]))
                feats[k] = acc
        codes = None
        for s in states:
            if s["codes"] is None:
                continue
            if codes is None:
                c = s["codes"]
                codes = CodeCounts(c.codebook_size, c.groups, c.tokens_per_image)
            codes.merge(s["codes"])
        calls = [math.fsum(s["calls"][0] for s in states), sum(s["calls"][1] for s in states)]
        seconds = math.fsum(x for s in states for x in s["seconds"])
        timed = sum(s["timed"] for s in states)
        examples = _select_examples([e for s in states for e in s["examples"]], self.keep_examples)
        self._merged = {"ids": ids, "values": values, "feats": feats, "codes": codes, "calls": calls,
                        "seconds": seconds, "timed": timed, "examples": examples}
        return self._merged

    # -- results
    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image values of every image seen (on all ranks), sorted by id: ``id``, ``psnr``,
        ``ssim``, ``mse`` (uint8 scale) and each available ``lpips_*``. A collective under a
        process group."""
        m = self._merge()
        out = {"id": m["ids"].copy()}
        out.update({k: v.copy() for k, v in m["values"].items() if k not in ("psnr_cap", "npix")})
        return out

    def examples(self) -> dict[str, list[dict]]:
        """The best and worst kept reconstructions by ``rank_by``: lists of dicts with ``id``,
        ``value``, ``original`` and ``reconstruction`` (uint8 (3, H, W) tensors), best first in
        ``best``, worst first in ``worst``. A collective under a process group."""
        m = self._merge()
        conv = (lambda e: {"id": e[1], "value": e[2], "original": e[3], "reconstruction": e[4]})
        return {"best": [conv(e) for e in m["examples"]["best"]],
                "worst": [conv(e) for e in m["examples"]["worst"]],
                "ranked_by": self.rank_by}

    def compute(self) -> dict:
        """Every metric over all images seen (all ranks); see the module docstring.

        Under a process group this is a collective: the values are gathered on every rank,
        rank 0 computes the result (the rFID matrix square root once) and broadcasts it."""
        m = self._merge()
        world, rank = self._world()
        if world == 1:
            return self._compute(m)
        import torch.distributed as dist

        box: list = [None]
        if rank == 0:
            try:
                box[0] = ("ok", self._compute(m))
            except Exception as e:  # noqa: BLE001 - re-raised on every rank
                box[0] = ("error", e)
        dist.broadcast_object_list(box, src=0)
        status, payload = box[0]
        if status == "error":
            raise payload
        return payload

    def _compute(self, m: dict) -> dict:
        n = len(m["ids"])
        v = m["values"]
        out: dict[str, Any] = {"n_images": n}
        if n == 0:
            raise ValueError("no images were given to the evaluator (update was never called with a non-empty batch)")
        out["protocol"] = self.protocol
        p = v["psnr"]
        exact = ~np.isfinite(p)
        per_image_mean = _mean(np.where(exact, v["psnr_cap"], p))
        batches = batched_psnr(v["mse"], RELEASE_PSNR_BATCH, values_per_image=v["npix"])
        out["psnr"] = batches if self.protocol == "release" else per_image_mean
        out["psnr_mean_over_images"] = per_image_mean
        out["psnr_exact_images"] = int(exact.sum())
        out["psnr_batches_of_5"] = batches
        out["ssim"] = _mean(v["ssim"])
        for name in self.metric_names:
            if name in self.unavailable:
                out[name] = dict(self.unavailable[name])
            elif name.startswith("lpips"):
                out[name] = _mean(v[name])
            else:
                out[name] = self._fid(m["feats"])
        if n < 2048 and isinstance(out.get("rfid"), float):
            out["rfid_note"] = (f"rFID from {n} images (< 2048, the feature dimension): the covariances are "
                                "singular; not comparable to values from 50,000 images")
        out["bits_per_pixel"] = self.bits_per_pixel
        out["codebook"] = None if m["codes"] is None else code_summary(m["codes"])
        out["decoder_calls_per_image"] = m["calls"][0] / m["calls"][1] if m["calls"][1] else None
        out["seconds_per_image"] = m["seconds"] / m["timed"] if m["timed"] else None
        out["networks"] = {k: dict(i) for k, i in self.net_info.items()}
        out["conventions"] = dict(CONVENTIONS[self.protocol])
        return out

    @staticmethod
    def _fid(feats: Optional[dict]) -> Any:
        if feats is None:
            return None
        if feats["real"].count < 2:
            return {"available": False, "missing": [], "how": "rFID needs at least 2 images"}
        mu1, s1 = feats["real"].statistics()
        mu2, s2 = feats["fake"].statistics()
        return frechet_distance(mu1, s1, mu2, s2)


def _select_examples(entries: list, k: int) -> dict[str, list]:
    """Best k (largest goodness, then smallest id) and worst k (smallest goodness, then smallest id)."""
    if k == 0 or not entries:
        return {"best": [], "worst": []}
    uniq = {e[1]: e for e in entries}.values()
    best = sorted(uniq, key=lambda e: (-e[0], e[1]))[:k]
    worst = sorted(uniq, key=lambda e: (e[0], e[1]))[:k]
    return {"best": best, "worst": worst}


# the run over a data set lives in flowmo.eval.run (it builds an Evaluator); kept importable from here
from .run import evaluate_model  # noqa: E402
