"""Reading a weight file safely (``torch.load`` with ``weights_only=True``, a plain mapping of
string keys to tensors or :class:`WeightsFormatError`) and applying a state dict to a module
strictly (every key and shape checked, all problems listed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = ["WeightsFormatError", "read_state_dict", "apply_state_dict"]


class WeightsFormatError(ValueError):
    """A weight file exists but is not an acceptable state dict for the network."""


def _reason(e: Exception) -> str:
    """The informative part of a torch.load error (not torch's advice to bypass safety)."""
    for ln in str(e).splitlines():
        if "Unsupported" in ln:
            ln = ln[ln.index("Unsupported"):]
            return ln.split(". Please")[0].strip()
    inner = e.__cause__ or e.__context__
    if inner is not None and str(inner):
        return f"{type(inner).__name__}: {str(inner).splitlines()[0]}"
    first = str(e).splitlines()[0] if str(e) else ""
    if "Weights only load failed" in first:
        first = "weights_only load failed"
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``torch.load(..., map_location="cpu", weights_only=True)``.

    Anything that is not a plain mapping of string keys to tensors is refused with
    :class:`WeightsFormatError`; pickles that reference arbitrary Python objects are
    rejected by the restricted unpickler before anything is executed.
    """
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # any failure of the restricted load means: not acceptable
        raise WeightsFormatError(
            f"Refused to load weight file {path}: it is not a plain tensor state dict that "
            f"torch.load(weights_only=True) accepts ({_reason(e)}). Nothing in it was executed; "
            "get a genuine copy of the file instead of loading it unrestricted."
        ) from e
    if not isinstance(obj, Mapping):
        raise WeightsFormatError(
            f"Refused weight file {path}: expected a state dict (a mapping of names to tensors), "
            f"got {type(obj).__name__}."
        )
    bad = [repr(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(bad[:10]) + (" ..." if len(bad) > 10 else "")
        raise WeightsFormatError(
            f"Refused weight file {path}: every entry must be a string key with a tensor value; "
            f"offending keys: {shown}."
        )
    return dict(obj)


_OPTIONAL_SUFFIX = ".num_batches_tracked"  # absent from old BatchNorm checkpoints


def apply_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "state dict",
    ignore_prefixes: Iterable[str] = (),
    what: str | None = None,
) -> None:
    """Strictly copy ``state_dict`` into ``module``.

    Every key of ``module.state_dict()`` must be present with the same shape, and no
    other key may be present except those starting with one of ``ignore_prefixes``
    (e.g. a VGG classifier when only the features are used). BatchNorm
    ``num_batches_tracked`` counters may be missing (old checkpoints); they are then
    set to 0. Raises :class:`WeightsFormatError` listing all problems.
    """
    ignore_prefixes = tuple(ignore_prefixes)
    expected = module.state_dict()
    given = {k: v for k, v in state_dict.items() if not (ignore_prefixes and k.startswith(ignore_prefixes))}
    missing = [k for k in expected if k not in given and not k.endswith(_OPTIONAL_SUFFIX)]
    unexpected = [k for k in given if k not in expected]
    mismatched = [
        f"{k}: file {tuple(given[k].shape)} vs network {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        target = type(module).__name__ + (f" ({what})" if what else "")
        parts = [f"Refused weights from {source}: they do not fit {target}:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                shown = items[:20]
                parts.append(f"  {title} ({len(items)}): " + ", ".join(shown) + (" ..." if len(items) > 20 else ""))
        raise WeightsFormatError("\n".join(parts))
    full = dict(given)
    for k, v in expected.items():
        if k not in full:  # only optional counters can get here
            full[k] = torch.zeros_like(v, device="cpu")
    module.load_state_dict(full, strict=True)
