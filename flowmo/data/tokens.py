"""Token files: the output of ``flowmo tokenize`` and the input of ``flowmo detokenize``.

A token file is a safetensors file with one int64 tensor ``tokens`` ((N, T), or (N, T, G)
for entropy-group indices) and string metadata: ``format`` (``flowmo-tokens``),
``version``, ``fingerprint`` (the model spec's :meth:`~flowmo.FlowMoSpec.fingerprint`),
``spec`` (the full spec JSON), ``sources`` (a JSON list of the source images' relative
names) and ``groups`` (``"true"``/``"false"``). Also importable from :mod:`flowmo.io`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import torch
from torch import Tensor

from .files import atomic_write

__all__ = ["TokenFile", "TOKEN_FORMAT", "TOKEN_FORMAT_VERSION", "write_tokens", "read_tokens"]

PathLike = Union[str, os.PathLike]

TOKEN_FORMAT = "flowmo-tokens"
TOKEN_FORMAT_VERSION = "1"


def _reason(e: BaseException) -> str:
    msg = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


@dataclass(frozen=True)
class TokenFile:
    tokens: Tensor  # int64 (N, T) or (N, T, G)
    fingerprint: str
    spec_json: str
    sources: list[str]
    groups: bool


def write_tokens(path: PathLike, tokens: Tensor, *, spec: Any, sources: Sequence[str], groups: bool) -> Path:
    """Write a token file (see module docstring), atomically, creating parent folders."""
    from safetensors.torch import save_file

    if tokens.dtype != torch.int64:
        raise TypeError(f"tokens must be int64, got {tokens.dtype}")
    if tokens.ndim != (3 if groups else 2):
        raise ValueError(f"tokens must have {3 if groups else 2} dimensions, got shape {tuple(tokens.shape)}")
    if len(sources) != tokens.shape[0]:
        raise ValueError(f"{len(sources)} source names for {tokens.shape[0]} token rows")
    meta = {
        "format": TOKEN_FORMAT,
        "version": TOKEN_FORMAT_VERSION,
        "fingerprint": spec.fingerprint(),
        "spec": spec.to_json(),
        "sources": json.dumps(list(sources)),
        "groups": "true" if groups else "false",
    }
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"token output {str(path)!r} is a folder; give a file name such as tokens.safetensors")
    data = {"tokens": tokens.detach().cpu().contiguous()}
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=meta))


def read_tokens(path: PathLike) -> TokenFile:
    """Read a token file written by :func:`write_tokens`; ValueError (naming the file) for
    anything else."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if "tokens" not in keys:
                raise ValueError(f"{str(path)!r} holds no 'tokens' tensor (it has: {', '.join(keys) or 'nothing'})")
            tokens = f.get_tensor("tokens")
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({_reason(e)})") from None
    except Exception as e:  # safetensors raises plain exceptions for some malformed headers
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({_reason(e)})") from None
    if meta.get("format") != TOKEN_FORMAT or "fingerprint" not in meta:
        raise ValueError(f"{str(path)!r} is not a flowmo token file (no '{TOKEN_FORMAT}' metadata); "
                         "write one with 'flowmo tokenize'")
    groups = meta.get("groups", "false") == "true"
    if tokens.dtype != torch.int64 or tokens.ndim != (3 if groups else 2):
        raise ValueError(f"{str(path)!r}: tokens must be int64 with {3 if groups else 2} dimensions, "
                         f"got {tokens.dtype} {tuple(tokens.shape)}")
    try:
        sources = json.loads(meta.get("sources", "null"))
    except json.JSONDecodeError:
        sources = None
    if sources is None:
        sources = [f"{i:06d}" for i in range(tokens.shape[0])]
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources) or len(sources) != tokens.shape[0]:
        raise ValueError(f"{str(path)!r}: the 'sources' metadata must list one name per token row "
                         f"({tokens.shape[0]})")
    return TokenFile(tokens, meta["fingerprint"], meta.get("spec", ""), sources, groups)
