"""Training: the configuration, the one training loop, the tokenizer (Stage 1A / 1B) and token
generator trainers."""

from .config import TrainConfig, TrainSpec, load_config
from .loop import TrainingStopped
from .trainer import Trainer

__all__ = ["TrainConfig", "TrainSpec", "load_config", "Trainer", "TrainingStopped"]
