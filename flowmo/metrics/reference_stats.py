"""A reference set's Inception features and statistics, saved as safetensors with a JSON record.

The generation metrics (:func:`flowmo.metrics.generative.evaluate_generation`) compare generated
images with a reference set. Measuring the reference set (often 50,000 images) is the slow
part and does not change between runs, so it can be measured once and kept in a file:

* tensors (safetensors): ``pool`` float32 (N, 2048), the pool3 features of every reference
  image (precision/recall needs the features themselves, not only their statistics);
  ``pool_mu`` float64 (2048,), ``pool_sigma`` float64 (2048, 2048), ``spatial_mu`` float64
  (2023,) and ``spatial_sigma`` float64 (2023, 2023), the means and N - 1 covariances of the
  pool and sFID spatial features (gFID, sFID);
* the header's metadata: ``format`` (``flowmo.reference_stats``), ``version`` (``1``) and
  ``record``, a JSON object: the number of images, the network that measured them (its weight
  file's name and SHA-256), the feature layers, the image handling and the source.

Loading reads the safetensors file and parses JSON only (no pickle), and checks every key,
shape, dtype and value. The same network must measure the generated images: a file made
with weights of another SHA-256 is refused (:func:`check_network`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from flowmo.metrics.generation import SPATIAL_DIM

__all__ = ["ReferenceStats", "load_reference_stats", "check_network", "FORMAT", "VERSION", "POOL_DIM"]

FORMAT = "flowmo.reference_stats"
VERSION = "1"
POOL_DIM = 2048

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class ReferenceStats:
    """A measured reference set.

    Attributes:
        pool: float32 torch tensor (N, 2048) on the CPU, the pool3 features (N >= 2).
        pool_mu, pool_sigma: float64 numpy arrays (2048,), (2048, 2048): their mean and N - 1
            covariance (as :class:`flowmo.metrics.FeatureStats` computed them).
        spatial_mu, spatial_sigma: float64 numpy arrays (2023,), (2023, 2023): the same of the
            sFID spatial features.
        record: a JSON-serialisable dict: ``n_images``, ``network`` (the weights that measured
            the images), ``feature_layers``, ``images`` (the handling), ``source``.
    """

    pool: torch.Tensor
    pool_mu: np.ndarray
    pool_sigma: np.ndarray
    spatial_mu: np.ndarray
    spatial_sigma: np.ndarray
    record: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int:
        """The number of reference images (rows of :attr:`pool`)."""
        return int(self.pool.shape[0])

    def save(self, path: PathLike) -> Path:
        """Write the file (atomically; parent folders created). ``path`` should end in
        ``.safetensors``. Returns the path. Raises ``ValueError`` if ``path`` is a folder."""
        from safetensors.torch import save_file

        from flowmo.data.files import atomic_write

        tensors = {
            "pool": self.pool.detach().to("cpu", torch.float32).contiguous(),
            "pool_mu": torch.from_numpy(np.ascontiguousarray(self.pool_mu, dtype=np.float64)),
            "pool_sigma": torch.from_numpy(np.ascontiguousarray(self.pool_sigma, dtype=np.float64)),
            "spatial_mu": torch.from_numpy(np.ascontiguousarray(self.spatial_mu, dtype=np.float64)),
            "spatial_sigma": torch.from_numpy(np.ascontiguousarray(self.spatial_sigma, dtype=np.float64)),
        }
        metadata = {"format": FORMAT, "version": VERSION, "record": json.dumps(self.record, sort_keys=True)}
        return atomic_write(Path(path).expanduser(), lambda tmp: save_file(tensors, str(tmp), metadata=metadata),
                            suffix=".safetensors")

    @classmethod
    def load(cls, path: PathLike) -> "ReferenceStats":
        """Read a file written by :meth:`save` (see :func:`load_reference_stats`)."""
        return load_reference_stats(path)


_SHAPES = {
    "pool": None,  # (N >= 2, 2048)
    "pool_mu": (POOL_DIM,),
    "pool_sigma": (POOL_DIM, POOL_DIM),
    "spatial_mu": (SPATIAL_DIM,),
    "spatial_sigma": (SPATIAL_DIM, SPATIAL_DIM),
}


def load_reference_stats(path: PathLike) -> ReferenceStats:
    """Read reference statistics written by :meth:`ReferenceStats.save`.

    Only the safetensors format and JSON are parsed (never pickle). Raises
    ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file for anything
    that is not such a file: not safetensors, another format or version, a missing or
    malformed record, missing tensors, wrong shapes or dtypes, non-finite values or fewer than
    2 images.
    """
    from safetensors import SafetensorError, safe_open

    p = Path(path).expanduser()
    if not p.is_file():
        what, error = ("is not a file", ValueError) if p.exists() else ("does not exist", FileNotFoundError)
        raise error(f"reference statistics file {str(p)!r} {what}")
    name = repr(str(p))
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            if (meta.get("format"), meta.get("version")) != (FORMAT, VERSION):
                raise ValueError(f"{name} is not a flowmo reference statistics file of version {VERSION} ({meta.get('format')!r})")
            missing = [k for k in _SHAPES if k not in set(f.keys())]
            if missing:
                raise ValueError(f"{name} lacks the tensors {', '.join(missing)}")
            tensors = {k: f.get_tensor(k) for k in _SHAPES}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{name} is not a readable safetensors file ({e})") from None
    try:
        record = json.loads(meta.get("record", ""))
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise ValueError(f"{name}: its 'record' metadata must be a JSON object")
    n = tensors["pool"].shape[0] if tensors["pool"].ndim else 0
    for k, t in tensors.items():
        dtype, shape = (torch.float32, (max(n, 2), POOL_DIM)) if k == "pool" else (torch.float64, _SHAPES[k])
        if t.dtype != dtype or tuple(t.shape) != shape or not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: {k!r} must be finite {dtype} of shape {shape}, got {t.dtype} {tuple(t.shape)}")
    if record.get("n_images") not in (None, n):
        raise ValueError(f"{name}: its record says {record.get('n_images')!r} images but 'pool' has {n} rows")
    return ReferenceStats(pool=tensors.pop("pool"), record=record, **{k: t.numpy() for k, t in tensors.items()})


def check_network(stats: ReferenceStats, network: dict, where: str = "reference") -> str:
    """Whether ``stats`` was measured by the network described by ``network`` (the
    ``network`` record :func:`flowmo.metrics.generative.evaluate_generation` writes: ``source``
    and, for weight files, ``files`` with ``sha256``). Returns a sentence for the protocol.

    Raises ``ValueError`` naming ``where`` when both records name weight files and their
    SHA-256 differ (features of different networks are not comparable)."""
    sha_then, sha_now = _sha256s(stats.record.get("network")), _sha256s(network)
    if sha_then and sha_now and sha_then != sha_now:
        raise ValueError(f"{where} statistics were measured with other Inception weights (SHA-256 {sha_then[0]}); remeasure")
    if sha_then and sha_now:
        return "verified: the same weight file (SHA-256) measured the reference and the generated images"
    return ("not verified: the network of the reference statistics or of this run is an explicit module, whose "
            "weights are unknown")


def _sha256s(network: Any) -> list:
    """The SHA-256 of each weight file a ``network`` record lists ([] for anything else)."""
    files = network.get("files", []) if isinstance(network, dict) else []
    return [f.get("sha256") for f in files if isinstance(f, dict)]
