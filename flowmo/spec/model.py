"""The whole model's spec: :class:`FlowMoSpec`, composing the component specs and the sampler
spec, with its checks across components, the loss terms of each training stage, JSON and the
architecture fingerprint."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import re
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field, SerializeAsAny, model_validator

from ..registry import QUANTIZERS
from flowmo.registry.spec_base import LossTerm, SpecModel
from .components import (
    BackboneSpec,
    FatLogitNormalTimeSpec,
    FlowLossSpec,
    LFQSpec,
    MMDiTSpec,
    ModeSeekingSpec,
    PosttrainSpec,
    QuantizerSpec,
    RectifiedFlowLossSpec,
    TimeSamplerSpec,
)
from flowmo.registry.spec_base import replace_spec
from .sampling import SamplerSpec
from flowmo.registry.scalars import MAX_IMAGE_SIZE, MAX_TOKENS, SpecFloat, SpecInt, is_bool


PRESET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""The form of a sampler preset's name (``FlowMoSpec.sampler_presets``): usable on a command line as is."""


def check_preset_name(name: Any, what: str) -> str:
    """``name`` if it can name a model's own sampler preset: a str of :data:`PRESET_NAME`'s form
    that does not read as a JSON value (``1``, ``4.0``, ``null``, ``true``, ``NaN``: a command line's
    ``--sampler`` would parse it as JSON) and is not a global preset's name (``release``, ``fast``,
    or one added to :data:`flowmo.samplers.SAMPLER_PRESETS`: the model's would silently mean
    something else). ValueError naming ``what`` otherwise."""
    from .sampling import SAMPLER_PRESETS

    if not isinstance(name, str) or not PRESET_NAME.fullmatch(name):
        raise ValueError(f"{what}: a preset name must be letters, digits, '_', '-' or '.' (at most 64), got {name!r}")
    if _reads_as_json(name):
        raise ValueError(f"{what}: the preset name {name!r} reads as a JSON value; give it a name with a letter")
    if name in SAMPLER_PRESETS:
        raise ValueError(f"{what}: {name!r} is a global sampler preset's name; a model's own preset needs another name")
    return name


