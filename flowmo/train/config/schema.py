"""The fields of both trainers' configurations, their bounds and meaning: :class:`TrainConfig`
(``flowmo train``: ``model``, ``train``: :class:`TrainSpec`, ``imports``) and
:class:`GeneratorTrainConfig` (``flowmo train-generator``: ``generator``, ``train``:
:class:`GeneratorTrainSpec`), and :func:`config_differences` between two of them.

The two ``train`` sections share their fields of the run (steps, seed, device, ...) and the
``optim``, ``ema`` and ``checkpoint`` sections, with the same bounds and meanings
(``optim.batch_size`` counts images for a tokenizer, token sequences for a generator).

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

import json
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from flowmo.folders.imports import check_module_names

from ...devices import parse_device
from ...generators.build import check_generator_config
from ...presets import get_preset
from ...spec import MAX_SAMPLER_STEPS, FlowMoSpec, SpecBool, SpecFloat, SpecInt, merge_data
from flowmo.registry.spec_base import OneLineErrors

__all__ = [
    "DataConfig", "OptimConfig", "EMAConfig", "CheckpointConfig", "LogConfig", "EvalConfig", "TrainSpec", "TrainConfig",
    "GeneratorLogConfig", "GeneratorTrainSpec", "GeneratorTrainConfig", "expand_model",
    "ABSENT", "config_differences", "describe_differences",
    "MAX_STEPS", "MAX_SEED", "MAX_WORKERS", "MAX_BUILTIN_LENGTH", "MAX_BATCH", "MAX_IMAGES", "MAX_LOG_IMAGES",
    "MAX_TIMEOUT_S",
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


# ---------------------------------------------------------------------------------- bases and shared fields
class _Strict(OneLineErrors):  # validation errors in one line, as the specs'
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class _TrainSection(_Strict):
    """Base of the two trainers' ``train`` sections: a field without a default that is missing is
    named with how to give it (``_required``: name -> (what it is, a placeholder for its value))."""

    _required: ClassVar[dict[str, tuple[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _required_given(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, (what, value) in cls._required.items():
                if name not in data:
                    raise ValueError(f"train.{name} is required ({what}; it has no default): --set train.{name}={value} "
                                     f"on the command line, or '{name}: {value}' under 'train:' in the config")
        return data


def _device_name(v: Any) -> Any:
    if isinstance(v, str):
        parse_device(v, "device", auto=True)  # ValueError: a name torch cannot parse
    return v  # another type: refused by the str field


# the fields of a run both trainers' train sections have
Steps = Annotated[SpecInt, Field(
    gt=0, le=MAX_STEPS,
    description="train until the step counter reads N: N optimizer steps from scratch; a resumed run continues to N "
                "(one already at or past N trains no further step)",
)]
Seed = Annotated[SpecInt, Field(
    ge=0, le=MAX_SEED,
    description="0 .. 2**63 - 1: the initial weights, the data order and every random draw of every step",
)]
Autocast = Annotated[Literal["auto", "bf16", "native", "off"], Field(
    description="auto: bf16 on CUDA, off on CPU; native: bf16 where the device computes it natively (CUDA, CPUs with "
                "AVX512-BF16 or AMX), off elsewhere (other CPUs emulate bf16, slower than float32); bf16: always",
)]
Device = Annotated[str, BeforeValidator(_device_name), Field(
    description="auto: cuda (LOCAL_RANK) when available, else cpu; or a torch device name (cpu, cuda, cuda:1, mps): "
                "its spelling is checked here, its presence when the trainer starts",
)]
Threads = Annotated[Optional[SpecInt], Field(
    gt=0, le=1024,
    description="intra-op CPU threads of this process (torch.set_num_threads, set when the trainer is built; "
                "process-wide); None: PyTorch's default (the number of cores). A run repeats bitwise at a fixed "
                "thread count; another count may change the numbers at float32 rounding level on some CPUs "
                "(docs/reliability.md, section 6). 1 is the robust choice on a machine shared with other CPU-heavy "
                "work: measured on 2 cores beside one busy process, the demo ran 0.8 steps/s with 2 threads and 2.4 "
                "with 1 (alone: 3.5-4.1 and 2.3)",
)]
MaxNonfinite = Annotated[SpecInt, Field(
    gt=0, le=MAX_STEPS,
    description="stop the run (TrainingStopped) once N consecutive steps had a non-finite loss (each is skipped: no "
                "weight change), at the first step from there that logs or checkpoints (where the counters are read "
                "from the device), naming the step the streak reached N; 1: after the first one; N > train.steps: "
                "never within the run",
)]
DistTimeout = Annotated[SpecInt, Field(
    gt=0, le=MAX_TIMEOUT_S,
    description="a collective waiting longer than this many seconds (a dead rank) fails the run; at most a year",
)]
LogEvery = Annotated[SpecInt, Field(
    gt=0, le=MAX_STEPS,
    description="a metrics record after steps N, 2N, 3N, ... and after the last step; 1: after every step; "
                "N >= train.steps: only after the last step",
)]


# ---------------------------------------------------------------------------------- sections
class DataConfig(_Strict):
    folder: Optional[str] = Field(None, description="image folder (recursive; the extensions of flowmo.data.images.IMAGE_EXTENSIONS); None (and no shards): the built-in photos")
    workers: SpecInt = Field(0, ge=0, le=MAX_WORKERS, description=f"DataLoader worker processes (0 .. {MAX_WORKERS})")
    builtin_length: SpecInt = Field(
        4096, gt=0, le=MAX_BUILTIN_LENGTH,
        description=f"items per epoch of the built-in photo crops (1 .. 2**24 = {MAX_BUILTIN_LENGTH})",
    )
    shards: Optional[str | tuple[str, ...]] = Field(
        None,
        description="tar shards of images instead of a folder (flowmo.data.shards.TarShardDataset): a path, a "
                    "brace pattern like 'data/train-{000000..000009}.tar', or a list of them; needs the "
                    "webdataset extra (pip install 'flowmo[shards]'); exclusive with folder",
    )
    hflip: SpecBool = True

    @field_validator("shards")
    @classmethod
    def _shards_entries(cls, v):
        entries = [v] if isinstance(v, str) else list(v or ())
        if v is not None and not entries:
            raise ValueError("train.data.shards is an empty list; give a tar file, a brace pattern or a list of them")
        if any(not e.strip() for e in entries):
            raise ValueError(f"train.data.shards has an empty entry: {v!r}")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> "DataConfig":
        if self.folder is not None and self.shards is not None:
            raise ValueError("train.data.folder and train.data.shards are both set; give one of them (the training "
                             "images come from a folder or from tar shards)")
        return self


class OptimConfig(_Strict):
    lr: SpecFloat = Field(1e-4, gt=0, description="learning rate (finite, > 0)")
    betas: tuple[SpecFloat, SpecFloat] = Field((0.9, 0.95), description="Adam betas, each in [0, 1)")
    eps: SpecFloat = Field(1e-8, gt=0, description="Adam epsilon (finite, > 0)")
    weight_decay: SpecFloat = Field(0.0, ge=0, description="weight decay (finite, >= 0)")
    batch_size: SpecInt = Field(8, gt=0, le=MAX_BATCH,
                                description=f"images (token sequences) per device per micro-step (1 .. {MAX_BATCH})")
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
                    "decay it from lr, as the counter reads W = warmup_steps, to lr * final_lr_fraction as "
                    "it reads train.steps, after the last step. Step k (1-based, k > W) uses lr * (f + (1 - f) "
                    "* s), evaluated as the step starts: u = (k - 1 - W) / (steps - W), s = (1 + cos(pi u)) / 2 "
                    "(cosine) or 1 - u (linear); so step W + 1 runs at lr and the last step above the floor "
                    "(with f = 0 every step trains, the last one at lr * s((steps - W - 1) / (steps - W))). "
                    "With warmup_steps >= train.steps the whole run is warm-up and nothing decays",
    )
    final_lr_fraction: SpecFloat = Field(
        0.0, ge=0, le=1,
        description="the floor of the decay as a fraction of lr, in [0, 1]: the lr the schedule reaches after "
                    "the last step (the last step itself runs above it); only with a decay (it must stay 0 with "
                    "decay: constant)",
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
    """The exponential moving average of the weights (what ``flowmo train --export`` and
    ``flowmo export`` write unless ``--raw``). Step n has the per-step decay d_n; the EMA starts as
    a copy of the initial weights. The release's EMA is ``{decay: 0.9999, every: 10, warmup:
    false}`` (configs/flowmo_lo_stage1a.yaml); the default warm-up makes the EMA of a run of any
    length an average of its late weights (:func:`flowmo.train.ema.ema_keep`)."""

    enabled: SpecBool = True
    decay: SpecFloat = Field(0.9999, ge=0, lt=1, description="the per-step decay once warmed up, in [0, 1)")
    every: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="after steps N, 2N, 3N, ... and after the last step (train.steps), one EMA update "
                    "standing for the steps a+1 .. b since the previous one: ema <- K ema + (1 - K) weights, "
                    "K = d_(a+1) * ... * d_b (decay**(b - a) without warm-up); 1: after every step; >= "
                    "train.steps: once, after the last step. So every step is in the EMA, whatever N and "
                    "train.steps are",
    )
    warmup: SpecBool = Field(
        True,
        description="true: d_n = min(decay, n / (n + 9)) for n >= 2 and d_1 = 0 (diffusers' EMAModel "
                    "warm-up, (1 + s) / (10 + s) with s = n - 1): the first step replaces the initial "
                    "weights and a short run's EMA averages its late steps; false: d_n = decay from step 1 "
                    "(the release's EMA: with decay 0.9999 a run of 60 steps exports its initial weights "
                    "at 99.4%)",
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
    every: LogEvery = 10
    images_every: SpecInt = Field(
        500, gt=0, le=MAX_STEPS,
        description="a PNG of inputs next to reconstructions after steps N, 2N, 3N, ... (not forced at the "
                    "end); 1: after every step; N > train.steps: none",
    )
    images: SpecInt = Field(4, gt=0, le=MAX_LOG_IMAGES, description=f"images in that PNG (1 .. {MAX_LOG_IMAGES})")
    tensorboard: SpecBool = True
    progress: SpecBool = True


class GeneratorLogConfig(_Strict):
    every: LogEvery = 10
    tensorboard: SpecBool = True
    progress: SpecBool = True


class EvalConfig(_Strict):
    """Held-out PSNR/SSIM during training (built-in photos: the held-out photos; a folder: its first images),
    of the raw weights (``eval/raw/psnr``, ``eval/raw/ssim`` in metrics.jsonl) and, when ``train.ema`` is
    enabled, of the EMA weights (``eval/ema/psnr``, ``eval/ema/ssim``): each figure names its weights.

    Held-out image ``i`` is decoded from :func:`flowmo.samplers.noise.image_noise` ``(train.seed, [i])``,
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


