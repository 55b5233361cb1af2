"""Transformer pieces of FlowMo, each usable alone by another tokenizer."""

from .attention import QKNorm, RMSNorm, SelfAttention, attention
from .backbone import MMDiT
from .base import Backbone
from .double_block import DoubleStreamBlock, mlp
from .embeddings import TimeEmbedding, patchify, timestep_embedding, unpatchify
from .modulation import Modulation, ModulationOut, modulate
from .output import FinalLayer
from .rope import RopeTable, apply_rope, flowmo_positions, rope_angles, rope_freqs

__all__ = [
    "Backbone", "MMDiT", "DoubleStreamBlock", "mlp", "SelfAttention", "QKNorm", "RMSNorm", "attention",
    "TimeEmbedding", "timestep_embedding", "patchify", "unpatchify", "Modulation", "ModulationOut",
    "modulate", "FinalLayer", "RopeTable", "apply_rope", "rope_angles", "rope_freqs", "flowmo_positions",
]
