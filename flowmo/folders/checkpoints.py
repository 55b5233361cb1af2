"""Training checkpoints: folders of safetensors + JSON, written atomically, pruned by policy.

A checkpoint is a folder ``ckpt-00001234`` holding ``<part>.safetensors`` files (model,
ema, optimizer, ...) and ``state.json`` (step, data position, optimizer hyper-parameters,
counters). It is written under a temporary name, every file fsync'ed, then renamed into
place: a crash at any moment leaves either the complete new checkpoint or none, and the
previous ones untouched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from flowmo.data.files import fsync_dir, fsync_file

__all__ = [
    "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint", "resolve_checkpoint", "prune_checkpoints",
    "optimizer_to_tensors", "optimizer_from_tensors", "CheckpointError",
]

PREFIX = "ckpt-"
STATE = "state.json"


class CheckpointError(ValueError):
    """A checkpoint folder that is incomplete or does not fit the run."""


def save_checkpoint(root: Path, step: int, parts: Mapping[str, Mapping[str, Tensor]], state: Mapping[str, Any]) -> Path:
    """Write ``root/ckpt-<step>`` atomically and return its path."""
    from safetensors.torch import save_file

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        for name, tensors in parts.items():
            path = tmp / f"{name}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path))
            fsync_file(path)
        (tmp / STATE).write_text(json.dumps(dict(state), indent=1, sort_keys=True))
        fsync_file(tmp / STATE)
        fsync_dir(tmp)
        if final.exists():  # the same step saved again (e.g. a resumed run): replace it
            trash = root / f".old-{PREFIX}{step:08d}-{os.getpid()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``root`` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(PREFIX) and (p / STATE).is_file():
            try:
                out.append((int(p.name[len(PREFIX):]), p))
            except ValueError:
                continue
    return sorted(out)


def latest_checkpoint(root: Path) -> Optional[Path]:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def resolve_checkpoint(source: Path, step: Optional[int] = None, *, kind: str = "run") -> tuple[Path, Path]:
    """(checkpoint folder, run folder) for ``source``: a run folder (its newest complete
    checkpoint, or ``step``'s) or one of its checkpoint folders (``step`` then refused: it names one).

    Raises:
        FileNotFoundError: a run folder without a complete checkpoint, or a missing ``source``.
        ValueError: another kind of folder or file (the message names the kind found and
            ``kind``, e.g. "generator run").
        ValueError: a ``step`` the run has no checkpoint of, or one given with a checkpoint folder.
    """
    source = Path(source)
    if step is not None and (isinstance(step, bool) or not isinstance(step, int)):
        raise TypeError(f"step must be an int (a checkpoint's step) or None, got {step!r}")
    if (source / "checkpoints").is_dir():
        ckpts = dict(list_checkpoints(source / "checkpoints"))
        if not ckpts:
            raise FileNotFoundError(f"{source} has no complete checkpoint")
        if step is not None and step not in ckpts:
            raise ValueError(f"{source} has no checkpoint of step {step}; it has {sorted(ckpts)}")
        return ckpts[step if step is not None else max(ckpts)], source
    if (source / "state.json").is_file():
        if step is not None:
            raise ValueError(f"step {step} applies to a run folder, but {source} is one checkpoint: give its run folder")
        return source, source.parent.parent
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist (expected a {kind} folder or a checkpoint folder)")
    from flowmo.data.folder_kinds import wrong_kind

    raise wrong_kind(source, "", f"a {kind} folder or a checkpoint folder", "run")  # the kind found, named


def load_checkpoint(path: Path, parts: Optional[list[str]] = None) -> tuple[dict[str, dict[str, Tensor]], dict]:
    """Read a checkpoint folder: ({part: tensors}, state)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / STATE).is_file():
        raise CheckpointError(f"{path} is not a complete checkpoint (no {STATE})")
    try:
        state = json.loads((path / STATE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path / STATE} is not valid JSON: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path / STATE} does not hold a JSON object (it holds a {type(state).__name__})")
    names = parts if parts is not None else [p.stem for p in sorted(path.glob("*.safetensors"))]
    out = {}
    for name in names:
        f = path / f"{name}.safetensors"
        if not f.is_file():
            raise CheckpointError(f"{path} has no {f.name}")
        try:
            out[name] = load_file(str(f))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"{f} is not a readable safetensors file: {e}") from None
    return out, state


def prune_checkpoints(root: Path, keep_last: int, keep_every: Optional[int] = None) -> list[Path]:
    """Delete all but the newest ``keep_last`` checkpoints and those whose step is a multiple of
    ``keep_every``. Returns the deleted paths."""
    ckpts = list_checkpoints(root)
    keep = {p for _, p in ckpts[-keep_last:]}
    if keep_every:
        keep |= {p for s, p in ckpts if s % keep_every == 0}
    deleted = []
    for _, p in ckpts:
        if p not in keep:
            shutil.rmtree(p, ignore_errors=True)
            deleted.append(p)
    return deleted


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, names: Mapping[int, str]) -> tuple[dict[str, Tensor], dict]:
    """An optimizer's state as named tensors (``<param name>::<field>``) plus JSON metadata.

    ``names`` maps the optimizer's parameter index to the parameter's name.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, Tensor] = {}
    extra: dict[str, dict] = {}
    for idx, st in sd["state"].items():
        for field, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{names[idx]}::{field}"] = v
            else:
                extra.setdefault(names[idx], {})[field] = v
    groups = []
    for g in sd["param_groups"]:
        g = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
        g["params"] = [names[i] for i in g["params"]]
        groups.append(g)
    return tensors, {"param_groups": groups, "extra": extra}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, names: Mapping[int, str], tensors: Mapping[str, Tensor],
                           meta: Mapping[str, Any]) -> None:
    """Restore what :func:`optimizer_to_tensors` saved into an optimizer over the same named parameters."""
    index = {n: i for i, n in names.items()}
    groups = []
    for g, saved in zip(optimizer.state_dict()["param_groups"], meta["param_groups"]):
        if [names[i] for i in g["params"]] != saved["params"]:
            raise CheckpointError("the checkpoint's optimizer holds different parameters than this run's")
        new = dict(saved)
        new["params"] = g["params"]
        for k, v in g.items():
            if isinstance(v, tuple) and isinstance(new.get(k), list):
                new[k] = tuple(new[k])
        groups.append(new)
    if len(groups) != len(meta["param_groups"]):
        raise CheckpointError("the checkpoint's optimizer has a different number of parameter groups")
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        name, field = key.split("::", 1)
        if name not in index:
            raise CheckpointError(f"the checkpoint's optimizer has state for an unknown parameter {name!r}")
        state.setdefault(index[name], {})[field] = v
    for name, fields in meta.get("extra", {}).items():
        state.setdefault(index[name], {}).update(fields)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