# ---------------------------------------------------------------------------------- the train sections
class TrainSpec(_TrainSection):
    """The ``train`` section of a tokenizer run (``flowmo train``)."""

    _required: ClassVar[dict[str, tuple[str, str]]] = {"steps": ("the number of optimizer steps", "N")}

    stage: Literal["1a", "1b"] = "1a"
    steps: Steps
    seed: Seed = 0
    init_from: Optional[str] = Field(
        None,
        description="Stage 1B: a Stage 1A run folder, checkpoint folder or model folder, or a released model's name "
                    "or a Hub id 'user/repo' (a local path wins); the model is its model (a config's model: "
                    "section without preset edits it, and an architecture field that differs is refused)",
    )
    freeze_encoder_at: Optional[SpecInt] = Field(
        None, ge=0, le=MAX_STEPS,
        description="Stage 1A: the encoder is trained for exactly N optimizer steps (steps 1 .. N update it), "
                    "then frozen and the optimizer rebuilt for the rest; 0: never trained (frozen from the "
                    "start); N >= train.steps: trained for the whole run; None: never frozen. Stage 1B always "
                    "freezes the encoder (this field is then unused)",
    )
    renormalize: SpecBool = Field(True, description="rescale block Linear weights to their initial norms after each step")
    compile: SpecBool = Field(
        False, description="compile the training step's loss, forward and backward, with torch.compile (one graph: "
                           "fullgraph in Stage 1A on one process); the first step pays the compile time (logged)",
    )
    autocast: Autocast = "auto"
    device: Device = "auto"
    threads: Threads = None
    max_nonfinite: MaxNonfinite = 10
    dist_timeout_s: DistTimeout = 600
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
        if self.stage == "1a" and self.init_from is not None:
            raise ValueError(f"train.init_from ({self.init_from!r}) is read by stage '1b' only, and this run is "
                             "stage '1a', which starts from fresh weights; set train.stage=1b to post-train that "
                             "model, or continue a Stage 1A run with --resume")
        return self


