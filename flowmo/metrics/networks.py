"""The weight files of the evaluator's networks (LPIPS heads, the FID Inception): finding them,
saying how to get missing ones, and their provenance (SHA-256, torch hub name check)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence, Union



__all__ = ["file_sha256", "name_hash_ok", "resolve_net_files", "how_to_get", "unavailable"]


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
    from flowmo.nets.weight_specs import NET_WEIGHTS, WEIGHT_SPECS
    from flowmo.nets.weights import MissingWeightsError, resolve_weights

    found, missing = {}, []
    for key in NET_WEIGHTS[net]:
        try:
            found[key] = resolve_weights(key, weights_dir)
        except MissingWeightsError:
            missing.append(WEIGHT_SPECS[key].filename)
    return found, missing


def how_to_get(net: str, missing: Sequence[str], weights_dir: Optional[Union[str, os.PathLike]]) -> str:
    """One sentence: where to download the ``missing`` files of ``net`` and where to put them."""
    from flowmo.nets.weights import ENV_VAR, hub_checkpoints_dir
    from flowmo.nets.weight_specs import NET_WEIGHTS, WEIGHT_SPECS

    urls = [f"{WEIGHT_SPECS[k].filename} from {WEIGHT_SPECS[k].url}" for k in NET_WEIGHTS[net]
            if WEIGHT_SPECS[k].filename in missing]
    if weights_dir is not None:
        where = f"the folder {weights_dir} (given as weights_dir / --weights-dir)"
    else:
        where = (f"a folder named by ${ENV_VAR}, or the torch hub cache {hub_checkpoints_dir()}, "
                 "or pass weights_dir / --weights-dir")
    return f"download {'; '.join(urls)} and put {'them' if len(urls) > 1 else 'it'} in {where}"
