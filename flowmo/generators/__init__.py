"""Token generators: generative models over a tokenizer's token sequences (class-conditional
or not), trained on the tokens and sampled into tokens that the tokenizer decodes to images.

- :class:`TokenGenerator`: the interface (``loss``, ``generate``, ``config``, folders);
  :class:`GenerationOutput`: what ``generate`` returns.
- :class:`MaskGiT`: bidirectional masked-token transformer, iterative parallel decoding.
- :class:`AutoregressiveGenerator`: a causal (LlamaGen-style) transformer, one token a step.
- :mod:`.schedule`: MaskGIT's cosine mask schedule; :mod:`.sampling`: guidance, top-k,
  temperature sampling.
"""

from .autoregressive import AutoregressiveGenerator
from .base import GenerationOutput, TokenGenerator, read_generator_config
from .maskgit import MaskGiT
from .sampling import guide, gumbel_noise, sample_logits, top_k_filter
from .schedule import (cosine_gamma, decoding_mask_count, decoding_schedule, random_mask, sample_mask_counts,
                       training_mask_count)

__all__ = [
    "TokenGenerator", "GenerationOutput", "read_generator_config", "MaskGiT", "AutoregressiveGenerator",
    "guide", "gumbel_noise", "sample_logits", "top_k_filter", "cosine_gamma", "training_mask_count",
    "sample_mask_counts", "random_mask", "decoding_schedule", "decoding_mask_count",
]
