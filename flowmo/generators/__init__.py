"""Token generators: generative models over a tokenizer's token sequences (class-conditional
or not), trained on the tokens and sampled into tokens that the tokenizer decodes to images.

- :class:`TokenGenerator`: the interface (``loss``, ``generate``, ``config``, folders);
  :class:`GenerationOutput`: what ``generate`` returns.
- :class:`MaskGiT`: bidirectional masked-token transformer, iterative parallel decoding.
- :class:`AutoregressiveGenerator`: a causal (LlamaGen-style) transformer, one token a step.
- :mod:`.schedule`: MaskGIT's cosine mask schedule; :mod:`.sampling`: guidance, top-k,
  temperature sampling.
- :mod:`.pipeline`: :func:`load_generator` (a folder, its class found through
  :data:`flowmo.GENERATORS`) and :func:`generate_images` (tokens, then images through the
  tokenizer's decoder; a mismatched tokenizer is refused with the reason).

Every generator is registered in :data:`flowmo.GENERATORS` (wiring: ``vocab_size``, ``seq_len``,
``num_classes``); check one with :func:`flowmo.testing.check_generator`.
"""

from .autoregressive import AutoregressiveGenerator
from flowmo.generators.base import GenerationOutput, TokenGenerator, check_constructed
from flowmo.folders.generator_folder import generator_modules, read_generator_config
from .maskgit import MaskGiT
from flowmo.folders.generator_folder import load_generator
from .pipeline import (GeneratedImages, check_tokenizer, class_names, generate_images,
                       recorded_layout, resolve_classes, sequences_to_code)
from .sampling import guide, gumbel_noise, sample_logits, top_k_filter
from .schedule import (cosine_gamma, decoding_mask_count, decoding_schedule, random_mask, sample_mask_counts,
                       training_mask_count)

__all__ = [
    "TokenGenerator", "GenerationOutput", "read_generator_config", "MaskGiT", "AutoregressiveGenerator",
    "guide", "gumbel_noise", "sample_logits", "top_k_filter", "cosine_gamma", "training_mask_count",
    "sample_mask_counts", "random_mask", "decoding_schedule", "decoding_mask_count",
    "check_constructed", "generator_modules", "load_generator", "generate_images", "GeneratedImages",
    "check_tokenizer", "recorded_layout", "class_names", "resolve_classes", "sequences_to_code",
]
