"""Finding, safely reading and strictly applying pretrained weight files.

Every network in :mod:`flowmo.nets` gets its weights through :func:`load_weights`,
which

1. resolves the file with :func:`resolve_weights`, searching in order
   (a) the explicit ``weights_path`` given by the caller (a file, or a folder that
       holds the file under its standard name),
   (b) every folder in ``$FLOWMO_WEIGHTS_DIR`` (``os.pathsep``-separated),
   (c) the torch hub cache ``$TORCH_HOME/hub/checkpoints``
       (default ``~/.cache/torch/hub/checkpoints``; whatever ``torch.hub.get_dir()`` says),
   (d) for the LPIPS heads only: ``weights/v0.1/{vgg,alex}.pth`` inside the installed
       ``lpips`` package, if Python can find that package (it is located, not imported);
2. reads it with ``torch.load(path, map_location="cpu", weights_only=True)`` and nothing
   else, so a pickle that tries to run code is refused instead of executed;
3. checks keys and shapes strictly against the module and raises
   :class:`WeightsFormatError` listing every missing, unexpected and mismatched key.

A file that cannot be found raises :class:`MissingWeightsError` (a ``FileNotFoundError``)
naming the file, every place searched and where to put it. Nothing here downloads
anything and nothing ever falls back to random weights: random weights are only
obtained by asking for them explicitly (``pretrained=False`` in the constructors).

This module finds the files and composes the steps (:func:`load_weights`,
:func:`instantiate`); it re-exports the rest, which lives in :mod:`flowmo.nets.weight_specs`
(which files each network needs), :mod:`flowmo.nets.weight_io` (reading and applying a
state dict) and :mod:`flowmo.nets.frozen` (:func:`freeze`, :class:`Freezable`,
:class:`TappedTrunk`).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import torch
from torch import nn

from .frozen import freeze
from .weight_io import apply_state_dict, read_state_dict
from .weight_specs import _spec

__all__ = [
    "ENV_VAR", "hub_checkpoints_dir", "MissingWeightsError", "search_locations", "resolve_weights",
    "load_weights", "instantiate",
]

ENV_VAR = "FLOWMO_WEIGHTS_DIR"

M = TypeVar("M", bound=nn.Module)


class MissingWeightsError(FileNotFoundError):
    """A required weight file is not in any of the searched places."""


def hub_checkpoints_dir() -> Path:
    """The torch hub cache's ``checkpoints`` folder, where weight files are also looked for."""
    # torch.hub.get_dir() honours torch.hub.set_dir, $TORCH_HOME and $XDG_CACHE_HOME;
    # it only computes a path (no network, no directory creation).
    return Path(torch.hub.get_dir()).expanduser() / "checkpoints"


def _lpips_package_dir() -> Path | None:
    """Folder of the installed ``lpips`` package, located without importing it."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            return Path(loc)
    if spec.origin:
        return Path(spec.origin).parent
    return None


def search_locations(key: str, weights_path: str | os.PathLike | None = None) -> list[tuple[str, list[Path]]]:
    """The places searched for weight ``key``, in order, as ``(label, candidate files)``.

    A place whose candidate list is empty is reported but holds nothing to try
    (e.g. ``$FLOWMO_WEIGHTS_DIR`` not set).
    """
    spec = _spec(key)
    places: list[tuple[str, list[Path]]] = []
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if p.is_dir():
            places.append((f"explicit weights_path folder {p}", [p / n for n in spec.names]))
        else:
            places.append((f"explicit weights_path {p}", [p]))
        return places  # an explicit path is authoritative: no silent fallback elsewhere
    env = os.environ.get(ENV_VAR, "")
    env_dirs = [Path(d).expanduser() for d in env.split(os.pathsep) if d.strip()]
    if env_dirs:
        for d in env_dirs:
            places.append((f"${ENV_VAR} folder {d}", [d / n for n in spec.names]))
    else:
        places.append((f"${ENV_VAR} (not set)", []))
    hub = hub_checkpoints_dir()
    places.append((f"torch hub cache {hub}", [hub / n for n in spec.names]))
    if spec.lpips_package_path is not None:
        pkg = _lpips_package_dir()
        if pkg is None:
            places.append(("installed lpips package (not installed)", []))
        else:
            f = pkg.joinpath(*spec.lpips_package_path)
            places.append((f"installed lpips package {pkg}", [f]))
    return places


def resolve_weights(key: str, weights_path: str | os.PathLike | None = None) -> Path:
    """Path of the weight file ``key`` (see module docstring for the search order).

    Raises :class:`MissingWeightsError` naming the file, every place searched and where
    to put it.
    """
    spec = _spec(key)
    places = search_locations(key, weights_path)
    for _label, candidates in places:
        for c in candidates:
            if c.is_file():
                return c
    hub = hub_checkpoints_dir()
    lines = [
        f"Missing weights file {spec.filename!r} ({spec.description}).",
    ]
    if spec.alternatives:
        lines.append(f"Also accepted under the names: {', '.join(spec.alternatives)}.")
    lines.append("Searched:")
    for label, candidates in places:
        if candidates:
            for c in candidates:
                lines.append(f"  - {c}  [{label}]")
        else:
            lines.append(f"  - {label}")
    lines.append(
        f"Fix: download {spec.filename} from {spec.url} and put it in {hub} or in "
        f"${ENV_VAR} (a folder), or pass its path as weights_path=..."
    )
    lines.append("No download is attempted and random weights are never used silently.")
    raise MissingWeightsError("\n".join(lines))


def load_weights(
    module: nn.Module,
    key: str,
    weights_path: str | os.PathLike | None = None,
    *,
    ignore_prefixes: Iterable[str] = (),
) -> Path:
    """Resolve, safely read and strictly apply weight file ``key`` to ``module``.

    Returns the path that was loaded.
    """
    path = resolve_weights(key, weights_path)
    state_dict = read_state_dict(path)
    apply_state_dict(
        module, state_dict, source=str(path), ignore_prefixes=ignore_prefixes, what=_spec(key).description
    )
    return path


def instantiate(
    factory: Callable[[], M],
    key: str,
    weights_path: str | os.PathLike | None = None,
    pretrained: bool = True,
    *,
    frozen: bool = True,
    ignore_prefixes: Iterable[str] = (),
) -> M:
    """Build ``factory()`` with weight file ``key`` (``pretrained=True``) or with its own
    random initialisation (``pretrained=False``, explicit), then :func:`freeze` it if
    ``frozen``.

    With ``pretrained=True`` the file is found and read *before* the network is built,
    so a missing or bad file fails fast, and the network is built on the meta device
    (no wasted random init): the strict check guarantees the file covers every
    parameter and buffer, and ``factory`` must not create non-persistent buffers.
    """
    if pretrained:
        path = resolve_weights(key, weights_path)
        state_dict = read_state_dict(path)
        with torch.device("meta"):
            net = factory()
        net = net.to_empty(device="cpu")
        apply_state_dict(
            net, state_dict, source=str(path), ignore_prefixes=ignore_prefixes, what=_spec(key).description
        )
    else:
        if weights_path is not None:
            raise ValueError("weights_path was given with pretrained=False; drop one of them")
        net = factory()
    if frozen:
        freeze(net)
    return net
