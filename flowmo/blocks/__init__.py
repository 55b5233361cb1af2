"""Transformer pieces of FlowMo, each usable alone by another tokenizer.

Conventions shared by every piece (each ``forward`` documents its own shapes):
- tokens are (B, N, D); a double-stream block attends over [latent, image] tokens, latent
  first, so a RoPE table covers both in that order (:func:`flowmo_positions`);
- image tokens come from :func:`patchify`, row-major over ``grid = (rows, cols)``;
- flow time t lies in [0, 1] (0 data, 1 noise) and conditions through :class:`TimeEmbedding`
  as a vector (B, D); blocks and final layers built with ``modulation=False`` take none;
- the block's default softmax scale is head_dim**-0.5, FlowMo's (the release's, ``MMDiTSpec``
  ``attn_scale="mup"``) 8 / head_dim.
Bad input raises TypeError / ValueError naming the argument.
"""

from .attention import QKNorm, RMSNorm, SelfAttention, attention, latent_causal_mask
from .backbone import MMDiT
from .base import Backbone
from .double_block import DoubleStreamBlock, mlp
from .embeddings import TimeEmbedding, patchify, timestep_embedding, unpatchify
from .modulation import Modulation, ModulationOut, modulate
from .output import FinalLayer
from .rope import RopeTable, apply_rope, flowmo_positions, rope_angles, rope_freqs

__all__ = [
    "Backbone", "MMDiT", "DoubleStreamBlock", "mlp", "SelfAttention", "QKNorm", "RMSNorm", "attention", "latent_causal_mask",
    "TimeEmbedding", "timestep_embedding", "patchify", "unpatchify", "Modulation", "ModulationOut",
    "modulate", "FinalLayer", "RopeTable", "apply_rope", "rope_angles", "rope_freqs", "flowmo_positions",
]
