"""The training configuration: a FlowMoSpec plus a TrainSpec, from YAML/JSON with dotted overrides.

Step-valued fields count *optimizer steps* (one step = ``optim.grad_accum`` micro-batches on
every rank; a step skipped for a non-finite loss counts too). Step k is the k-th step, k = 1
.. ``train.steps``; "after step k" means once the step counter reads k. Every accepted value
means what its description says, boundary values (0 where accepted, 1, ``train.steps``,
larger than ``train.steps``) included; a value that would be meaningless is refused when
the config is validated.

Types are strict: integer fields refuse booleans and strings (``freeze_encoder_at: false`` is
an error, not 0; write ``null`` for none), boolean fields accept only true/false, float fields
accept numbers only and refuse NaN and infinities. Every count has an upper bound (e.g. step
counts at most ``MAX_STEPS`` = 2**40), stated in its description.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..imports import check_module_names, import_modules, unknown_component_message, unknown_components
from ..presets import get_preset
from ..devices import parse_device
from ..spec import MAX_SAMPLER_STEPS, FlowMoSpec, SpecBool, SpecFloat, SpecInt, merge_data

__all__ = [
    "DataConfig", "OptimConfig", "EMAConfig", "CheckpointConfig", "LogConfig", "EvalConfig", "TrainSpec",
    "TrainConfig", "load_config", "apply_overrides", "read_train_config",
]


MAX_STEPS = 2**40
"""Largest value of a step-valued field (train.steps, every-N fields, warm-up, ...)."""
MAX_SEED = 2**63 - 1
MAX_WORKERS = 1024
MAX_BUILTIN_LENGTH = 2**24
MAX_BATCH = 2**16
"""Largest optim.batch_size and optim.grad_accum."""
MAX_IMAGES = 2**20
"""Most images of one evaluation."""
MAX_LOG_IMAGES = 1024
MAX_TIMEOUT_S = 365 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DataConfig(_Strict):
    folder: Optional[str] = Field(None, description="image folder (recursive; the extensions of flowmo.images.IMAGE_EXTENSIONS); None: the built-in photos")
    workers: SpecInt = Field(0, ge=0, le=MAX_WORKERS, description=f"DataLoader worker processes (0 .. {MAX_WORKERS})")
    builtin_length: SpecInt = Field(
        4096, gt=0, le=MAX_BUILTIN_LENGTH,
        description=f"items per epoch of the built-in photo crops (1 .. 2**24 = {MAX_BUILTIN_LENGTH})",
    )
    hflip: SpecBool = True


class OptimConfig(_Strict):
    lr: SpecFloat = Field(1e-4, gt=0, description="learning rate (finite, > 0)")
    betas: tuple[SpecFloat, SpecFloat] = Field((0.9, 0.95), description="Adam betas, each in [0, 1)")
    eps: SpecFloat = Field(1e-8, gt=0, description="Adam epsilon (finite, > 0)")
    weight_decay: SpecFloat = Field(0.0, ge=0, description="weight decay (finite, >= 0)")
    batch_size: SpecInt = Field(8, gt=0, le=MAX_BATCH, description=f"images per device per micro-step (1 .. {MAX_BATCH})")
    grad_accum: SpecInt = Field(
        1, gt=0, le=MAX_BATCH, description=f"micro-batches per optimizer step (1: none accumulated; at most {MAX_BATCH})"
    )
    grad_clip: Optional[SpecFloat] = Field(None, gt=0, description="clip the global gradient norm to this (finite, > 0)")
    warmup_steps: SpecInt = Field(
        0, ge=0, le=MAX_STEPS,
        description="linear learning-rate warm-up: step k (1-based) uses lr * min(1, k / N), so the lr "
                    "reaches its full value at step N; 0 and 1: the full lr from step 1; N > train.steps: "
                    "the run ends before the lr reaches its full value",
    )
    decay: Literal["constant", "cosine", "linear"] = Field(
        "constant",
        description="after the warm-up: constant (the release's schedule) keeps lr; cosine and linear "
                    "decay it from lr at step W = warmup_steps to lr * final_lr_fraction at the last step "
                    "(train.steps). Step k (1-based, k > W) uses lr * (f + (1 - f) * s) with "
                    "u = (k - W) / (steps - W), s = (1 + cos(pi u)) / 2 (cosine) or 1 - u (linear); the "
                    "last step runs at lr * f. With warmup_steps >= train.steps the whole run is warm-up "
                    "and nothing decays",
    )
    final_lr_fraction: SpecFloat = Field(
        0.0, ge=0, le=1,
        description="the lr of the last step as a fraction of lr, in [0, 1]; only with a decay (it must stay 0 "
                    "with decay: constant)",
    )

    @model_validator(mode="after")
    def _check_decay(self) -> "OptimConfig":
        if self.decay == "constant" and self.final_lr_fraction != 0:
            raise ValueError(f"final_lr_fraction ({self.final_lr_fraction:g}) applies only with a decay "
                             "(cosine or linear); with decay: constant leave it at 0")
        return self

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"each of betas must be in [0, 1), got {list(v)}")
        return v


class EMAConfig(_Strict):
    enabled: SpecBool = True
    decay: SpecFloat = Field(0.9999, ge=0, lt=1, description="in [0, 1)")
    every: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="after steps N, 2N, 3N, ... and after the last step (train.steps), one EMA update "
                    "standing for the k steps since the previous one: ema <- decay**k ema + (1 - decay**k) "
                    "weights (k = N except at the last step); 1: after every step; >= train.steps: once, "
                    "after the last step. So every step is in the EMA, whatever N and train.steps are",
    )


class CheckpointConfig(_Strict):
    every: SpecInt = Field(
        1000, gt=0, le=MAX_STEPS,
        description="save after steps N, 2N, 3N, ... and after the last step (train.steps); 1: after every "
                    "step; N >= train.steps: only after the last step (a SIGTERM also saves)",
    )
    keep_last: SpecInt = Field(
        3, gt=0, le=MAX_STEPS,
        description="after each save, keep the newest N checkpoints (and those keep_every keeps), delete the "
                    "others; 1: only the newest",
    )
    keep_every: Optional[SpecInt] = Field(
        None, gt=0, le=MAX_STEPS,
        description="also keep every saved checkpoint whose step is a multiple of M; 1: keep every checkpoint; "
                    "M > train.steps: none beyond keep_last; None: keep_last alone",
    )


class LogConfig(_Strict):
    every: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="a metrics record after steps N, 2N, 3N, ... and after the last step; 1: after every step; "
                    "N >= train.steps: only after the last step",
    )
    images_every: SpecInt = Field(
        500, gt=0, le=MAX_STEPS,
        description="a PNG of inputs next to reconstructions after steps N, 2N, 3N, ... (not forced at the "
                    "end); 1: after every step; N > train.steps: none",
    )
    images: SpecInt = Field(4, gt=0, le=MAX_LOG_IMAGES, description=f"images in that PNG (1 .. {MAX_LOG_IMAGES})")
    tensorboard: SpecBool = True
    progress: SpecBool = True


class EvalConfig(_Strict):
    """Held-out PSNR/SSIM during training (built-in photos: the held-out photos; a folder: its first images).

    Held-out image ``i`` is decoded from :func:`flowmo.data.noise.image_noise` ``(train.seed, [i])``,
    the noise of ``flowmo eval --seed <train.seed>`` for the same image."""

    every: Optional[SpecInt] = Field(
        None, gt=0, le=MAX_STEPS,
        description="when enabled: evaluate before step 1 (a run starting at step 0), after steps N, 2N, 3N, "
                    "... and after the last step (once, even when it is a multiple of N); N >= train.steps or "
                    "None: only before step 1 and after the last step",
    )
    enabled: SpecBool = True
    images: SpecInt = Field(10, gt=0, le=MAX_IMAGES, description=f"held-out images evaluated (1 .. 2**20 = {MAX_IMAGES})")
    steps: Optional[SpecInt] = Field(
        None, gt=0, le=MAX_SAMPLER_STEPS,
        description=f"sampler steps for evaluation decodes (1: one step; at most {MAX_SAMPLER_STEPS}); "
                    "None: the model spec's sampler",
    )
    use_ema: SpecBool = False


class TrainSpec(_Strict):
    stage: Literal["1a", "1b"] = "1a"
    steps: SpecInt = Field(
        gt=0, le=MAX_STEPS,
        description="train until the step counter reads N: N optimizer steps from scratch; a resumed run "
                    "continues to N (one already at or past N trains no further step)",
    )
    seed: SpecInt = Field(0, ge=0, le=MAX_SEED, description="0 .. 2**63 - 1")
    init_from: Optional[str] = Field(None, description="Stage 1B: a Stage 1A run folder, checkpoint folder or model folder")
    freeze_encoder_at: Optional[SpecInt] = Field(
        None, ge=0, le=MAX_STEPS,
        description="Stage 1A: the encoder is trained for exactly N optimizer steps (steps 1 .. N update it), "
                    "then frozen and the optimizer rebuilt for the rest; 0: never trained (frozen from the "
                    "start); N >= train.steps: trained for the whole run; None: never frozen. Stage 1B always "
                    "freezes the encoder (this field is then unused)",
    )
    renormalize: SpecBool = Field(True, description="rescale block Linear weights to their initial norms after each step")
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on CUDA, off on CPU")
    device: str = Field(
        "auto", description="auto: cuda (LOCAL_RANK) when available, else cpu; or a torch device name "
                            "(cpu, cuda, cuda:1, mps): its spelling is checked here, its presence when the "
                            "Trainer starts",
    )
    threads: Optional[SpecInt] = Field(
        None, gt=0, le=1024,
        description="intra-op CPU threads of this process (torch.set_num_threads, set when the Trainer is "
                    "built; process-wide); None: PyTorch's default (the number of cores). The thread count "
                    "does not change the numbers (docs/reliability.md, section 6). 1 is the robust choice on "
                    "a machine shared with other CPU-heavy work: measured on 2 cores beside one busy process, "
                    "the demo ran 0.8 steps/s with 2 threads and 2.4 with 1 (alone: 3.5-4.1 and 2.3)",
    )
    max_nonfinite: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="stop the run (TrainingStopped) once N consecutive steps had a non-finite loss (each is "
                    "skipped: no weight change); 1: at the first one; N > train.steps: never within the run",
    )
    dist_timeout_s: SpecInt = Field(
        600, gt=0, le=MAX_TIMEOUT_S,
        description="a collective waiting longer than this many seconds (a dead rank) fails the run; at most a year",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        if isinstance(v, str):
            parse_device(v, "device", auto=True)  # ValueError: a name torch cannot parse
        return v  # another type: refused by the str field

    @model_validator(mode="before")
    @classmethod
    def _steps_given(cls, data: Any) -> Any:
        if isinstance(data, dict) and "steps" not in data:
            raise ValueError("train.steps is required (the number of optimizer steps; it has no default): "
                             "--set train.steps=N on the command line, or 'steps: N' under 'train:' in the config")
        return data

    @model_validator(mode="after")
    def _check(self) -> "TrainSpec":
        if self.stage == "1b" and self.init_from is None:
            raise ValueError("stage '1b' needs train.init_from (a Stage 1A run, checkpoint or model folder)")
        o = self.optim
        if o.decay != "constant" and o.final_lr_fraction == 0 and o.warmup_steps == 0 and self.steps == 1:
            raise ValueError(f"train.optim.decay {o.decay!r} with final_lr_fraction 0 and no warm-up runs the "
                             "only step (train.steps = 1) at lr 0: it would train nothing; use decay: constant")
        return self


class TrainConfig(_Strict):
    imports: tuple[str, ...] = Field(
        (), description="modules to import before the model is validated: those that register the config's own "
                        "components (load_config imports them; so does --import MODULE on the command line)",
    )
    model: FlowMoSpec
    train: TrainSpec

    @field_validator("imports", mode="before")
    @classmethod
    def _imports(cls, v: Any) -> Any:
        return tuple(check_module_names(v, "imports"))

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model" in data:
            data = dict(data)
            data["model"] = expand_model(data["model"])
        if isinstance(data, dict) and "train" not in data:
            data = {**data, "train": {}}  # so that the message names the missing field: train.steps
        return data


def expand_model(model: Any) -> Any:
    """The ``model`` section of a config as data: a preset name gives that preset's spec; a
    dict with a ``preset`` key gives the preset edited by the dict's other keys with the
    semantics of :meth:`flowmo.FlowMoSpec.replace` (:func:`flowmo.spec.merge_data`: nested
    dicts merge, naming another component drops the old one's fields, ``interval_sigma``
    replaces ``interval``, unknown keys raise ValueError naming them); anything else is
    returned as it is (validated later)."""
    if isinstance(model, str):
        return get_preset(model)
    if isinstance(model, dict) and "preset" in model:
        if not isinstance(model["preset"], str):
            raise ValueError(f"model.preset must be a preset name (a str), got {model['preset']!r}")
        rest = {k: v for k, v in model.items() if k != "preset"}
        return merge_data(FlowMoSpec, get_preset(model["preset"]).model_dump(mode="json"), rest, where="model")
    return model


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 (core schema) booleans, integers and floats (see parse_yaml)."""


