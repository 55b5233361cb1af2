"""Token files: the output of ``flowmo tokenize`` and the input of ``flowmo detokenize``.

A token file is a safetensors file with one int64 tensor ``tokens`` ((N, T), or (N, T, G)
for entropy-group indices) and string metadata: ``format`` (``flowmo-tokens``),
``version``, ``fingerprint`` (the model spec's :meth:`~flowmo.FlowMoSpec.fingerprint`),
``spec`` (the full spec JSON), ``sources`` (a JSON list of the source images' relative
names) and ``groups`` (``"true"``/``"false"``).

Labelled token files (the data of a class-conditional generator, see
:mod:`flowmo.data.token_shards`) add an int64 tensor ``labels`` (N,) with values in
[0, len(classes)) and the metadata ``classes`` (a JSON list of class names) and ``layout``
(:meth:`flowmo.data.token_layout.TokenLayout.to_json`). Files without them read as before,
with ``labels``, ``classes`` and ``layout`` None.

``flowmo tokenize`` also records ``tokenizer_weights``, the digest of the weights that make the
tokens (:func:`flowmo.state_dicts.token_weights_digest`, the encoder's and quantizer's: 64 hex
characters; files written before it record the whole model's :func:`~flowmo.state_dicts.weights_digest`,
also accepted), so tokens are not decoded by a tokenizer of the same spec but another encoder; files without it read with ``tokenizer_weights``
None (only the spec fingerprint is then checked).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .files import atomic_write
from flowmo.data.folder_kinds import TOKEN_FORMAT

__all__ = ["TokenFile", "TOKEN_FORMAT_VERSION", "write_tokens", "read_tokens", "check_weights_digest"]

PathLike = Union[str, os.PathLike]

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
    labels: Optional[Tensor] = None  # int64 (N,), class indices into ``classes``
    classes: Optional[list[str]] = None
    layout: Optional[str] = None  # TokenLayout JSON
    tokenizer_weights: Optional[str] = None  # flowmo.state_dicts.token_weights_digest of the tokenizer


def write_tokens(path: PathLike, tokens: Tensor, *, spec: Any, sources: Sequence[str], groups: bool,
                 labels: Optional[Tensor] = None, classes: Optional[Sequence[str]] = None,
                 layout: Optional[Any] = None, tokenizer_weights: Optional[str] = None) -> Path:
    """Write a token file (see module docstring), atomically, creating parent folders.

    ``labels`` (int64 (N,), in [0, len(classes))) and ``classes`` come together or not at all;
    ``layout`` is a :class:`~flowmo.data.token_layout.TokenLayout` (or its JSON) whose fingerprint
    must be ``spec``'s; ``tokenizer_weights`` is the tokenizer's
    :func:`~flowmo.state_dicts.token_weights_digest` (64 hex characters) or None (not recorded).
    TypeError / ValueError naming the argument otherwise."""
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
    if tokenizer_weights is not None:
        meta["tokenizer_weights"] = check_weights_digest(tokenizer_weights, "tokenizer_weights")
    data = {"tokens": tokens.detach().cpu().contiguous()}
    if (labels is None) != (classes is None):
        raise ValueError("labels and classes must be given together (labels: int64 (N,), classes: their names)")
    if labels is not None:
        _check_labels(labels, list(classes), tokens.shape[0], "labels")
        meta["classes"] = json.dumps(list(classes))
        data["labels"] = labels.detach().cpu().contiguous()
    if layout is not None:
        from flowmo.data.token_layout import TokenLayout

        layout = layout if isinstance(layout, TokenLayout) else TokenLayout.from_json(layout)
        if layout.fingerprint != meta["fingerprint"]:
            raise ValueError(f"layout's fingerprint {layout.fingerprint} is not the spec's {meta['fingerprint']}")
        if (layout.kind == "group") != groups:
            raise ValueError(f"a {layout.kind!r} layout does not match groups={groups}")
        meta["layout"] = layout.to_json()
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"token output {str(path)!r} is a folder; give a file name such as tokens.safetensors")
    return atomic_write(path, lambda tmp: save_file(data, str(tmp), metadata=meta))


def check_weights_digest(value: Any, name: str) -> str:
    """``value`` if it is a weights digest (:func:`flowmo.state_dicts.weights_digest`: 64 lowercase
    hex characters); TypeError / ValueError naming ``name`` otherwise."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a weights digest (a string of 64 hex characters), got {type(value).__name__}")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"{name} must be a weights digest (64 lowercase hex characters), got {value!r:.80}")
    return value


