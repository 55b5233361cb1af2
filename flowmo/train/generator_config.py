"""The configuration of a token generator's training run: a ``generator`` section (the generator's
name and options) and a ``train`` section, from YAML/JSON with dotted overrides.

Example (``configs/generators/example.yaml``)::

    generator: {name: maskgit, width: 128, depth: 4, heads: 4, label_dropout: 0.1}
    train:
      tokens: runs/tokens            # a token set written by 'flowmo tokenize --classes'
      steps: 2000
      optim: {lr: 3.0e-4, batch_size: 64}

``vocab_size``, ``seq_len`` and ``num_classes`` come from the token set (its layout and classes)
and are not part of the ``generator`` section. The ``optim``, ``ema`` and ``checkpoint``
sections are the tokenizer trainer's (:mod:`flowmo.train.train_spec`), with the same fields,
bounds and meanings; ``optim.batch_size`` counts token sequences.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, field_validator, model_validator

from ..devices import parse_device
from ..generators.build import check_generator_config
from ..spec import SpecBool, SpecInt
from .train_spec import (
    MAX_SEED,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    CheckpointConfig,
    EMAConfig,
    OptimConfig,
    _Strict,
)
from .yaml12 import _yaml_problem, parse_yaml, read_config_source

__all__ = ["GeneratorLogConfig", "GeneratorTrainSpec", "GeneratorTrainConfig", "load_generator_config",
           "apply_generator_overrides"]


class GeneratorLogConfig(_Strict):
    """``train.log`` of a generator run: the metrics records (``metrics.jsonl``, TensorBoard) and
    the progress bar."""

    every: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="a metrics record after steps N, 2N, 3N, ... and after the last step; 1: after every step; "
                    "N >= train.steps: only after the last step",
    )
    tensorboard: SpecBool = True
    progress: SpecBool = True


class GeneratorTrainSpec(_Strict):
    """The ``train`` section of a generator training config: the token set, the length and seed of
    the run, the device, and the sections ``optim``, ``ema``, ``checkpoint`` and ``log`` (those of
    the tokenizer trainer, but ``log``). ``tokens`` and ``steps`` have no default."""

    tokens: str = Field(description="the token set to train on: a folder written by 'flowmo tokenize --classes' "
                                    "(or one labelled token file)")
    steps: SpecInt = Field(
        gt=0, le=MAX_STEPS,
        description="train until the step counter reads N: N optimizer steps from scratch; a resumed run "
                    "continues to N (one already at or past N trains no further step)",
    )
    seed: SpecInt = Field(0, ge=0, le=MAX_SEED, description="0 .. 2**63 - 1: the initial weights, the data order "
                                                            "and every mask and label-dropout draw")
    autocast: Literal["auto", "bf16", "off"] = Field("auto", description="auto: bf16 on CUDA, off on CPU")
    device: str = Field("auto", description="auto: cuda (LOCAL_RANK) when available, else cpu; or a torch device name")
    threads: Optional[SpecInt] = Field(None, gt=0, le=1024,
                                       description="intra-op CPU threads of this process; None: PyTorch's default")
    max_nonfinite: SpecInt = Field(
        10, gt=0, le=MAX_STEPS,
        description="stop the run once N consecutive steps had a non-finite loss (each is skipped)",
    )
    dist_timeout_s: SpecInt = Field(600, gt=0, le=MAX_TIMEOUT_S,
                                    description="a collective waiting longer than this (a dead rank) fails the run")
    optim: OptimConfig = Field(default_factory=OptimConfig)
    ema: EMAConfig = Field(default_factory=EMAConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    log: GeneratorLogConfig = Field(default_factory=GeneratorLogConfig)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, v: Any) -> Any:
        if isinstance(v, str):
            parse_device(v, "device", auto=True)
        return v

    @model_validator(mode="before")
    @classmethod
    def _required(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, what in (("tokens", "the token set folder"), ("steps", "the number of optimizer steps")):
                if name not in data:
                    raise ValueError(f"train.{name} is required ({what}; it has no default): --set train.{name}=... "
                                     f"on the command line, or '{name}: ...' under 'train:' in the config")
        return data


class GeneratorTrainConfig(_Strict):
    """A ``flowmo train-generator`` config (:func:`load_generator_config`): ``generator`` (a
    :class:`~flowmo.GeneratorSpec` as a mapping) and ``train`` (:class:`GeneratorTrainSpec`)."""

    generator: dict[str, Any] = Field(
        description="the generator: {name: maskgit | autoregressive, <constructor option>: value, ...} "
                    "(flowmo.generators.build); vocab_size, seq_len and num_classes come from the token set",
    )
    train: GeneratorTrainSpec

    @field_validator("generator", mode="after")
    @classmethod
    def _generator(cls, v: dict[str, Any]) -> dict[str, Any]:
        return check_generator_config(v)


def apply_generator_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML 1.2) to a raw config dict, in order.

    A dict value merges into a dict already there (``generator={depth: 2}`` keeps the other
    options); any other value replaces. Raises TypeError for a non-dict config or a non-string
    override, ValueError naming a malformed override (no ``=``, an empty key part, invalid YAML, a
    path through a value that is not a mapping). Unknown fields are refused when the result is
    validated (:func:`load_generator_config`)."""
    if not isinstance(raw, dict):
        raise TypeError(f"the config must be a mapping (dict), got {type(raw).__name__}")
    if isinstance(overrides, (str, bytes, dict)):
        raise TypeError(f"overrides must be a list of 'key.path=value' strings, got {type(overrides).__name__}")
    raw = copy.deepcopy(raw)
    for item in overrides:
        if not isinstance(item, str):
            raise TypeError(f"override {item!r} must be a 'key.path=value' string, got {type(item).__name__}")
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.path=value")
        path, text = item.split("=", 1)
        keys = [k.strip() for k in path.strip().split(".")]
        if not all(keys):
            raise ValueError(f"override {item!r}: the key path {path.strip()!r} has an empty part")
        try:
            value = parse_yaml(text)
        except yaml.YAMLError as e:
            raise ValueError(f"override {item!r}: the value {text!r} is not valid YAML ({_yaml_problem(e)}); "
                             "quote it to pass a string") from None
        node = raw
        for depth, k in enumerate(keys[:-1]):
            nxt = node.setdefault(k, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"override {item!r}: {'.'.join(keys[:depth + 1])} is not a section")
            node = nxt
        last = keys[-1]
        if isinstance(value, dict) and isinstance(node.get(last), dict):
            node[last] = {**node[last], **value}
        else:
            node[last] = value
    return raw


def load_generator_config(source: Union[str, os.PathLike, dict, None] = None,
                          overrides: Optional[list[str]] = None) -> GeneratorTrainConfig:
    """A GeneratorTrainConfig from a YAML/JSON file (or a dict, or None: overrides only), with
    dotted overrides applied.

    Raises TypeError for another kind of ``source``, FileNotFoundError / IsADirectoryError for a
    missing file / a folder, ValueError for a file that cannot be parsed or does not hold a
    mapping, and pydantic's ValidationError (a ValueError) naming the fields of an invalid config."""
    raw = read_config_source(source, "'generator' and 'train'")
    raw = apply_generator_overrides(raw, list(overrides or []))
    if "model" in raw and "generator" not in raw:  # the other command's config: say so, not pydantic's errors
        raise ValueError(f"{'the config' if source is None or isinstance(source, dict) else f'config file {str(source)!r}'} is a tokenizer training config (a 'model' section, no "
                         "'generator'): train it with flowmo train")
    return GeneratorTrainConfig.model_validate(raw)