_YAML_SCALARS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_SCALARS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 integers: decimal (a leading zero is still decimal: 010 is 10; '_' may group digits,
# as PyYAML allows), 0o octal, 0x hexadecimal. No YAML 1.1 octal (0777), binary (0b101) or
# base 60 (1:00): those stay strings, which a number field refuses.
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
# YAML 1.2 floats: a dot and/or an exponent (1.5, .5, -.5, 1e-3, 5E+2), .inf, .nan; no base 60
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # 010 -> 10 (YAML 1.1 read it as octal 8)


_Yaml12BoolLoader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)


def parse_yaml(text: str) -> Any:
    """Parse config YAML (files and ``--set`` values) with YAML 1.2 (core schema) scalars
    instead of PyYAML's YAML 1.1 rules:

    - booleans: ``true``/``false`` only (``on``/``off``/``yes``/``no`` stay strings; YAML 1.1
      would turn ``autocast: off`` into ``False`` and fail validation);
    - integers: decimal, and a leading zero does not make octal (``010`` is 10, ``0777`` is
      777; YAML 1.1 read them as 8 and 511); ``0o17`` is octal and ``0x10`` hexadecimal (16),
      as in YAML 1.2; ``_`` may group digits (``100_000``); base 60 (``1:00``, YAML 1.1's 60)
      and ``0b101`` stay strings, which number fields refuse;
    - floats: ``1e-3`` and ``-.5`` are floats (YAML 1.1 reads them as strings), ``1:30.5`` is
      a string.
    """
    return yaml.load(text, Loader=_Yaml12BoolLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML error."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return " ".join(str(e).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML) to a raw config dict.

    Each override, in order, is the edit ``{"a": {"b": {"c": value}}}`` of the config with
    the semantics of :meth:`flowmo.FlowMoSpec.replace` (:func:`flowmo.spec.merge_data`),
    the model section starting from its preset: ``model.sampler.steps=4`` keeps the rest of
    the sampler; ``model.sampler.guidance.interval_sigma=[0.2,1.0]`` replaces the preset's
    ``interval``; ``model.quantizer.name=fsq`` drops LFQ's fields (FSQ's defaults fill the
    rest; a later ``model.quantizer.levels=[...]`` gives its own); a dict value
    (``model.encoder={depth: 3}``, ``model={code_length: 8}``) merges, into the preset's spec
    where the model section names a preset; ``model=NAME`` and ``model={preset: NAME, ...}``
    replace the whole model section. The result is validated once, after the last override (load_config), so
    overrides that are only valid together (``model.code_channels=6`` with
    ``model.quantizer.name=fsq``) may come in any order.

    Raises TypeError if ``raw`` is not a dict or ``overrides`` not a list of strings, and
    ValueError naming the override if one is malformed (no ``=``, an empty key, a value
    that is not valid YAML) or names a field that does not exist (``model.preset``
    included: write ``model=NAME`` to switch presets)."""
    if not isinstance(raw, dict):
        raise TypeError(f"the config must be a mapping (dict), got {type(raw).__name__}")
    if isinstance(overrides, (str, bytes, dict)) or not isinstance(overrides, Iterable):
        raise TypeError(f"overrides must be a list of 'key.path=value' strings, got {type(overrides).__name__} "
                        f"{overrides!r}")
    raw = copy.deepcopy(raw)
    for item in list(overrides):
        if not isinstance(item, str):
            raise TypeError(f"override {item!r} must be a 'key.path=value' string, got {type(item).__name__}")
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(k.strip() for k in keys):
            raise ValueError(f"override {item!r}: the key path {path.strip()!r} has an empty part "
                             f"(it must look like key.path=value)")
        keys = [k.strip() for k in keys]
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value {text!r} is not valid YAML ({_yaml_problem(e)}); "
                             f"quote it to pass a string") from None
        if keys == ["model", "preset"]:
            raise ValueError(f"override {item!r}: the preset is the starting point of the model section, not one of "
                             f"its fields; write model=NAME to replace the whole model with a preset")
        if keys == ["model"] and isinstance(value, dict) and "preset" in value:
            raw["model"] = value  # model={preset: small, ...}: a whole new model section
            continue
        if keys[0] == "model" and (len(keys) > 1 or isinstance(value, dict)) and "model" in raw:
            # an edit of the model (model.x=..., model={x: ...}) edits the preset's spec
            model = expand_model(raw["model"])
            raw["model"] = model.model_dump(mode="json") if isinstance(model, FlowMoSpec) else model
        change: Any = value
        for k in reversed(keys):
            change = {k: change}
        try:
            raw = merge_data(TrainConfig, raw, change)
        except ValueError as e:
            raise ValueError(f"override {item!r}: {e}") from None
    return raw


def load_config(source: Union[str, Path, dict, None] = None, overrides: Optional[list[str]] = None,
                imports: Iterable[str] = ()) -> TrainConfig:
    """A TrainConfig from a YAML/JSON file (or a dict), with dotted overrides applied.

    ``imports`` (e.g. from ``--import``) and the config's own ``imports`` list (after the
    overrides) are imported first, in that order, so that the components they register are
    known when the model is validated; the result's ``imports`` lists both.

    ``source``: a path (str or os.PathLike) of a ``.yaml``/``.yml``/``.json`` file, a dict, or
    None (an empty config). Raises TypeError for another kind of ``source``,
    FileNotFoundError / IsADirectoryError for a missing file / a folder, ValueError for a
    file that cannot be parsed or does not hold a mapping, and pydantic's ValidationError
    (a ValueError) naming the fields of an invalid config."""
    if source is None:
        raw: dict = {}
    elif isinstance(source, dict):
        raw = source
    elif isinstance(source, (str, os.PathLike)):
        p = Path(source)
        if p.is_dir():
            raise IsADirectoryError(f"config file {str(p)!r} is a folder, not a file")
        if not p.is_file():
            raise FileNotFoundError(f"config file {str(p)!r} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
        try:
            raw = json.loads(text) if p.suffix == ".json" else parse_yaml(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"config file {str(p)!r} is not valid JSON ({e.msg} at line {e.lineno}, "
                             f"column {e.colno})") from None
        except yaml.YAMLError as e:
            raise ValueError(f"config file {str(p)!r} is not valid YAML ({_yaml_problem(e)})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{p} must hold a mapping with 'model' and 'train' sections")
    else:
        raise TypeError(f"source must be a config file path (str or pathlib.Path), a dict or None, "
                        f"got {type(source).__name__} {source!r}")
    given = import_modules(imports, what="--import")
    raw = apply_overrides(raw, overrides or [])
    listed = raw.get("imports")
    if listed is None:  # `imports:` with nothing after it (YAML null): no modules
        listed = []
    if not isinstance(listed, (list, tuple)):  # a dict would be iterated as its keys
        raise TypeError(f"imports must be a list of module names (imports: [my_pkg.vq]), got "
                        f"{type(listed).__name__} {listed!r}")
    listed = import_modules(listed, what="imports")
    raw = {**raw, "imports": list(dict.fromkeys(given + listed))}
    return TrainConfig.model_validate(raw)


def read_train_config(path: Union[str, Path]) -> TrainConfig:
    """The TrainConfig a run wrote (``RUN/config.json``). Does not import the modules it lists:
    when it names components that are not registered, the ValueError names those modules."""
    path = Path(path)
    text = path.read_text()
    try:
        return TrainConfig.model_validate_json(text)
    except ValueError as e:
        unknown = unknown_components(e)
        if not unknown:
            raise
        try:
            recorded = check_module_names(json.loads(text).get("imports", []))
        except (TypeError, ValueError, AttributeError):
            recorded = []
        raise ValueError(unknown_component_message(unknown, recorded, str(path))) from None

