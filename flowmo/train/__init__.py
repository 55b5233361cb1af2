"""Training: configuration, data, the Stage 1A / 1B trainer, checkpoints."""

from flowmo.train.config import TrainConfig, load_config
from flowmo.train.train_spec import TrainSpec
from flowmo.train.trainer import Trainer
from flowmo.train.loop import TrainingStopped

__all__ = ["TrainConfig", "TrainSpec", "load_config", "Trainer", "TrainingStopped"]
