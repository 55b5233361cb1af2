"""The training configuration: a FlowMoSpec plus a TrainSpec, from YAML/JSON with dotted overrides.

Step-valued fields count *optimizer steps* (one step = ``optim.grad_accum`` micro-batches on
every rank; a step skipped for a non-finite loss counts too). Step k is the k-th step, k = 1
.. ``train.steps``; "after step k" means once the step counter reads k. Every accepted value
means what its description says, boundary values (0 where accepted, 1, ``train.steps``,
larger than ``train.steps``) included; a value that would be meaningless is refused when
the config is validated.
"""

from __future__ import annotations

import copy
import json
import re
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
    folder: Optional[str] = Field(None, description="image folder (recursive; the extensions of flowmo.images.IMAGE_EXTENSIONS); None: the built-in photos")
    workers: int = Field(0, ge=0, description="DataLoader worker processes")
    builtin_length: int = Field(4096, gt=0, description="items per epoch of the built-in photo crops")
    hflip: bool = True


class OptimConfig(_Strict):
    lr: float = Field(1e-4, gt=0)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(8, gt=0, description="images per device per micro-step")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step (1: none accumulated)")
    grad_clip: Optional[float] = Field(None, gt=0, description="clip the global gradient norm to this")
    warmup_steps: int = Field(
        0, ge=0,
        description="linear learning-rate warm-up: step k (1-based) uses lr * min(1, k / N), so the lr "
                    "reaches its full value at step N; 0 and 1: the full lr from step 1; N > train.steps: "
                    "the run ends before the lr reaches its full value",
    )


class EMAConfig(_Strict):
    enabled: bool = True
    decay: float = Field(0.9999, ge=0, lt=1)
    every: int = Field(
        10, gt=0,
        description="after steps N, 2N, 3N, ... and after the last step (train.steps), one EMA update "
                    "standing for the k steps since the previous one: ema <- decay**k ema + (1 - decay**k) "
                    "weights (k = N except at the last step); 1: after every step; >= train.steps: once, "
                    "after the last step. So every step is in the EMA, whatever N and train.steps are",
    )


class CheckpointConfig(_Strict):
    every: int = Field(
        1000, gt=0,
        description="save after steps N, 2N, 3N, ... and after the last step (train.steps); 1: after every "
                    "step; N >= train.steps: only after the last step (a SIGTERM also saves)",
    )
    keep_last: int = Field(
        3, gt=0,
        description="after each save, keep the newest N checkpoints (and those keep_every keeps), delete the "
                    "others; 1: only the newest",
    )
    keep_every: Optional[int] = Field(
        None, gt=0,
        description="also keep every saved checkpoint whose step is a multiple of M; 1: keep every checkpoint; "
                    "M > train.steps: none beyond keep_last; None: keep_last alone",
    )


class LogConfig(_Strict):
    every: int = Field(
        10, gt=0,
        description="a metrics record after steps N, 2N, 3N, ... and after the last step; 1: after every step; "
                    "N >= train.steps: only after the last step",
    )
    images_every: int = Field(
        500, gt=0,
        description="a PNG of inputs next to reconstructions after steps N, 2N, 3N, ... (not forced at the "
                    "end); 1: after every step; N > train.steps: none",
    )
    images: int = Field(4, gt=0, description="images in that PNG")
    tensorboard: bool = True
    progress: bool = True


class EvalConfig(_Strict):
    """Held-out PSNR/SSIM during training (built-in photos: the held-out photos; a folder: its first images)."""

    every: Optional[int] = Field(
        None, gt=0,
        description="when enabled: evaluate before step 1 (a run starting at step 0), after steps N, 2N, 3N, "
                    "... and after the last step (once, even when it is a multiple of N); N >= train.steps or "
                    "None: only before step 1 and after the last step",
    )
    enabled: bool = True
    images: int = Field(10, gt=0)
    steps: Optional[int] = Field(
        None, gt=0, description="sampler steps for evaluation decodes (1: one step); None: the model spec's sampler",
    )
    use_ema: bool = False


class TrainSpec(_Strict):
    stage: Literal["1a", "1b"] = "1a"
    steps: int = Field(
        gt=0,
        description="train until the step counter reads N: N optimizer steps from scratch; a resumed run "
                    "continues to N (one already at or past N trains no further step)",
    )
    seed: int = Field(0, ge=0)
    init_from: Optional[str] = Field(None, description="Stage 1B: a Stage 1A run folder, checkpoint folder or model folder")
    freeze_encoder_at: Optional[int] = Field(
        None, ge=0,
        description="Stage 1A: the encoder is trained for exactly N optimizer steps (steps 1 .. N update it), "
                    "then frozen and the optimizer rebuilt for the rest; 0: never trained (frozen from the "
                    "start); N >= train.steps: trained for the whole run; None: never frozen. Stage 1B always "
                    "freezes the encoder (this field is then unused)",
    )
    renormalize: bool = Field(True, description="rescale block Linear weights to their initial norms after each step")
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on CUDA, off on CPU")
    device: str = Field("auto", description="auto: cuda (LOCAL_RANK) when available, else cpu")
    max_nonfinite: int = Field(
        10, gt=0,
        description="stop the run (TrainingStopped) once N consecutive steps had a non-finite loss (each is "
                    "skipped: no weight change); 1: at the first one; N > train.steps: never within the run",
    )
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


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans and exponent floats (see parse_yaml)."""


_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

# YAML 1.2 floats without a dot (1e-3, 5E+2), which PyYAML's YAML 1.1 rules read as strings
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def parse_yaml(text: str) -> Any:
    """Parse config YAML (files and ``--set`` values) with YAML 1.2 booleans and floats:
    ``true``/``false`` only are booleans (``on``/``off``/``yes``/``no`` stay strings; PyYAML's
    default YAML 1.1 rules would turn ``autocast: off`` into ``False`` and fail validation),
    and ``1e-3`` is a float (YAML 1.1 reads it as a string)."""
    return yaml.load(text, Loader=_Yaml12BoolLoader)


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
        node[keys[-1]] = parse_yaml(value)
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
        raw = json.loads(text) if p.suffix == ".json" else parse_yaml(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{p} must hold a mapping with 'model' and 'train' sections")
    raw = apply_overrides(raw, overrides or [])
    return TrainConfig.model_validate(raw)

