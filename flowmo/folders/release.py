"""Loading the released FlowMo-Lo / FlowMo-Hi checkpoints (``flowmo_lo.pth``, ``flowmo_hi.pth``).

A released checkpoint is a ``torch.save`` dict with ``model_ema_state_dict`` (the weights to
use), ``model_state_dict`` and ``total_steps``. It is read with ``weights_only=True`` only, so
a file carrying code is refused, never executed. Our modules use the release's key names,
so the mapping only strips wrapper prefixes (``module.`` from DDP, ``_orig_mod.`` from
``torch.compile``).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from flowmo.presets import release_spec
from flowmo.spec import FlowMoSpec, LFQSpec, MMDiTSpec

__all__ = [
    "NotACheckpointError",
    "spec_from_release_config",
    "spec_from_reference_meta",
    "load_release_state_dict",
    "map_release_state_dict",
    "infer_release_spec",
]

PathLike = Union[str, os.PathLike]

# configuration keys of the release -> argument of release_spec
_CONFIG_KEYS = {
    "model.mup_width": "mup_width",
    "model.enc_mup_width": "enc_mup_width",
    "model.enc_depth": "enc_depth",
    "model.dec_depth": "dec_depth",
    "model.code_length": "code_length",
    "model.context_dim": "context_dim",
    "model.codebook_size_for_entropy": "codebook_size_for_entropy",
    "model.patch_size": "patch_size",
    "model.posttrain_sample_k": "posttrain_sample_k",
    "data.image_size": "image_size",
}
# the release's entropy group size for its two bit widths
_RELEASE_GROUP_BITS = {18: 9, 56: 14}


class NotACheckpointError(ValueError):
    """A file that is not a FlowMo release checkpoint (or that would need unpickling code)."""


def spec_from_release_config(overrides: Union[Mapping[str, Any], Sequence[str]]) -> FlowMoSpec:
    """The spec for the release's configuration values, given as ``{"model.mup_width": 2, ...}``
    or as ``["model.mup_width=2", ...]`` (unlisted values take the release's defaults)."""
    if isinstance(overrides, Mapping):
        items = dict(overrides)
    else:
        items = {}
        for s in overrides:
            if "=" not in s:
                raise ValueError(f"config override {s!r} must look like key=value")
            k, v = s.split("=", 1)
            items[k.strip()] = v.strip()
    kwargs: dict[str, int] = {}
    for k, v in items.items():
        if k not in _CONFIG_KEYS:
            raise ValueError(f"unknown release config key {k!r}; known: {', '.join(sorted(_CONFIG_KEYS))}")
        kwargs[_CONFIG_KEYS[k]] = int(v)
    return release_spec(**kwargs)


def spec_from_reference_meta(meta: Union[Mapping[str, Any], PathLike]) -> FlowMoSpec:
    """The spec described by a reference folder's ``meta.json`` (its ``derived`` sizes)."""
    if not isinstance(meta, Mapping):
        meta = json.loads(Path(meta).read_text())
    d = meta["derived"] if "derived" in meta else meta
    scale = str(d.get("attention_scale", "8 / head_dim")).replace(" ", "")
    if scale == "8/head_dim":
        attn: Any = "mup"
    elif scale in ("1/sqrt(head_dim)", "head_dim**-0.5"):
        attn = "standard"
    else:
        attn = float(scale)

    def backbone(prefix: str, depth_key: str) -> MMDiTSpec:
        return MMDiTSpec(width=d[f"{prefix}_hidden"], heads=d[f"{prefix}_heads"], depth=d[depth_key],
                         axes_dim=tuple(d[f"{prefix}_axes_dim"]), attn_scale=attn)

    quantizer = LFQSpec(
        group_bits=d["codebook_size_for_entropy"],
        entropy_weight=d.get("entropy_loss_weight", 0.0025),
        commit_weight=d.get("commit_loss_weight", 0.000625),
    )
    return FlowMoSpec.model_validate({
        "image_size": d["image_size"],
        "patch_size": d["patch_size"],
        "code_length": d["code_length"],
        "code_channels": d["context_dim"],
        "encoder": backbone("encoder", "enc_depth"),
        "decoder": backbone("decoder", "dec_depth"),
        "quantizer": quantizer,
        "posttrain": {"name": "mode_seeking", "k": d.get("posttrain_sample_k", 8)},
    })


def map_release_state_dict(state: Mapping[str, Any]) -> dict[str, Tensor]:
    """Release keys -> ours: identical names; wrapper prefixes (``module.``, ``_orig_mod.``) removed."""
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(k, str) or not isinstance(v, Tensor):
            raise NotACheckpointError(f"state dict entry {k!r} is not a named tensor ({type(v).__name__})")
        nk = k.replace("_orig_mod.", "")
        while nk.startswith("module."):
            nk = nk[len("module."):]
        if nk in out:
            raise NotACheckpointError(f"two entries map to the key {nk!r}")
        out[nk] = v
    return out


def load_release_state_dict(path: PathLike, *, weights: str = "ema") -> dict[str, Tensor]:
    """Read a released checkpoint with ``torch.load(..., weights_only=True)`` and return the
    EMA (``weights="ema"``, the default) or raw (``weights="raw"``) state dict, keys mapped."""
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {str(p)!r} does not exist")
    _verify_zip_checksums(p)
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = str(e).split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if str(e) else ""
        raise NotACheckpointError(f"{p} was refused: it is not a checkpoint of plain tensors and containers (read with "
                                  f"weights_only=True, nothing in it ran; {detail})") from None
    except Exception as e:  # truncated zip, random bytes, wrong format, ...
        raise NotACheckpointError(f"{p} is not a readable PyTorch checkpoint: {type(e).__name__}: {e}") from None
    if not isinstance(obj, Mapping):
        raise NotACheckpointError(f"{p} holds a {type(obj).__name__}, not a checkpoint dict")
    key = "model_ema_state_dict" if weights == "ema" else "model_state_dict"
    if isinstance(obj.get(key), Mapping):
        state = obj[key]
    elif obj and all(isinstance(v, Tensor) for v in obj.values()):
        state = obj  # a bare state dict
    else:  # a FlowMo checkpoint holds 'model_ema_state_dict' and 'model_state_dict'
        raise NotACheckpointError(f"{p} has no {key!r} state dict: it has {', '.join(map(str, list(obj)[:8]))}")
    return map_release_state_dict(state)


def _verify_zip_checksums(p: Path) -> None:
    """Check the CRC-32 of every record of a ``torch.save`` zip file (torch.load does not), so that
    flipped bits anywhere in the pickle or the tensor data are refused. Records written without a
    CRC (``torch.serialization.set_crc32_options(False)``: stored as 0) are not checked."""
    if not zipfile.is_zipfile(p):
        return  # not a zip (legacy format, truncated, or not a checkpoint): torch.load decides
    try:
        with zipfile.ZipFile(p) as z:
            for info in z.infolist():
                if info.CRC == 0 and info.file_size:
                    continue
                with z.open(info) as f:
                    while f.read(1 << 24):
                        pass
    except Exception as e:  # BadZipFile (bad CRC-32, bad header), zlib.error, EOFError, ...
        raise NotACheckpointError(f"{p} is damaged: {type(e).__name__}: {e}") from None


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    idx = [int(m.group(1)) for k in state if (m := re.match(rf"{prefix}\.double_blocks\.(\d+)\.", k))]
    if not idx:
        raise NotACheckpointError(f"no {prefix}.double_blocks.* tensors in the state dict")
    return max(idx) + 1


def infer_release_spec(
    state: Mapping[str, Tensor],
    *,
    code_length: int = 256,
    image_size: int = 256,
    codebook_size_for_entropy: Optional[int] = None,
) -> FlowMoSpec:
    """The release spec matching a release state dict's shapes.

    Widths, depths, patch size and code channels come from the tensors; the code length and
    image size are not stored in the weights (the release uses 256 and 256). The entropy group
    size is not stored either: 9 for 18 channels and 14 for 56 (the release), else required.
    """
    try:
        enc_w, patch_dim = state["encoder.img_in.weight"].shape
        dec_w = state["decoder.img_in.weight"].shape[0]
        channels = state["encoder.txt_in.weight"].shape[1]
    except KeyError as e:
        raise NotACheckpointError(f"the state dict has no {e.args[0]!r}; is this a FlowMo checkpoint?") from None
    p = int(round(math.sqrt(patch_dim / 3)))
    if 3 * p * p != patch_dim:
        raise NotACheckpointError(f"img_in takes {patch_dim} inputs, not 3 * p * p for any patch size p")
    for name, w in (("encoder", enc_w), ("decoder", dec_w)):
        if w % 192:
            raise NotACheckpointError(f"{name} width {w} is not a multiple of 192 as in the release")
    g = codebook_size_for_entropy or _RELEASE_GROUP_BITS.get(channels)
    if g is None:  # the release uses 9 for 18 channels, 14 for 56
        raise ValueError(f"codebook_size_for_entropy is needed for {channels} code channels (9 for 18, 14 for 56)")
    return release_spec(
        mup_width=dec_w // 192, enc_mup_width=enc_w // 192,
        enc_depth=_depth(state, "encoder"), dec_depth=_depth(state, "decoder"),
        code_length=code_length, context_dim=channels, codebook_size_for_entropy=g,
        image_size=image_size, patch_size=p,
    )
