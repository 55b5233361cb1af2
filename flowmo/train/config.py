"""The training configuration: a FlowMoSpec plus a TrainSpec, from YAML/JSON with dotted overrides."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..presets import get_preset
from ..spec import FlowMoSpec

__all__ = [
    "DataConfig", "OptimConfig", "EMAConfig", "CheckpointConfig", "LogConfig", "EvalConfig", "TrainSpec",
    "TrainConfig", "load_config", "apply_overrides",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    folder: Optional[str] = Field(None, description="image folder (recursive jpg/png/webp); None: the built-in photos")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    builtin_length: int = Field(4096, gt=0, description="items per epoch of the built-in photo crops")
    hflip: bool = True


class OptimConfig(_Strict):
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, gt=0, description="images per device per micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-steps per optimizer step")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient norm to this")
    warmup_steps: int = Field(0, ge=0, description="linear learning-rate warm-up")


class EMAConfig(_Strict):
    enabled: bool = True
    decay: float = Field(0.9999, ge=0, lt=1)
    every: int = Field(10, gt=0, description="update every N steps with decay**N")


class CheckpointConfig(_Strict):
    every: int = Field(1000, gt=0, description="save every N steps (and at the end)")
    keep_last: int = Field(3, gt=0)
    keep_every: Optional[int] = Field(None, gt=0, description="also keep every checkpoint whose step is a multiple of this")


class LogConfig(_Strict):
    every: int = Field(10, gt=0, description="metrics every N steps")
    images_every: int = Field(500, gt=0, description="a PNG of inputs next to reconstructions every N steps")
    images: int = Field(4, gt=0, description="images in that PNG")
    tensorboard: bool = True
    progress: bool = True


class EvalConfig(_Strict):
    """Held-out PSNR/SSIM during training (built-in photos: the held-out photos; a folder: its first images)."""

    every: Optional[int] = Field(None, gt=0, description="evaluate every N steps (always at step 0 and at the end when enabled)")
    enabled: bool = True
    images: int = Field(10, gt=0)
    steps: Optional[int] = Field(None, gt=0, description="sampler steps for evaluation (default: the spec's)")
    use_ema: bool = False


class TrainSpec(_Strict):
    stage: Literal["1a", "1b"] = "1a"
    steps: int = Field(gt=0, description="optimizer steps to train to")
    seed: int = Field(0, ge=0)
    init_from: Optional[str] = Field(None, description="Stage 1B: a Stage 1A run folder, checkpoint folder or model folder")
    freeze_encoder_at: Optional[int] = Field(None, ge=0, description="Stage 1A: freeze the encoder after this step")
    renormalize: bool = Field(True, description="rescale block Linear weights to their initial norms after each step")
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on CUDA, off on CPU")
    device: str = Field("auto", description="auto: cuda (LOCAL_RANK) when available, else cpu")
    max_nonfinite: int = Field(10, gt=0, description="stop after this many non-finite losses in a row")
    dist_timeout_s: int = Field(600, gt=0, description="a collective waiting longer than this (a dead rank) fails the run")
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _check(self) -> "TrainSpec":
        if self.stage == "1b" and self.init_from is None:
            raise ValueError("stage '1b' needs train.init_from (a Stage 1A run, checkpoint or model folder)")
        return self


class TrainConfig(_Strict):
    model: FlowMoSpec
    train: TrainSpec

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            data = dict(data)
            data["model"] = expand_model(data["model"])
        return data


def expand_model(model: Any) -> Any:
    """A preset name, or a dict with an optional ``preset`` key merged with its other fields."""
    if isinstance(model, str):
        return get_preset(model)
    if isinstance(model, dict) and "preset" in model:
        rest = {k: v for k, v in model.items() if k != "preset"}
        base = get_preset(model["preset"]).model_dump(mode="json")
        return _deep_merge(base, rest)
    return model


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and v.get("name", out[k].get("name")) == out[k].get("name"):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config dict."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        if keys[0] == "model":
            raw["model"] = expand_model(raw.get("model", {}))
            if hasattr(raw["model"], "model_dump"):
                raw["model"] = raw["model"].model_dump(mode="json")
        node = raw
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {} if node.get(k) is None else node[k]
                if not isinstance(node[k], dict):
                    raise ValueError(f"override {item!r}: {k!r} is not a section")
            node = node[k]
        node[keys[-1]] = yaml.safe_load(value)
    return raw


def load_config(source: Union[str, Path, dict, None] = None, overrides: Optional[list[str]] = None) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file (or a dict), with dotted overrides applied."""
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = source
    else:
        p = Path(source)
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        text = p.read_text()
        raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{p} must hold a mapping with 'model' and 'train' sections")
    raw = apply_overrides(raw, overrides or [])
    return TrainConfig.model_validate(raw)

