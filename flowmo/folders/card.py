"""The model card a model folder carries: ``README.md`` with the Hugging Face Hub's metadata header
(YAML between ``---`` lines: library, license, tags; written by ``huggingface_hub.ModelCardData``), then the model in words: its tokens, bits,
image size and parameters, its sampler and named presets, its training and evaluation when
known, and how to load it. :meth:`flowmo.FlowMo.save_pretrained` writes it."""

from __future__ import annotations

from typing import Any, Mapping, Optional

__all__ = ["model_card", "card_weights", "CARD_NAME", "CARD_KEYS"]

CARD_NAME = "README.md"
CARD_KEYS = ("license", "training", "evaluation", "name")
"""The fields ``save_pretrained(card=...)`` takes (:func:`model_card`'s keyword arguments)."""


def _sampler_words(s: Any) -> str:
    fields = {k: v for k, v in s.grid.model_dump(mode="json").items() if k != "name"}
    grid = " ".join([s.grid.name] + [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()])
    words = f"{s.steps} {s.solver.name} step{'s' if s.steps != 1 else ''} on the {grid} grid"
    g = s.guidance
    if g.scale == 1.0:
        words += ", no guidance"
    elif g.interval is None:
        words += f", classifier-free guidance {g.scale:g}"
    else:
        words += f", classifier-free guidance {g.scale:g} for t in [{g.interval[0]:.3f}, {g.interval[1]:.3f}]"
    return words


def model_card(spec: Any, *, parameters: Optional[int] = None, license: str = "other",
               training: Optional[Mapping[str, Any]] = None, evaluation: Optional[Mapping[str, float]] = None,
               name: Optional[str] = None) -> str:
    """The text of a model folder's ``README.md`` for ``spec`` (a :class:`flowmo.FlowMoSpec`).

    Args:
        parameters: the model's parameter count (omitted when None).
        license: the Hub's ``license`` field (an SPDX-like id such as ``"mit"``; default
            ``"other"``: flowmo does not know the weights' license).
        training: what is known of the training, shown as given (e.g. ``{"stage": "1a", "steps":
            1200, "data": "built-in photos", "weights": "ema (...)"}``; a ``weights`` entry whose
            first word is ``ema`` or ``raw`` says which weights the folder holds: :func:`card_weights`);
            None: "not recorded".
        evaluation: named figures (e.g. ``{"eval/ema/psnr": 19.84}``), to be of the folder's
            weights; None: "not recorded".
        name: how to load it (a Hub repository id or a folder); default ``"path/to/this/folder"``.

    Raises TypeError / ValueError naming the argument for a license that is not a non-empty
    single-line string, or mappings that are not mappings.
    """
    if not isinstance(license, str) or not license.strip() or "\n" in license:
        raise ValueError(f"license must be a non-empty one-line string (e.g. 'mit'), got {license!r}")
    for arg, v in (("training", training), ("evaluation", evaluation)):
        if v is not None and not isinstance(v, Mapping):
            raise TypeError(f"{arg} must be a mapping or None, got {type(v).__name__}")
    bits_token = spec.bits_per_token  # None: a continuous bottleneck (kl, identity), no tokens
    if bits_token is None:
        code_line = (f"- code: {spec.code_length} vectors of {spec.code_channels} channels per image, continuous "
                     f"({spec.quantizer.name} bottleneck: no tokens, no bits per pixel)")
    else:
        code_line = (f"- tokens: {spec.code_length} per image, {bits_token:g} bits each ({spec.quantizer.name} "
                     f"quantizer, {spec.code_channels} channels): {bits_token * spec.code_length:g} bits per image, "
                     f"{spec.bits_per_pixel:.4g} bits per pixel")
    from huggingface_hub import ModelCardData

    header = ModelCardData(library_name="flowmo", license=license,
                           tags=["image-tokenizer", "flowmo", "diffusion-autoencoder"]).to_yaml()
    lines = ["---", header, "---", "",
             f"# {name or 'FlowMo tokenizer'}", "",
             "A FlowMo image tokenizer (Sargent et al., \"Flow to the Mode\", arXiv 2503.11056): a transformer "
             "diffusion autoencoder that turns an image into a short sequence of "
             + ("discrete tokens" if bits_token is not None else "continuous latent vectors")
             + " and back, saved by the flowmo library (`FlowMo.save_pretrained`).", "",
             "## The model", "",
             f"- images: {spec.image_size} x {spec.image_size} RGB, patch {spec.patch_size}",
             code_line,
             f"- encoder: {spec.encoder.name}, width {spec.encoder.width}, depth {spec.encoder.depth}; decoder: "
             f"{spec.decoder.name}, width {spec.decoder.width}, depth {spec.decoder.depth}"]
    nd = spec.nested_dropout
    if nd is not None and bits_token is not None:
        lines.append(f"- ordered tokens (trained with nested dropout, k {nd.distribution} from {nd.min_tokens}): it "
                     f"decodes any prefix of its tokens, `detokenize(tokens[:, :k])` or `num_tokens=k`")
    if parameters is not None:
        lines.append(f"- parameters: {parameters:,}")
    if bits_token is not None:
        lines.append(f"- spec fingerprint (tokens are valid between equal fingerprints): {spec.fingerprint()}")
    lines += ["", "## Decoding", "", f"- default sampler: {_sampler_words(spec.sampler)}"]
    for preset, s in spec.sampler_presets.items():
        lines.append(f"- preset `{preset}`: {_sampler_words(s)} (`sampler=\"{preset}\"`)")
    lines += ["", "## Training", ""]
    lines += [f"- {k}: {v}" for k, v in training.items()] if training else ["not recorded"]
    lines += ["", "## Evaluation", ""]
    lines += [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in evaluation.items()] \
        if evaluation else ["not recorded"]
    where = name or "path/to/this/folder"
    lines += ["", "## Use", "", "```python", "import flowmo", "",
              f"model = flowmo.FlowMo.from_pretrained({where!r})  # a local folder or a Hub repository id"]
    lines += (["tokens = model.tokenize(images)          # images (B, 3, H, W) in [-1, 1] -> (B, T) int64",
               "images = model.detokenize(tokens)        # the default sampler"] if bits_token is not None else
              ["code = model.quantize(model.encode(images), losses=False).values  # (B, T, C), continuous",
               "images = model.decode(code).images       # the default sampler; or model.reconstruct(images)"])
    lines += ["```", "",
              f"License: {license}.", ""]
    return "\n".join(lines)


def card_weights(text: str) -> Optional[str]:
    """Which weights a model card (the text of a model folder's ``README.md``) says its folder
    holds: ``"ema"`` or ``"raw"``, the first word of the ``- weights: ...`` line of its Training
    section (``flowmo export`` and ``flowmo train --export`` write it); None when it does not say."""
    section = None
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif section == "Training" and line.startswith("- weights: "):
            word = line[len("- weights: "):].split(" ", 1)[0]
            return word if word in ("ema", "raw") else None
    return None
