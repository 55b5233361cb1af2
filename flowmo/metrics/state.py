"""The evaluator's state as dataclasses: what one process has accumulated (:class:`Accumulated`,
sent to the other processes as a plain dict) and the state merged over all processes
(:class:`Merged`, sorted by image id), from which ``compute`` derives every metric."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from torch import Tensor

from flowmo.metrics.codebook import CodeCounts, _mean, code_summary
from flowmo.metrics.conventions import CONVENTIONS
from flowmo.metrics.feature_stats import FeatureStats
from flowmo.metrics.frechet import frechet_distance
from flowmo.metrics.pixel import RELEASE_PSNR_BATCH, batched_psnr

__all__ = ["Accumulated", "Merged", "select_examples", "rfid"]


@dataclass
class Accumulated:
    """One process's accumulation: per-image values (lists of per-batch arrays), the FID features'
    running statistics, code counts, decoder calls, timings and the kept examples."""

    ids: list = field(default_factory=list)  # int64 arrays, one per batch
    values: dict = field(default_factory=dict)  # name -> list of float64 arrays, one per batch
    feats: Optional[dict] = None  # {"real", "fake"} -> FeatureStats, or None without rFID
    codes: Optional[CodeCounts] = None
    calls: list = field(default_factory=lambda: [0, 0])  # sum over images of decoder calls, images with a count
    seconds: list = field(default_factory=list)
    timed_images: int = 0
    examples: dict = field(default_factory=lambda: {"best": [], "worst": []})
    n_local: int = 0

    @classmethod
    def empty(cls, lpips_metrics: Sequence[str], *, fid: bool) -> "Accumulated":
        """Nothing seen yet, with a value list per metric (``psnr``, ``ssim``, ``mse``, ``psnr_cap``,
        ``npix`` and each of ``lpips_metrics``) and FID statistics when ``fid``."""
        values: dict = {k: [] for k in ("psnr", "ssim", "mse", "psnr_cap", "npix")}
        values.update({m: [] for m in lpips_metrics})
        feats = {"real": FeatureStats(), "fake": FeatureStats()} if fid else None
        return cls(values=values, feats=feats)

    def portable(self) -> dict:
        """The accumulation as a plain dict of arrays, lists and state dicts (what
        ``all_gather_object`` sends to the other processes)."""
        cat = (lambda xs: np.concatenate(xs) if xs else np.zeros(0))
        return {
            "ids": np.concatenate(self.ids) if self.ids else np.zeros(0, dtype=np.int64),
            "values": {k: cat(v) for k, v in self.values.items()},
            "feats": None if self.feats is None else {k: s.state_dict() for k, s in self.feats.items()},
            "codes": self.codes,
            "calls": list(self.calls),
            "seconds": list(self.seconds),
            "timed": self.timed_images,
            "examples": self.examples["best"] + self.examples["worst"],
        }


@dataclass(frozen=True)
class Merged:
    """Every process's accumulation merged: ``ids`` (int64, sorted) and ``values`` (name -> array in
    the same order), FID statistics, code counts, decoder calls ``[sum, images counted]``, total
    ``seconds`` over ``timed`` images, and the best / worst kept examples."""

    ids: np.ndarray
    values: dict
    feats: Optional[dict]
    codes: Optional[CodeCounts]
    calls: list
    seconds: float
    timed: int
    examples: dict

    @classmethod
    def from_states(cls, states: Sequence[dict], keep_examples: int) -> "Merged":
        """Merge :meth:`Accumulated.portable` dicts (one per process). Raises ValueError when an
        image id occurs twice (across updates or processes)."""
        ids = np.concatenate([s["ids"] for s in states]).astype(np.int64)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        if len(ids) and np.any(ids[1:] == ids[:-1]):
            dup = sorted(set(ids[1:][ids[1:] == ids[:-1]].tolist()))[:10]
            raise ValueError(f"image ids must be unique across updates (and ranks); repeated: {dup}")
        values = {k: np.concatenate([s["values"][k] for s in states])[order] for k in states[0]["values"]}
        feats = None
        if states[0]["feats"] is not None:
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
        examples = select_examples([e for s in states for e in s["examples"]], keep_examples)
        return cls(ids, values, feats, codes, calls, seconds, timed, examples)

    def results(self, *, protocol: str, metric_names: Sequence[str], unavailable: Mapping[str, dict],
                bits_per_pixel: Optional[float], net_info: Mapping[str, dict]) -> dict:
        """Every metric of the merged images (the dict ``Evaluator.compute`` returns): ``protocol``'s
        headline PSNR and SSIM, each of ``metric_names`` (LPIPS heads, ``rfid``; the report of
        ``unavailable`` ones instead), codebook statistics, costs, ``net_info`` and the conventions.
        Raises ValueError when no image was seen."""
        m = self
        n = len(m.ids)
        v = m.values
        out: dict[str, Any] = {"n_images": n}
        if n == 0:
            raise ValueError("no images were given to the evaluator (update was never called with a non-empty batch)")
        out["protocol"] = protocol
        p = v["psnr"]
        exact = ~np.isfinite(p)
        per_image_mean = _mean(np.where(exact, v["psnr_cap"], p))
        batches = batched_psnr(v["mse"], RELEASE_PSNR_BATCH, values_per_image=v["npix"])
        out["psnr"] = batches if protocol == "release" else per_image_mean
        out["psnr_mean_over_images"] = per_image_mean
        out["psnr_exact_images"] = int(exact.sum())
        out["psnr_batches_of_5"] = batches
        out["ssim"] = _mean(v["ssim"])
        for name in metric_names:
            if name in unavailable:
                out[name] = dict(unavailable[name])
            elif name.startswith("lpips"):
                out[name] = _mean(v[name])
            else:
                out[name] = rfid(m.feats)
        if n < 2048 and isinstance(out.get("rfid"), float):
            out["rfid_note"] = (f"rFID from {n} images (< 2048, the feature dimension): the covariances are "
                                "singular; not comparable to values from 50,000 images")
        out["bits_per_pixel"] = bits_per_pixel
        out["codebook"] = None if m.codes is None else code_summary(m.codes)
        out["decoder_calls_per_image"] = m.calls[0] / m.calls[1] if m.calls[1] else None
        out["seconds_per_image"] = m.seconds / m.timed if m.timed else None
        out["networks"] = {k: dict(i) for k, i in net_info.items()}
        out["conventions"] = dict(CONVENTIONS[protocol])
        return out


def select_examples(entries: list, k: int) -> dict[str, list]:
    """Of (goodness, id, value, original, reconstruction) entries, one per id: the best k (largest
    goodness, then smallest id) and the worst k (smallest goodness, then smallest id)."""
    if k == 0 or not entries:
        return {"best": [], "worst": []}
    uniq = {e[1]: e for e in entries}.values()
    best = sorted(uniq, key=lambda e: (-e[0], e[1]))[:k]
    worst = sorted(uniq, key=lambda e: (e[0], e[1]))[:k]
    return {"best": best, "worst": worst}


def rfid(feats: Optional[dict]) -> Any:
    """The Frechet distance of the real and fake feature statistics (None without rFID; a report
    when fewer than 2 images were seen)."""
    if feats is None:
        return None
    if feats["real"].count < 2:
        return {"available": False, "missing": [], "how": "rFID needs at least 2 images"}
    mu1, s1 = feats["real"].statistics()
    mu2, s2 = feats["fake"].statistics()
    return frechet_distance(mu1, s1, mu2, s2)


def _to_id_array(ids: Any, n: int) -> np.ndarray:
    """``ids`` (one integer per image: a tensor or a sequence of ``n``) as an int64 array."""
    arr = ids.detach().cpu().numpy() if isinstance(ids, Tensor) else np.asarray(ids)
    if arr.shape != (n,) or arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"ids must be a 1-D sequence of {n} integers (one per image), got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64)
