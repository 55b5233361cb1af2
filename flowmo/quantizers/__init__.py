"""Quantizers: every one returns a :class:`QuantizerOutput`."""

from .base import Quantizer, QuantizerOutput
from .fsq import FSQ
from .lfq import LFQ, lfq_entropy_terms

__all__ = ["Quantizer", "QuantizerOutput", "LFQ", "FSQ", "lfq_entropy_terms"]
