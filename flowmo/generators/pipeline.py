"""Images from a token generator: load a generator folder, sample token sequences, and decode
them through the tokenizer that made the generator's training tokens.

A generator folder (:meth:`TokenGenerator.save_pretrained`) records, in its ``metadata``, the
token layout its sequences follow (``"layout"``: :meth:`flowmo.data.token_layout.TokenLayout.to_json`
or the same object as a dict), the tokenizer's spec fingerprint (``"tokenizer_fingerprint"``), the
digest of the weights that make the tokenizer's tokens (``"tokenizer_weights"``:
:func:`flowmo.state_dicts.token_weights_digest`, or the whole model's digest in folders written
before it; absent from folders written before either existed) and the class names (``"classes"``).
:func:`generate_images` refuses a tokenizer other than the one the layout names
(:meth:`TokenLayout.check_tokenizer`: its reason in the message) or, where the digest is recorded,
one of the same spec with other weights (:func:`check_tokenizer`), then turns each
sequence into tokenizer indices (:meth:`TokenLayout.from_sequence`), the indices into the quantized
code (``FlowMo.tokens_to_code``, or ``quantizer.group_indices_to_codes`` for the entropy-group
layout) and the code into images (``FlowMo.decode`` with the tokenizer's sampler), image ``i``
from the library's one per-image noise recipe :func:`flowmo.samplers.noise.image_noise` ``(seed, [i])``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

from flowmo.samplers.noise import image_noise
from flowmo.data.token_layout import TokenLayout
from flowmo.data.tokens import check_weights_digest
from flowmo.nets.frozen import evaluating
from flowmo.spec import no_tokens_error
from flowmo.state_dicts import makes_the_same_tokens, token_weights_digest

from ._checks import check_int
from flowmo.generators.base import TokenGenerator

__all__ = ["recorded_layout", "class_names", "resolve_classes", "check_tokenizer",
           "sequences_to_code", "GeneratedImages", "generate_images"]

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------- metadata
def recorded_layout(metadata: Mapping[str, Any]) -> Optional[TokenLayout]:
    """The token layout a generator folder's metadata records under ``"layout"`` (a
    :meth:`TokenLayout.to_json` string or the same object as a dict), or None when it records
    none. Raises ValueError for a malformed one."""
    raw = metadata.get("layout")
    if raw is None:
        return None
    text = raw if isinstance(raw, str) else json.dumps(raw)
    try:
        return TokenLayout.from_json(text)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the generator's recorded token layout is malformed: {e}") from None


def class_names(generator: TokenGenerator) -> Optional[list[str]]:
    """The class names the generator's metadata records (``"classes"``: one per class index), or
    None when it records none (or a list that does not have ``num_classes`` strings)."""
    names = generator.metadata.get("classes")
    if (isinstance(names, list) and len(names) == generator.num_classes
            and all(isinstance(n, str) for n in names)):
        return list(names)
    return None


def resolve_classes(items: Sequence[Union[str, int]], generator: TokenGenerator) -> list[int]:
    """Class indices of ``items``: each a recorded class name (:func:`class_names`) or an index
    (an int, or a string of digits) in [0, num_classes); a string that is both a recorded name
    and a number means the class of that NAME (class folders named 0, 1, 10, 2, ... sort by
    name, so the class named "2" may have index 3). ``["all"]`` (when no class is named "all")
    means every class, in index order.

    Raises:
        ValueError: an unconditional generator, an empty list, an unknown name (the message lists
            the known ones), an index out of range, or a class given twice.
    """
    c = generator.num_classes
    if c == 0:
        raise ValueError("this generator is unconditional (num_classes = 0): it takes no classes")
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
        raise ValueError(f"classes must be a non-empty list of class names or indices, got {items!r}")
    names = class_names(generator) or []
    if list(items) == ["all"] and "all" not in names:
        return list(range(c))
    out: list[int] = []
    for item in items:
        if isinstance(item, str) and item in names:
            idx = names.index(item)
        elif isinstance(item, str) and item.strip().isdigit():
            idx = int(item.strip())
        elif isinstance(item, int) and not isinstance(item, bool):
            idx = item
        else:
            known = (f"the generator's classes are: {', '.join(names)}" if names
                     else "the generator records no class names; give indices")
            raise ValueError(f"unknown class {item!r}: {known} (or an index in [0, {c}))")
        if not 0 <= idx < c:
            raise ValueError(f"class index {idx} is out of range: the generator has {c} classes, [0, {c})")
        if idx in out:
            raise ValueError(f"class {item!r} is given twice")
        out.append(idx)
    return out


def check_tokenizer(generator: TokenGenerator, tokenizer: Any, layout: Optional[TokenLayout] = None) -> TokenLayout:
    """The token layout to decode the generator's sequences with, checked against ``tokenizer``.

    Args:
        generator: the token generator.
        tokenizer: a :class:`flowmo.FlowMo` model.
        layout: the layout (default: the one the generator's metadata records).

    Raises:
        ValueError: a tokenizer whose bottleneck is continuous (``kl``, ``identity``: no
            tokens); no layout given or recorded; the layout's sequence length or vocabulary is
            not the generator's; the tokenizer is not the one the layout (and the metadata's
            ``"tokenizer_fingerprint"``) names, with the reason (:meth:`TokenLayout.check_tokenizer`);
            the metadata records the tokenizer's weights digest (``"tokenizer_weights"``) and this
            tokenizer does not make the same tokens (:func:`flowmo.state_dicts.makes_the_same_tokens`:
            its encoder and quantizer weights differ): "same architecture, other weights" (a
            retrained or re-initialised tokenizer makes other tokens; a decoder post-trained with
            the encoder frozen, e.g. a few-step decoder, makes the same ones and is accepted). Without a
            recorded digest only the spec is checked.
    """
    if not tokenizer.quantizer.discrete:
        raise no_tokens_error(tokenizer.spec.quantizer.name, "a token generator", owner="the tokenizer's",
                              fix="a generator decodes through the discrete tokenizer it was trained on")
    layout = recorded_layout(generator.metadata) if layout is None else layout
    if not isinstance(layout, TokenLayout):
        raise ValueError(f"layout must be a TokenLayout: the generator records no token layout, got {type(layout).__name__}")
    if (layout.seq_len, layout.vocab_size) != (generator.seq_len, generator.vocab_size):
        raise ValueError(f"the token layout gives sequences of {layout.seq_len} tokens in [0, {layout.vocab_size}) but the "
                         f"generator models {generator.seq_len} tokens in [0, {generator.vocab_size})")
    fp = generator.metadata.get("tokenizer_fingerprint")
    if fp is not None and fp != layout.fingerprint:
        raise ValueError(f"the generator's metadata names the tokenizer fingerprint {fp} but its layout {layout.fingerprint}")
    weights = generator.metadata.get("tokenizer_weights")
    if weights is not None:
        try:
            check_weights_digest(weights, "the generator's metadata \"tokenizer_weights\"")
        except (TypeError, ValueError) as e:
            raise ValueError(f"{e}: the folder is damaged") from None
    layout.check_tokenizer(tokenizer, what="the generator's tokens")
    if weights is not None and not makes_the_same_tokens(weights, tokenizer):
        raise ValueError(f"the generator's tokens were made by a tokenizer of the same architecture, other weights (digest "
                         f"{weights[:16]}..., not {token_weights_digest(tokenizer)[:16]}...): use the one it was trained on")
    return layout


def sequences_to_code(tokenizer: Any, layout: TokenLayout, sequences: Tensor) -> Tensor:
    """Generator sequences int64 (N, L) -> the tokenizer's quantized code (N, k, C) in its dtype,
    on its device, k = ``layout.tokens`` (T, or fewer for a layout of prefixes):
    :meth:`TokenLayout.from_sequence` (which checks the values), then the quantizer's
    ``indices_to_codes`` (``"token"`` layout) or ``group_indices_to_codes`` (``"group"``). Errors
    as those raise."""
    indices = layout.from_sequence(sequences, "sequences").to(tokenizer.device)  # its values checked there
    if layout.kind == "group":
        return tokenizer.quantizer.group_indices_to_codes(indices).to(tokenizer.dtype)
    return tokenizer.quantizer.indices_to_codes(indices).to(tokenizer.dtype)  # a prefix too (any tokenizer)


# ----------------------------------------------------------------------------- generation
@dataclass
class GeneratedImages:
    """What :func:`generate_images` returns.

    images: float32 (N, 3, H, W) in [-1, 1] on the tokenizer's device (clamped; H = W = the
        tokenizer's image size).
    tokens: int64 (N, L) the generator's sequences, on the generator's device.
    labels: int64 (N,) the classes asked (the null class ``num_classes`` when unconditional).
    forward_passes: the generator's network calls over all batches (a stacked CFG pair counts one).
    nfe: the generator's network evaluations per image (2 per guided step).
    steps: the generator's decoding steps per batch.
    decoder_calls: the tokenizer decoder's evaluations per image.
    """

    images: Tensor
    tokens: Tensor
    labels: Tensor
    forward_passes: int
    nfe: int
    steps: int
    decoder_calls: int


def generate_images(generator: TokenGenerator, tokenizer: Any, labels: Union[Sequence[int], Tensor, None] = None, /,
                    *, num_images: Optional[int] = None, steps: Optional[int] = None, temperature: float = 1.0,
                    cfg_scale: float = 1.0, top_k: Optional[int] = None, seed: int = 0,
                    rng: Optional[torch.Generator] = None, batch_size: int = 16, sampler: Any = None,
                    layout: Optional[TokenLayout] = None, image_ids: Optional[Sequence[int]] = None,
                    num_tokens: Optional[int] = None,
                    progress: Optional[Callable[[int], None]] = None) -> GeneratedImages:
    """Sample token sequences with ``generator`` and decode them to images with ``tokenizer``.

    Args:
        generator: a :class:`TokenGenerator` (e.g. from :func:`load_generator`).
        tokenizer: the :class:`flowmo.FlowMo` model whose tokens the generator learned.
        labels: the class of each image (ints in [0, num_classes), a list or an int tensor (N,)),
            or None for unconditional images (then ``num_images`` gives N).
        num_images: N when ``labels`` is None.
        steps, temperature, cfg_scale, top_k: passed to ``generator.generate`` (see
            :meth:`TokenGenerator.generate`).
        seed: a non-negative int: the decoding noise of image ``i`` is
            ``image_noise(seed, [image_ids[i]])``, and, unless ``rng`` is given, the token draws
            come from ``torch.Generator(generator's device).manual_seed(seed)`` (one generator for
            all batches, in order: the same seed and ``batch_size`` give the same images).
        rng: a ``torch.Generator`` on the generator's device for the token draws instead.
        batch_size: images per generator call and per decoder call (an int >= 1).
        sampler: the tokenizer's sampler, as ``FlowMo.decode`` takes it (None: its spec's).
        layout: the token layout (default: the generator's recorded one).
        image_ids: the ids of the images for the decoding noise (default 0 .. N-1).
        num_tokens: generate only the first k latent tokens of each image (an int in [1, the
            layout's tokens]; an autoregressive generator stops early) and decode them with the
            rest absent (``FlowMo.decode(num_tokens=k)``: ordered tokens, nested dropout).
            A layout of prefixes (a generator trained on ``tokenize --num-tokens`` tokens)
            decodes the same way without it.
        progress: called with the number of images finished after each batch.

    Returns:
        :class:`GeneratedImages`.

    Raises:
        ValueError: a tokenizer other than the generator's (the reason: fingerprint or layout;
            :func:`check_tokenizer`), bad labels / counts / settings (naming the argument);
            ``num_tokens`` below the layout's tokens for a generator that samples every position
            at once (MaskGiT: train it on a token set of prefixes instead).
        TypeError: arguments of the wrong type.
    """
    if not isinstance(generator, TokenGenerator):
        raise TypeError(f"generator must be a TokenGenerator, got {type(generator).__name__}")
    if not isinstance(tokenizer, torch.nn.Module) or not hasattr(type(tokenizer), "decode"):
        raise TypeError(f"tokenizer must be a flowmo.FlowMo model, got {type(tokenizer).__name__}")
    layout = check_tokenizer(generator, tokenizer, layout)
    early: dict[str, int] = {}
    if num_tokens is not None:
        layout = layout.prefix(num_tokens)
        if layout.seq_len < generator.seq_len:
            if not generator.samples_prefixes:
                raise ValueError(f"num_tokens ({num_tokens}) is below the {generator.seq_len // layout.groups} tokens "
                                 f"a {generator.name} generator samples all at once: it cannot stop early (an "
                                 "autoregressive one can); for fewer, train one on a token set of that many (flowmo "
                                 "tokenize --classes --num-tokens K)")
            early = {"length": layout.seq_len}
            if steps is not None and steps != layout.seq_len:
                raise ValueError(f"steps must be None or {layout.seq_len} with num_tokens={num_tokens}: an "
                                 f"autoregressive generator makes one step per sequence element ({layout.groups} per "
                                 "token)")
    seed = check_int(seed, "seed", minimum=0, maximum=2**63 - 1)  # torch.Generator.manual_seed's range
    batch_size = check_int(batch_size, "batch_size")
    if (labels is None) == (num_images is None):
        raise ValueError("give labels or num_images, not both: num_images is required when labels is None")
    if labels is None:
        n = check_int(num_images, "num_images", minimum=0)
        label_t = torch.full((n,), generator.null_class, dtype=torch.long)
    else:
        if isinstance(labels, Tensor):
            label_t = labels.detach().to("cpu")
        else:
            if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in labels):
                raise TypeError(f"labels must be a sequence of ints or an int64 tensor (N,), got {labels!r:.80}")
            label_t = torch.tensor(list(labels), dtype=torch.long).reshape(-1)
        if label_t.ndim != 1:
            raise ValueError(f"labels must have shape (N,), got {tuple(label_t.shape)}")
        n = label_t.shape[0]
    ids = list(range(n)) if image_ids is None else list(image_ids)
    if len(ids) != n:
        raise ValueError(f"image_ids must have one id per image ({n}), got {len(ids)}")
    if rng is None:
        rng = torch.Generator(device=generator.device).manual_seed(seed)
    size = tokenizer.spec.image_size
    images, tokens = [], []
    passes = nfe = made_steps = calls = 0
    with evaluating(tokenizer):  # eval mode, no gradients; each submodule's training flag given back
        for a in range(0, n, batch_size):
            b = min(a + batch_size, n)
            lab = label_t[a:b].to(generator.device)
            out = generator.generate(None if labels is None else lab, batch_size=b - a if labels is None else None,
                                     steps=steps, temperature=temperature, cfg_scale=cfg_scale, top_k=top_k,
                                     generator=rng, **early)
            passes += out.forward_passes
            nfe, made_steps = out.nfe, out.steps
            code = sequences_to_code(tokenizer, layout, out.tokens)
            kept = code.shape[1]
            if kept < tokenizer.spec.code_length:  # a prefix: the rest absent
                code = torch.cat((code, code.new_zeros(code.shape[0], tokenizer.spec.code_length - kept, code.shape[2])), 1)
            noise = image_noise(seed, ids[a:b], (3, size, size), device=tokenizer.device, dtype=tokenizer.dtype)
            decoded = tokenizer.decode(code, noise=noise, sampler=sampler,
                                       num_tokens=kept if kept < tokenizer.spec.code_length else None)
            calls = int(decoded.decoder_calls)
            images.append(decoded.images.float().clamp(-1, 1))
            tokens.append(out.tokens)
            if progress is not None:
                progress(b - a)
    s = size
    return GeneratedImages(
        images=torch.cat(images) if images else torch.empty(0, 3, s, s, device=tokenizer.device),
        tokens=torch.cat(tokens) if tokens else torch.empty(0, layout.seq_len, dtype=torch.long,
                                                            device=generator.device),
        labels=label_t, forward_passes=passes, nfe=nfe, steps=made_steps, decoder_calls=calls)
