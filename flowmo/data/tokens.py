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

Tiled token files (``flowmo tokenize --tiled``: images larger than the model, in tiles of its
size, :meth:`flowmo.FlowMo.tokenize_tiled`) add the metadata ``tiles``: a JSON list with one
:meth:`~flowmo.data.tiles.TileGrid.to_dict` per source; the tokens then hold one row per
tile, the sources' tiles one after another, each source's row-major (so ``tokens`` has
``sum(grid.count)`` rows and ``sources`` one name per image). Files without it read with
``tiles`` None.

Only a discrete tokenizer has tokens: writing a token file for a spec whose bottleneck is
continuous (``kl``, ``identity``), or reading one that records such a spec, raises ValueError
saying so (:func:`flowmo.spec.no_tokens_error`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from .files import atomic_write
from flowmo.data.token_layout import TokenLayout
from flowmo.data.tiles import TileGrid
from flowmo.spec import no_tokens_error
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
    tiles: Optional[list[TileGrid]] = None  # one grid per source; the rows are the sources' tiles in order

    def rows(self, i: int) -> slice:
        """The token rows of source ``i`` (0 <= i < len(sources)): its tiles' rows in a tiled
        file, else row ``i``. IndexError outside."""
        if not 0 <= i < len(self.sources):
            raise IndexError(f"source index {i} out of range for {len(self.sources)} sources")
        if self.tiles is None:
            return slice(i, i + 1)
        return slice(self._starts[i], self._starts[i] + self.tiles[i].count)

    @cached_property
    def _starts(self) -> list[int]:
        out, start = [], 0
        for g in self.tiles or ():
            out.append(start)
            start += g.count
        return out


def write_tokens(path: PathLike, tokens: Tensor, *, spec: Any, sources: Sequence[str], groups: bool,
                 labels: Optional[Tensor] = None, classes: Optional[Sequence[str]] = None,
                 layout: Optional[Any] = None, tokenizer_weights: Optional[str] = None,
                 tiles: Optional[Sequence[TileGrid]] = None) -> Path:
    """Write a token file (see module docstring), atomically, creating parent folders.

    ``tokens``: int64 (N, T), or (N, T, G) when ``groups``; ``sources``: N names. ``labels``
    (int64 (N,), in [0, len(classes))) and ``classes`` (distinct names) come together or not at
    all; ``layout`` is a :class:`~flowmo.data.token_layout.TokenLayout` (or its JSON) whose
    fingerprint must be ``spec``'s; ``tokenizer_weights`` is the tokenizer's
    :func:`~flowmo.state_dicts.token_weights_digest` (64 hex characters) or None (not recorded);
    ``tiles`` one :class:`~flowmo.data.tiles.TileGrid` per source (tiles of the spec's image
    size), the tokens then a row per tile (module docstring; not with ``groups`` or labels).
    TypeError / ValueError naming the argument otherwise (ValueError from
    :func:`~flowmo.data.files.atomic_write` for a ``path`` that is a folder); ValueError for a
    ``spec`` whose bottleneck is continuous (no tokens)."""
    from safetensors.torch import save_file

    if not spec.quantizer.discrete:
        raise no_tokens_error(spec.quantizer.name, "a token file", owner="the spec's",
                              fix="write token files of a discrete tokenizer")

    dims = 3 if groups else 2
    rows = len(sources)
    if tiles is not None:
        if not isinstance(tiles, (list, tuple)) or not tiles:
            raise TypeError(f"tiles must be a non-empty list of TileGrid (one per source), got {type(tiles).__name__}")
        tiles = list(tiles)
        if groups or labels is not None or len(tiles) != len(sources) or not all(
                isinstance(g, TileGrid) and g.tile == spec.image_size for g in tiles):
            raise ValueError(f"tiles must hold one TileGrid of {spec.image_size}-pixel tiles per source "
                             f"({len(sources)}), without groups or labels")
        rows = sum(g.count for g in tiles)
    if tokens.dtype != torch.int64 or tokens.ndim != dims or rows != tokens.shape[0]:
        raise ValueError(f"tokens must be int64 of {dims} dims, {'a row per tile' if tiles else 'a row per source'} "
                         f"({rows}), got {tokens.dtype} {tuple(tokens.shape)}")
    if tokenizer_weights is not None:
        check_weights_digest(tokenizer_weights, "tokenizer_weights")
    if (labels is None) != (classes is None):
        raise ValueError("labels and classes must be given together (labels: int64 (N,), classes: their names)")
    if labels is not None:
        _check_labels(labels, tokens.shape[0], len(_names(classes, "classes", empty=False)))
    layout = layout if layout is None or isinstance(layout, TokenLayout) else TokenLayout.from_json(layout)
    if layout is not None and (layout.fingerprint != spec.fingerprint() or (layout.kind == "group") != groups):
        raise ValueError(f"layout ({layout.kind!r}, {layout.fingerprint}) does not match groups={groups} or the spec")
    meta = {
        "format": TOKEN_FORMAT,
        "version": TOKEN_FORMAT_VERSION,
        "fingerprint": spec.fingerprint(),
        "spec": spec.to_json(),
        "sources": json.dumps(list(sources)),
        "groups": "true" if groups else "false",
    }
    if tokenizer_weights is not None:
        meta["tokenizer_weights"] = tokenizer_weights
    data = {"tokens": tokens.detach().cpu().contiguous()}
    if labels is not None:
        meta["classes"] = json.dumps(list(classes))
        data["labels"] = labels.detach().cpu().contiguous()
    if layout is not None:
        meta["layout"] = layout.to_json()
    if tiles is not None:
        meta["tiles"] = json.dumps([g.to_dict() for g in tiles])
    return atomic_write(Path(path), lambda tmp: save_file(data, str(tmp), metadata=meta))


def _continuous_bottleneck(spec_json: str) -> Optional[str]:
    """The quantizer's name when ``spec_json`` (a token file's ``spec`` metadata) names a
    registered continuous bottleneck; None otherwise, also for a spec that cannot be read here
    (a component registered by a module not imported: the fingerprint checks speak for it)."""
    from flowmo.spec import QuantizerSpec

    try:
        quantizer = QuantizerSpec.model_validate(json.loads(spec_json)["quantizer"])
    except Exception:  # malformed JSON, no quantizer, an unregistered or invalid one
        return None
    return None if quantizer.discrete else quantizer.name


def check_weights_digest(value: Any, name: str) -> str:
    """``value`` if it is a weights digest (:func:`flowmo.state_dicts.weights_digest`: 64 lowercase
    hex characters); TypeError (not a string) / ValueError (another string) naming ``name`` otherwise."""
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        error = ValueError if isinstance(value, str) else TypeError
        raise error(f"{name} must be a weights digest (64 lowercase hex characters), got {value!r:.80}")
    return value


def _names(value: Any, name: str, *, empty: bool) -> list[str]:
    """A list of distinct non-empty strings given as a list or tuple (``empty``: may have none);
    TypeError (not a list of strings) / ValueError (empty, repeated or blank names) naming ``name``."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
        raise TypeError(f"{name} must be a list of names ({name} must hold strings), got {value!r:.60}")
    if (not value and not empty) or len(set(value)) != len(value) or not all(value):
        raise ValueError(f"{name} must be a list of distinct names{'' if empty else ', not empty'}, got {value!r:.60}")
    return list(value)


def _check_labels(labels: Any, n: int, num_classes: int, name: str = "labels") -> None:
    """Refuse ``labels`` unless an int64 (n,) tensor of class indices in [0, num_classes):
    TypeError for another type or dtype, ValueError for another shape or a value out of range."""
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64:
        raise TypeError(f"{name} must be an int64 tensor of shape ({n},), got {getattr(labels, 'dtype', labels)!r:.40}")
    if labels.shape != (n,):
        raise ValueError(f"{name} must be an int64 tensor of shape ({n},), got shape {tuple(labels.shape)}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")


def read_tokens(path: PathLike) -> TokenFile:
    """Read a token file written by :func:`write_tokens`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError (naming the file): another kind of file or folder (the kind found is named),
            not a readable safetensors file, not a flowmo token file or another version, or
            metadata that does not fit the tokens (groups, sources, labels and classes, layout,
            tokenizer weights digest).
    """
    from safetensors import safe_open

    from flowmo.data.folder_kinds import path_kind, wrong_kind

    path = Path(path)
    if path.is_dir() or path_kind(path) in ("safetensors", "config-file"):  # another kind: say which
        raise wrong_kind(path, "token file", "a token file (a .safetensors file of flowmo tokenize)", "token-file")
    if not path.is_file():
        raise FileNotFoundError(f"token file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            tokens = f.get_tensor("tokens") if "tokens" in keys else None
            labels = f.get_tensor("labels") if "labels" in keys else None
    except Exception as e:  # SafetensorError, OSError, and plain exceptions for some malformed headers
        raise ValueError(f"{str(path)!r} is not a readable safetensors file ({_reason(e)})") from None
    if tokens is None:
        raise ValueError(f"{str(path)!r} holds no 'tokens' tensor (it has: {', '.join(keys) or 'nothing'})")
    version = meta.get("version", TOKEN_FORMAT_VERSION)
    if meta.get("format") != TOKEN_FORMAT or "fingerprint" not in meta or version != TOKEN_FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} is not a flowmo token file of version {TOKEN_FORMAT_VERSION} (format "
                         f"{meta.get('format')!r}, version {version!r}); write it with this flowmo's flowmo tokenize")
    bottleneck = _continuous_bottleneck(meta.get("spec", ""))
    if bottleneck is not None:
        raise no_tokens_error(bottleneck, "a token file", owner=f"{str(path)!r} records a tokenizer whose",
                              fix="tokenize the images with a discrete tokenizer")
    groups = meta.get("groups", "false")
    if groups not in ("true", "false") or tokens.dtype != torch.int64 or tokens.ndim != (3 if groups == "true" else 2):
        raise ValueError(f"{str(path)!r}: tokens must be int64 of 2 dims, or 3 with 'groups' metadata \"true\", got "
                         f"{tokens.dtype} {tuple(tokens.shape)} and {groups!r}")
    groups = groups == "true"
    try:
        sources = json.loads(meta.get("sources", "null"))
    except json.JSONDecodeError:
        sources = None
    tiles = _read_tiles(path, meta, tokens.shape[0], groups or labels is not None)
    if sources is None:
        sources = [f"{i:06d}" for i in range(tokens.shape[0] if tiles is None else len(tiles))]
    n = len(tokens) if tiles is None else len(tiles)
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources) or len(sources) != n:
        raise ValueError(f"{str(path)!r}: the 'sources' metadata must list one name per "
                         f"{'token row' if tiles is None else 'tiled image'} ({n})")
    classes = None
    if labels is not None or "classes" in meta:
        try:
            classes = _names(json.loads(meta.get("classes", "null")), "classes", empty=False)
            _check_labels(labels, tokens.shape[0], len(classes))
        except (json.JSONDecodeError, TypeError, ValueError) as e:
            raise ValueError(f"{str(path)!r}: bad labels or classes ({e})") from None
    layout = meta.get("layout")
    weights = meta.get("tokenizer_weights")
    try:
        parsed = None if layout is None else TokenLayout.from_json(layout)
        if weights is not None:
            check_weights_digest(weights, "its 'tokenizer_weights' metadata")
    except (TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: {e}") from None
    if parsed is not None and (parsed.fingerprint != meta["fingerprint"] or (parsed.kind == "group") != groups):
        raise ValueError(f"{str(path)!r}: its layout does not match its fingerprint and groups")
    return TokenFile(tokens, meta["fingerprint"], meta.get("spec", ""), sources, groups, labels, classes, layout,
                     weights, tiles)


def _read_tiles(path: Path, meta: dict, rows: int, grouped_or_labelled: bool) -> Optional[list[TileGrid]]:
    """The ``tiles`` metadata's grids (None when absent); ValueError naming the file when it is
    malformed or does not fit the tokens' rows."""
    if "tiles" not in meta:
        return None
    try:
        entries = json.loads(meta["tiles"])
        if not isinstance(entries, list) or not entries:
            raise ValueError("it must be a non-empty list of tile grids")
        grids = [TileGrid.from_dict(d, f"tile grid {i}") for i, d in enumerate(entries)]
        size = json.loads(meta.get("spec", "{}")).get("image_size")
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
        raise ValueError(f"{str(path)!r}: bad 'tiles' metadata ({e})") from None
    if grouped_or_labelled or any(g.tile != size for g in grids) or sum(g.count for g in grids) != rows:
        raise ValueError(f"{str(path)!r}: its 'tiles' metadata does not fit its tokens ({rows} rows; grids of "
                         f"{size}-pixel tiles with {sum(g.count for g in grids)} tiles in all, no groups or labels)")
    return grids
