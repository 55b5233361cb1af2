"""Training: configuration, data, the Stage 1A / 1B trainer, checkpoints."""

from .config import TrainConfig, TrainSpec, load_config
from .trainer import Trainer, TrainingStopped

__all__ = ["TrainConfig", "TrainSpec", "load_config", "Trainer", "TrainingStopped"]