def _check_labels(labels: Any, classes: list, n: int, name: str) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (n,):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be an int64 tensor of shape ({n},), got {got}")
    if not classes or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes must be a non-empty list of distinct names, got {classes!r}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= len(classes)):
        raise ValueError(f"{name} must lie in [0, {len(classes)}) (one per class), "
                         f"got [{int(labels.min())}, {int(labels.max())}]")


def read_tokens(path: PathLike) -> TokenFile:
    """Read a token file written by :func:`write_tokens`; ValueError (naming the file) for
    anything else."""
    from safetensors import SafetensorError, safe_open

    from flowmo.data.folder_kinds import path_kind, wrong_kind

    path = Path(path)
    expected = "a token file (a .safetensors file written by flowmo tokenize)"
    if path.is_dir():
        raise wrong_kind(path, "token file", expected, "token-file")
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist")
    if path_kind(path) in ("safetensors", "config-file"):  # readable, of another kind: say which
        raise wrong_kind(path, "token file", expected, "token-file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if "tokens" not in keys:
                raise ValueError(f"{str(path)!r} holds no 'tokens' tensor (it has: {', '.join(keys) or 'nothing'})")
            tokens = f.get_tensor("tokens")
            labels = f.get_tensor("labels") if "labels" in keys else None
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({_reason(e)})") from None
    except Exception as e:  # safetensors raises plain exceptions for some malformed headers
        if isinstance(e, ValueError) and str(path) in str(e):
            raise
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({_reason(e)})") from None
    if meta.get("format") != TOKEN_FORMAT or "fingerprint" not in meta:
        raise ValueError(f"{str(path)!r} is not a flowmo token file (no '{TOKEN_FORMAT}' metadata); "
                         "write one with 'flowmo tokenize'")
    if meta.get("version", TOKEN_FORMAT_VERSION) != TOKEN_FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} is a token file of version {meta.get('version')!r}; this flowmo reads "
                         f"version {TOKEN_FORMAT_VERSION} (upgrade flowmo to read it)")
    if meta.get("groups", "false") not in ("true", "false"):
        raise ValueError(f"{str(path)!r}: its 'groups' metadata must be \"true\" or \"false\", got {meta.get('groups')!r}")
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
    classes = None
    if labels is not None or "classes" in meta:
        try:
            classes = json.loads(meta.get("classes", "null"))
            _check_labels(labels, classes, tokens.shape[0], "labels")
        except (json.JSONDecodeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: bad labels or classes ({e})") from None
    layout = meta.get("layout")
    if layout is not None:
        from flowmo.data.token_layout import TokenLayout

        try:
            parsed = TokenLayout.from_json(layout)
        except ValueError as e:
            raise ValueError(f"{str(path)!r}: {e}") from None
        if parsed.fingerprint != meta["fingerprint"] or (parsed.kind == "group") != groups:
            raise ValueError(f"{str(path)!r}: its layout does not match its fingerprint and groups")
    weights = meta.get("tokenizer_weights")
    if weights is not None:
        try:
            check_weights_digest(weights, "its 'tokenizer_weights' metadata")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: {e}") from None
    return TokenFile(tokens, meta["fingerprint"], meta.get("spec", ""), sources, groups, labels, classes, layout,
                     weights)
