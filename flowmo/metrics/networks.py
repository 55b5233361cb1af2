"""The evaluator's networks (LPIPS heads, the FID Inception): finding their weight files, saying
how to get missing ones, and the files' provenance (SHA-256, torch hub name check)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from flowmo.metrics.eight_bit import release_originals

__all__ = ["NetworksMixin", "file_sha256", "name_hash_ok", "resolve_net_files", "how_to_get", "unavailable"]


def file_sha256(path: Union[str, os.PathLike], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def name_hash_ok(filename: str, sha: str) -> Optional[bool]:
    """torch hub names end in ``-<first hex digits of the sha256>``; None when a name has none."""
    stem = Path(filename).name.split(".")[0]
    tail = stem.rsplit("-", 1)[-1] if "-" in stem else ""
    if len(tail) >= 6 and all(c in "0123456789abcdef" for c in tail):
        return sha.startswith(tail)
    return None


def unavailable(missing: Sequence[str], how: str) -> dict:
    """The report of a metric whose weight files are missing."""
    return {"available": False, "missing": list(missing), "how": how}


def resolve_net_files(net: str, weights_dir: Optional[Union[str, os.PathLike]]) -> tuple[dict, list]:
    """{weight key: path} of the files ``net`` needs, and the file names that are missing."""
    from flowmo.nets.weights import NET_WEIGHTS, WEIGHT_SPECS, MissingWeightsError, resolve_weights

    found, missing = {}, []
    for key in NET_WEIGHTS[net]:
        try:
            found[key] = resolve_weights(key, weights_dir)
        except MissingWeightsError:
            missing.append(WEIGHT_SPECS[key].filename)
    return found, missing


def how_to_get(net: str, missing: Sequence[str], weights_dir: Optional[Union[str, os.PathLike]]) -> str:
    """One sentence: where to download the ``missing`` files of ``net`` and where to put them."""
    from flowmo.nets.weights import ENV_VAR, NET_WEIGHTS, WEIGHT_SPECS, hub_checkpoints_dir

    urls = [f"{WEIGHT_SPECS[k].filename} from {WEIGHT_SPECS[k].url}" for k in NET_WEIGHTS[net]
            if WEIGHT_SPECS[k].filename in missing]
    if weights_dir is not None:
        where = f"the folder {weights_dir} (given as weights_dir / --weights-dir)"
    else:
        where = (f"a folder named by ${ENV_VAR}, or the torch hub cache {hub_checkpoints_dir()}, "
                 "or pass weights_dir / --weights-dir")
    return f"download {'; '.join(urls)} and put {'them' if len(urls) > 1 else 'it'} in {where}"


class NetworksMixin:
    """The :class:`~flowmo.metrics.Evaluator`'s networks: explicit modules or ones built from weight
    files (reported as unavailable, with how to get them, when files are missing), moved to the
    images' device on use, the provenance of the files used, and the images they see."""

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
            of = release_originals(originals).to(dev)
            rf = reconstructions.to(device=dev, dtype=torch.float32).clamp(-1.0, 1.0)
            return ((of + 1.0) / 2.0) * 2.0 - 1.0, ((rf + 1.0) / 2.0) * 2.0 - 1.0
        return o8.to(dev).float() / 127.5 - 1.0, r8.to(dev).float() / 127.5 - 1.0
