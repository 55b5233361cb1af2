"""No bottleneck: the encoder's code passes unchanged (the release's ``noop``)."""

from __future__ import annotations

from torch import Tensor

from ..registry import QUANTIZERS
from .base import Quantizer, QuantizerOutput

__all__ = ["Identity"]


@QUANTIZERS.register("identity")
class Identity(Quantizer):
    """values = z: the encoder's (B, T, C) output is the decoder's code, unchanged (the same
    tensor, gradients to the encoder), in train and eval mode alike; no loss terms.

    Continuous: ``discrete`` is False, no codebook or indices (``indices`` None); the model has
    no tokens. An autoencoder without any bottleneck but the code's size (T x C values per
    image): the release's ``noop`` quantization.

    Args:
        channels: C, the code's channels per token (wiring).
    """

    discrete = False

    def __init__(self, *, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        return QuantizerOutput(z, None)

    def codes_to_indices(self, codes: Tensor) -> Tensor:
        raise self._no_codebook("codes_to_indices")

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        raise self._no_codebook("indices_to_codes")
