"""The configuration of both trainers, from YAML 1.2 / JSON with dotted overrides.

- ``flowmo train`` (:class:`TrainConfig`): a ``model`` section (a FlowMoSpec, a preset name, or
  ``{preset: NAME, ...}`` editing a preset), a ``train`` section (:class:`TrainSpec`) and an
  optional ``imports`` list; :func:`load_config`.
- ``flowmo train-generator`` (:class:`GeneratorTrainConfig`): a ``generator`` section (the
  generator's name and constructor options; ``vocab_size``, ``seq_len`` and ``num_classes`` come
  from the token set) and a ``train`` section (:class:`GeneratorTrainSpec`);
  :func:`load_generator_config`. Example (``configs/generators/example.yaml``)::

      generator: {name: maskgit, width: 128, depth: 4, heads: 4, label_dropout: 0.1}
      train: {tokens: runs/tokens, steps: 2000, optim: {lr: 3.0e-4, batch_size: 64}}

The fields, their bounds and meaning are in :mod:`~flowmo.train.config.schema`; how a config is
read (YAML 1.2, overrides, Stage 1B's starting model) in :mod:`~flowmo.train.config.reading`.
"""

from .reading import (
    apply_generator_overrides,
    apply_overrides,
    check_init_architecture,
    init_from_spec,
    load_config,
    load_generator_config,
    parse_yaml,
    read_config_source,
    read_train_config,
    resolve_init_from,
)
from .schema import (
    ABSENT,
    MAX_BATCH,
    MAX_BUILTIN_LENGTH,
    MAX_IMAGES,
    MAX_LOG_IMAGES,
    MAX_SEED,
    MAX_STEPS,
    MAX_TIMEOUT_S,
    MAX_WORKERS,
    CheckpointConfig,
    DataConfig,
    EMAConfig,
    EvalConfig,
    GeneratorLogConfig,
    GeneratorTrainConfig,
    GeneratorTrainSpec,
    LogConfig,
    OptimConfig,
    TrainConfig,
    TrainSpec,
    config_differences,
    describe_differences,
    expand_model,
)

__all__ = [
    "TrainConfig", "TrainSpec", "DataConfig", "OptimConfig", "EMAConfig", "CheckpointConfig", "LogConfig",
    "EvalConfig", "GeneratorTrainConfig", "GeneratorTrainSpec", "GeneratorLogConfig", "expand_model",
    "load_config", "load_generator_config", "apply_overrides", "apply_generator_overrides", "read_config_source",
    "read_train_config", "parse_yaml", "resolve_init_from", "init_from_spec", "check_init_architecture",
    "ABSENT", "config_differences", "describe_differences",
    "MAX_STEPS", "MAX_SEED", "MAX_WORKERS", "MAX_BUILTIN_LENGTH", "MAX_BATCH", "MAX_IMAGES", "MAX_LOG_IMAGES",
    "MAX_TIMEOUT_S",
]
