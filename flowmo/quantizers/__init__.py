"""Quantizers, the model's bottleneck: every one returns a :class:`QuantizerOutput`. Discrete:
LFQ, FSQ (tokens); continuous: :class:`DiagonalGaussian` (``kl``) and :class:`Identity`
(``identity``), which have no tokens."""

from .base import Quantizer, QuantizerOutput
from .fsq import FSQ
from .identity import Identity
from .kl import DiagonalGaussian
from .lfq import LFQ, lfq_entropy_terms

__all__ = ["Quantizer", "QuantizerOutput", "LFQ", "FSQ", "DiagonalGaussian", "Identity", "lfq_entropy_terms"]