class GeneratorTrainSpec(_TrainSection):
    """The ``train`` section of a generator run (``flowmo train-generator``)."""

    _required: ClassVar[dict[str, tuple[str, str]]] = {"tokens": ("the token set folder", "FOLDER"),
                                                       "steps": ("the number of optimizer steps", "N")}

    tokens: str = Field(description="the token set to train on: a folder written by 'flowmo tokenize --classes' "
                                    "(or one labelled token file)")
    steps: Steps
    seed: Seed = 0
    autocast: Autocast = "auto"
    device: Device = "auto"
    threads: Threads = None
    max_nonfinite: MaxNonfinite = 10
    dist_timeout_s: DistTimeout = 600
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: GeneratorLogConfig = Field(default_factory=GeneratorLogConfig)


# ---------------------------------------------------------------------------------- the configs
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


class GeneratorTrainConfig(_Strict):
    generator: dict[str, Any] = Field(
        description="the generator: {name: maskgit | autoregressive, <constructor option>: value, ...} "
                    "(flowmo.generators.build); vocab_size, seq_len and num_classes come from the token set",
    )
    train: GeneratorTrainSpec

    @field_validator("generator", mode="after")
    @classmethod
    def _generator(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_generator_config(v)


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


# ---------------------------------------------------------------------------------- comparing configs
ABSENT = "(absent)"
"""What :func:`config_differences` gives for a key that one side lacks."""


def config_differences(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """Where two configs, as JSON data (``model_dump(mode="json")``), differ: ``(dotted path,
    old value, new value)`` for each differing leaf, in the order of ``old``'s keys and then
    ``new``'s own. Mappings are compared key by key, except two components with different
    ``name`` fields, which are compared whole (their other fields mean different things); a
    key on one side only has :data:`ABSENT` on the other. ``path`` prefixes the paths."""
    if isinstance(old, dict) and isinstance(new, dict) and old.get("name") == new.get("name"):
        out: list[tuple[str, Any, Any]] = []
        for k in list(old) + [k for k in new if k not in old]:
            where = f"{path}.{k}" if path else str(k)
            if k not in old or k not in new:
                out.append((where, old.get(k, ABSENT), new.get(k, ABSENT)))
            else:
                out.extend(config_differences(old[k], new[k], where))
        return out
    return [] if old == new else [(path, old, new)]


def describe_differences(differences: Iterable[tuple[str, Any, Any]]) -> str:
    """``path old -> new`` for each difference of :func:`config_differences`, joined by ", "
    (values as JSON)."""
    def show(v: Any) -> str:
        return v if v is ABSENT else json.dumps(v)

    return ", ".join(f"{p} {show(a)} -> {show(b)}" for p, a, b in differences)
