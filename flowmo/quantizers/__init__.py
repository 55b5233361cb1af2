"""Quantizers: every one returns a :class:`QuantizerOutput`."""

from .base import Quantizer, QuantizerOutput
from .binary import BinaryQuantizer, lfq_entropy_terms
from .bsq import BSQ
from .fsq import FSQ
from .lfq import LFQ
from .vq import VQ, VQSpec

__all__ = ["Quantizer", "QuantizerOutput", "BinaryQuantizer", "LFQ", "BSQ", "FSQ", "VQ", "VQSpec", "lfq_entropy_terms"]
