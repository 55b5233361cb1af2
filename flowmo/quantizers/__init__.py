"""Quantizers, the model's bottleneck: every one returns a :class:`QuantizerOutput`. Discrete:
LFQ, BSQ, FSQ, VQ (tokens); continuous: :class:`DiagonalGaussian` (``kl``) and :class:`Identity`
(``identity``), which have no tokens."""

from .base import Quantizer, QuantizerOutput
from .binary import BinaryQuantizer, lfq_entropy_terms
from .bsq import BSQ
from .fsq import FSQ
from .identity import Identity
from .kl import DiagonalGaussian
from .lfq import LFQ
from .vq import VQ, VQSpec

__all__ = ["Quantizer", "QuantizerOutput", "BinaryQuantizer", "LFQ", "BSQ", "FSQ", "VQ", "VQSpec", "DiagonalGaussian",
           "Identity", "lfq_entropy_terms"]