def _reads_as_json(text: str) -> bool:
    """Whether ``text`` parses as a JSON value (``1``, ``4.0``, ``null``, ``true``, ``NaN``), as a
    command line's ``--sampler`` would read it."""
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- the whole model
class NestedDropoutSpec(SpecModel):
    """Nested token dropout (FlexTok: Bachmann et al., ICML 2025, Sec. 3): in the Stage 1A loss
    each image keeps only its first k of the T latent tokens in the decoder's conditioning, the
    others absent (their code and their mask channel zero, as the unconditional input has them),
    so that one model decodes any prefix and the first tokens learn the coarse content. k is
    drawn per image: ``pow2`` uniformly among the powers of two from ``min_tokens`` up to T
    (and T itself when it is not one: FlexTok's 1, 2, 4, ..., 256), ``uniform`` uniformly in
    ``min_tokens`` .. T; with probability ``full_probability`` an image keeps all T instead
    (ours, not FlexTok's: it gives full-length decoding more of a short budget)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    distribution: Literal["pow2", "uniform"] = Field("pow2", description="how k, the tokens kept, is drawn")
    min_tokens: SpecInt = Field(1, ge=1, le=MAX_TOKENS, description="the fewest tokens kept")
    full_probability: SpecFloat = Field(0.0, ge=0.0, le=1.0,
                                    description="the probability that an image keeps all T tokens (else k is drawn)")

    def choices(self, tokens: int) -> list[int]:
        """The values k is drawn from uniformly, for T = ``tokens``."""
        if self.distribution == "uniform":
            return list(range(self.min_tokens, tokens + 1))
        ks = [2 ** i for i in range(tokens.bit_length()) if self.min_tokens <= 2 ** i <= tokens]
        return ks + ([tokens] if tokens not in ks else [])


class FlowMoSpec(SpecModel):
    """Everything that determines a FlowMo model. Round-trips through JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    image_size: SpecInt = Field(256, gt=0, le=MAX_IMAGE_SIZE, description=f"pixels per side (at most {MAX_IMAGE_SIZE})")
    patch_size: SpecInt = Field(4, gt=0, le=MAX_IMAGE_SIZE, description="pixels per patch side; divides image_size")
    code_length: SpecInt = Field(256, gt=0, le=MAX_TOKENS, description=f"latent tokens per image (at most {MAX_TOKENS})")
    code_channels: SpecInt = Field(
        18, gt=0, le=MAX_TOKENS, description=f"channels (bits, for LFQ) per latent token (at most {MAX_TOKENS})"
    )
    encoder: SerializeAsAny[BackboneSpec]
    decoder: SerializeAsAny[BackboneSpec]
    quantizer: SerializeAsAny[QuantizerSpec] = Field(default_factory=lambda: LFQSpec())
    time_sampler: SerializeAsAny[TimeSamplerSpec] = Field(
        default_factory=lambda: FatLogitNormalTimeSpec()
    )
    flow_loss: SerializeAsAny[FlowLossSpec] = Field(
        default_factory=lambda: RectifiedFlowLossSpec()
    )
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    sampler_presets: dict[str, SamplerSpec] = Field(
        default_factory=dict,
        description="named samplers of this model (a few-step decoder records the one it was trained for, e.g. "
                    "'distillation-4'); decode(sampler=NAME) and --sampler NAME look here before the global presets")
    posttrain: SerializeAsAny[PosttrainSpec] = Field(
        default_factory=lambda: ModeSeekingSpec()
    )
    nested_dropout: Optional[NestedDropoutSpec] = Field(
        None, description="nested token dropout in the Stage 1A loss (ordered, variable-rate tokens); None: off, "
                          "as the release")

    @model_validator(mode="before")
    @classmethod
    def _own_preset(cls, data: Any) -> Any:
        """``sampler`` given as the name of one of this spec's own ``sampler_presets`` takes it."""
        if isinstance(data, dict) and isinstance(data.get("sampler"), str) and isinstance(
                data.get("sampler_presets"), dict) and data["sampler"] in data["sampler_presets"]:
            data = {**data, "sampler": data["sampler_presets"][data["sampler"]]}
        return data

    @model_validator(mode="after")
    def _check(self) -> "FlowMoSpec":
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})")
        for name in self.sampler_presets:
            check_preset_name(name, "sampler_presets")
        try:
            self.quantizer.check_channels(self.code_channels)
        except ValueError as e:
            raise ValueError(f"quantizer: {e}") from None
        if self.nested_dropout is not None and self.nested_dropout.min_tokens > self.code_length:
            raise ValueError(f"nested_dropout.min_tokens ({self.nested_dropout.min_tokens}) must be at most "
                             f"code_length ({self.code_length})")
        if isinstance(self.decoder, MMDiTSpec) and self.decoder.latent_attention == "causal":
            raise ValueError("decoder.latent_attention must be 'full': under 'causal' the image tokens never attend to "
                             "the latent tokens, so the decoder would ignore the code (the option orders an encoder)")
        return self

    # -- conveniences
    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def bits_per_pixel(self) -> Optional[float]:
        """Bits of the discrete code per image pixel: code_length * bits per token / image_size**2;
        None for a continuous bottleneck (``kl``, ``identity``: no tokens, so no count of bits).

        Bits per token are the quantizer's :attr:`flowmo.quantizers.Quantizer.bits_per_token`
        (log2 of its codebook size unless the quantizer declares otherwise; LFQ: code_channels,
        FSQ: sum of log2 of its levels), read from the quantizer this spec builds.
        """
        bits = self.bits_per_token
        return None if bits is None else self.code_length * bits / (self.image_size**2)

    @property
    def bits_per_token(self) -> Optional[float]:
        """Bits of one token: the quantizer's ``bits_per_token`` (built from this spec, no weights
        loaded; built under ``torch.random.fork_rng``, so that a quantizer that draws its initial
        codebook leaves torch's global generator as it was); None for a continuous bottleneck."""
        import torch

        with torch.random.fork_rng(devices=[]):
            bits = QUANTIZERS.build(self.quantizer, channels=self.code_channels).bits_per_token
        return None if bits is None else float(bits)

    def loss_terms(self, stage: Literal["1a", "1b"] = "1a") -> list[LossTerm]:
        """The terms of the training loss of ``stage``, as :meth:`flowmo.FlowMo.loss` ("1a")
        and :meth:`flowmo.FlowMo.posttrain_loss` ("1b") return them (in train and eval mode alike).

        Stage 1A: the flow loss's terms plus the quantizer's (``quantizer/...``). Stage 1B
        (the release's recipe): the flow loss's terms times ``posttrain.flow_weight``
        (omitted when 0), the quantizer's terms (reported; they carry no gradient, since
        the encoder is frozen) and the post-training objective's terms.

        Raises ValueError if ``stage`` is not "1a"/"1b", or a component (e.g. a user-registered
        one) does not declare its terms (its spec's ``loss_terms()`` returns None) or declares
        them wrongly: the declaration must be a list or tuple of :class:`LossTerm` (or of
        ``(name, weight, what)`` triples) with non-empty str names, finite real weights and str
        descriptions, and the names of the stage's terms must be unique, within and across the
        components (a quantizer's names count with their ``quantizer/`` prefix).
        """
        if not isinstance(stage, str) or stage not in ("1a", "1b"):
            raise ValueError(f"stage must be '1a' or '1b', got {stage!r}")

        flow = _declared_terms("flow_loss", self.flow_loss)
        quant = [LossTerm(f"quantizer/{t.name}", t.weight, t.what) for t in _declared_terms("quantizer", self.quantizer)]
        if stage == "1a":
            parts = [("flow_loss", self.flow_loss, flow), ("quantizer", self.quantizer, quant)]
        else:
            fw = self.posttrain.flow_weight
            kept = [LossTerm(t.name, t.weight * fw, t.what) for t in flow] if fw > 0 else []
            parts = [("flow_loss", self.flow_loss, kept), ("quantizer", self.quantizer, quant),
                     ("posttrain", self.posttrain, _declared_terms("posttrain", self.posttrain))]
        owner: dict[str, str] = {}
        out: list[LossTerm] = []
        for part, spec, terms in parts:
            for t in terms:
                if t.name in owner:
                    raise ValueError(f"{part} {spec.name!r} declares the loss term {t.name!r} twice (also {owner[t.name]})")
                owner[t.name] = f"{part} {spec.name!r}"
                out.append(t)
        return out

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(indent=kw.pop("indent", 2), **kw)

    @classmethod
    def from_json(cls, text: str) -> "FlowMoSpec":
        return cls.model_validate_json(text)

    def architecture(self) -> dict[str, Any]:
        """The architecture-relevant fields as JSON data: image and patch size, code length and
        channels, encoder, decoder and quantizer, without ``gradient_checkpointing`` (it trades
        memory for compute; the numbers are the same). Weights are interchangeable, and tokens
        valid, only between specs with equal architectures; the sampler, its presets and the
        training objectives (time sampler, flow loss, post-training) are not part of it."""
        d = self.model_dump(mode="json", include={"image_size", "patch_size", "code_length", "code_channels",
                                                  "encoder", "decoder", "quantizer"})
        for k in ("encoder", "decoder"):
            d[k].pop("gradient_checkpointing", None)
            if d[k].get("latent_attention") == "full":  # the default: absent, as before the field existed
                del d[k]["latent_attention"]
        return d

    def fingerprint(self) -> str:
        """A short hash of :meth:`architecture` (tokens are only valid between equal fingerprints)."""
        blob = json.dumps(self.architecture(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **changes: Any) -> "FlowMoSpec":
        """A copy with ``changes`` applied, validated again (semantics: :func:`replace_spec`).

        A dict merges into the nested spec: ``replace(encoder={"depth": 3})`` changes the
        encoder's depth only, ``replace(sampler={"steps": 4})`` keeps the solver, grid and
        guidance, ``replace(sampler={"guidance": {"interval_sigma": [0.2, 1.0]}})`` replaces
        the guidance interval. Naming another component drops the old one's fields:
        ``replace(quantizer={"name": "fsq", "levels": [8, 8, 8, 5, 5, 5]}, code_channels=6)``
        (the rest of FSQ from its defaults); ``quantizer="fsq"`` is short for
        ``{"name": "fsq"}``. A spec object, list, tuple or scalar replaces the field whole;
        ``sampler="fast"`` takes a sampler preset, which is a complete sampler: it replaces the
        whole sampler, a custom grid, solver or guidance included (edit it afterwards:
        ``replace(sampler="fast").replace(sampler={"grid": "linear"})``). Unknown fields
        raise ValueError naming them;
        an invalid result raises pydantic's ValidationError (a ValueError) naming the fields.
        """
        return replace_spec(self, changes)


def _declared_terms(part: str, spec: Any) -> list[LossTerm]:
    """``spec.loss_terms()`` checked (see :meth:`FlowMoSpec.loss_terms`), as a list of LossTerm."""
    where = f"{part} {spec.name!r}"
    terms = spec.loss_terms()
    if terms is None:
        raise ValueError(f"{where} does not declare its loss terms: give its class a classmethod `loss_terms(cls, spec)` "
                         "returning [flowmo.LossTerm(name, weight, what), ...] (or its spec class a loss_terms(self))")
    if isinstance(terms, LossTerm) or not isinstance(terms, (list, tuple)):
        got = "one LossTerm" if isinstance(terms, LossTerm) else repr(terms)
        raise ValueError(f"{where}: loss_terms() must return a list of LossTerm(name, weight, what), got {got}")
    out: list[LossTerm] = []
    for i, t in enumerate(terms):
        if not isinstance(t, (list, tuple)) or len(t) != 3:
            raise ValueError(f"{where}: loss_terms() entry {i} must be a LossTerm(name, weight, what), got {t!r}")
        name, weight, what = t
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: loss_terms() entry {i}: the name must be a non-empty str, got {name!r}")
        try:
            w = float(weight) if isinstance(weight, numbers.Real) and not is_bool(weight) else math.nan
        except (OverflowError, TypeError, ValueError):
            w = math.nan
        if not math.isfinite(w):
            raise ValueError(f"{where}: loss term {name!r}: the weight must be a finite number, got {weight!r}")
        if not isinstance(what, str):
            raise ValueError(f"{where}: loss term {name!r}: the description must be a str, got {what!r}")
        out.append(LossTerm(name, w, what))
    return out
