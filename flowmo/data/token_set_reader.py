"""Reading a labelled token set (the folder :class:`flowmo.data.token_shards.TokenShardWriter`
writes; format in :mod:`flowmo.data.token_shards`): the index validated field by field, every
shard checked against it. Also importable from :mod:`flowmo.data.token_shards`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch

from flowmo.data.token_layout import TokenLayout
from flowmo.data.token_shards import INDEX_NAME, TOKEN_SET_VERSION, TokenSet
from flowmo.data.folder_kinds import TOKEN_SET_FORMAT
from .tokens import _names, check_weights_digest, read_tokens

__all__ = ["read_token_set"]

PathLike = Union[str, os.PathLike]


def _bad(folder: Path, why: str) -> ValueError:
    return ValueError(f"token set {str(folder)!r}: {why}")


def _parse_index(index: Any) -> tuple[TokenLayout, list[str], list[dict], tuple[str, ...], Optional[str]]:
    """The checked fields of an index.json: ValueError / TypeError with the reason, KeyError for a
    missing field."""
    if not isinstance(index, dict):
        raise TypeError(f"the index must be a JSON object, got {type(index).__name__}")
    if index.get("format") != TOKEN_SET_FORMAT or index.get("version") != TOKEN_SET_VERSION:
        raise ValueError(f"format is {index.get('format')!r}, version is {index.get('version')!r}; this flowmo reads "
                         f"version {TOKEN_SET_VERSION!r} of {TOKEN_SET_FORMAT!r}")
    if not isinstance(index.get("fingerprint"), str):
        raise TypeError(f"fingerprint must be a string, got {index.get('fingerprint')!r:.60}")
    layout = TokenLayout.from_json(json.dumps(index["layout"]))
    classes = _names(index["classes"], "classes", empty=False)
    augment = tuple(_names(index.get("augment", []), "augment", empty=True))
    shards, count = index["shards"], index["count"]
    if not isinstance(shards, list):
        raise TypeError(f"shards must be a list, got {type(shards).__name__}")
    for k, entry in enumerate(shards):
        if not isinstance(entry, dict):
            raise TypeError(f"shards[{k}] must be an object {{\"file\": ..., \"count\": ...}}, got {entry!r:.60}")
        if not isinstance(entry.get("file"), str) or not entry["file"]:
            raise TypeError(f"shards[{k}].file must be a file name, got {entry.get('file')!r:.60}")
        if type(entry.get("count")) is not int or entry["count"] < 1:
            raise ValueError(f"shards[{k}].count must be a positive integer, got {entry.get('count')!r:.60}")
    if len({e["file"] for e in shards}) != len(shards):
        raise ValueError("a shard is listed twice")
    if type(count) is not int:
        raise TypeError(f"count must be an integer, got {count!r:.60}")
    if count != sum(e["count"] for e in shards):
        raise ValueError(f"count is {count} but its shards' counts sum to {sum(e['count'] for e in shards)}")
    if index.get("tokenizer_weights") is not None:
        check_weights_digest(index["tokenizer_weights"], "tokenizer_weights")
    return layout, classes, shards, augment, index.get("tokenizer_weights")


def read_token_set(path: PathLike) -> TokenSet:
    """Read a token set folder (or one labelled token file, e.g. a single shard).

    The index is checked (format, version :data:`TOKEN_SET_VERSION`, field types, each shard
    listed once, ``count`` the sum of the shards' counts) and every shard against it: the same
    fingerprint, layout, classes and tokenizer weights digest, and the count written there.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: another kind of folder or file (``token set '...' is <kind>, not ...``; for a
            file, ``token file '...' is <kind>, not ...``: a model folder, a run, model weights,
            ...), or a token file without labels; or (``token set '...': ...``, with the reason)
            an incomplete set (no ``index.json``: an interrupted ``flowmo tokenize``), an
            unreadable or malformed index (``unreadable index.json (...)``), a missing or
            inconsistent shard.
    """
    from flowmo.data.folder_kinds import path_kind, wrong_kind

    path = Path(path)
    expected = "a token set folder (flowmo tokenize --classes) or a labelled token file"
    if path.is_file():
        tf = read_tokens(path)  # refuses another kind of file, naming it
        if tf.labels is None or tf.layout is None:
            raise _bad(path, "is a token file without labels and layout; use 'flowmo tokenize --classes'")
        layout = TokenLayout.from_json(tf.layout)
        return TokenSet(layout.to_sequence(tf.tokens), tf.labels, tf.classes, layout, tf.spec_json, tf.sources,
                        tokenizer_weights=tf.tokenizer_weights)
    if not path.is_dir():
        raise FileNotFoundError(f"token set {str(path)!r} does not exist")
    index_path = path / INDEX_NAME
    if not index_path.is_file() and path_kind(path) not in ("partial-token-set", "empty", "folder"):
        raise wrong_kind(path, "token set", expected, "token-set")  # another kind of folder: say which
    if not index_path.is_file():
        raise _bad(path, f"has no {INDEX_NAME}: it is incomplete (an interrupted 'flowmo tokenize'?) or not a token set")
    try:
        index = json.loads(index_path.read_text())
        layout, classes, shards, augment, weights = _parse_index(index)
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise _bad(path, f"unreadable {INDEX_NAME} ({type(e).__name__}: {e})") from None
    if layout.fingerprint != index["fingerprint"]:
        raise _bad(path, "the index's layout and fingerprint disagree")
    if not shards:
        raise _bad(path, "holds no shards")
    seqs, labels, sources, spec_json = [], [], [], ""
    for entry in shards:
        file = path / entry["file"]
        if not file.is_file() or file.parent != path:
            raise _bad(path, f"shard {entry['file']!r} listed in {INDEX_NAME} is missing")
        tf = read_tokens(file)
        if tf.layout is None or TokenLayout.from_json(tf.layout) != layout:  # the layout holds the fingerprint
            raise _bad(path, f"shard {file.name} was written by another tokenizer or in another layout")
        if tf.tokenizer_weights != weights:
            raise _bad(path, f"shard {file.name} records other tokenizer weights than the index ({weights})")
        if tf.classes != classes or tf.labels is None:
            raise _bad(path, f"shard {file.name} has other classes than the index")
        if tf.tokens.shape[0] != entry["count"]:
            raise _bad(path, f"shard {file.name} holds {tf.tokens.shape[0]} rows, the index says {entry['count']}")
        seqs.append(layout.to_sequence(tf.tokens, f"{file.name} tokens"))
        labels.append(tf.labels)
        sources += tf.sources
        spec_json = tf.spec_json
    # each shard's rows were checked against its entry, and the entries against ``count``
    return TokenSet(torch.cat(seqs), torch.cat(labels), classes, layout, spec_json, sources, augment, weights)
