"""The spec base of each component kind but the sampler's (backbone, quantizer, time sampler,
perceptual distance, flow loss, post-training objective, token generator) and the specs of the built-in
components of those kinds. A kind's base class dispatches on ``name`` to the spec its
component was registered with; its hooks (``loss_terms``, ``check_channels``) ask the
registered class unless a spec class overrides them."""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal, Optional, Union

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from ..registry import (
    BACKBONES,
    FLOW_LOSSES,
    GENERATORS,
    PERCEPTUAL_DISTANCES,
    POSTTRAIN_OBJECTIVES,
    QUANTIZERS,
    TIME_SAMPLERS,
    Registry,
)
from flowmo.registry.spec_base import ComponentSpec, LossTerm
from .sampling import SamplerSpec, TimeGridSpec
from flowmo.registry.scalars import (
    MAX_ATTN_SCALE,
    MAX_CHAIN_STEPS,
    MAX_DEPTH,
    MAX_MLP_RATIO,
    MAX_TIME_FACTOR,
    MAX_WIDTH,
    ROPE_THETA_RANGE,
    SpecBool,
    SpecFloat,
    SpecInt,
)


_PositiveInt = Annotated[SpecInt, Field(gt=0)]


# ----------------------------------------------------------------------------- backbones
class BackboneSpec(ComponentSpec):
    """Spec of a backbone component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = BACKBONES


class MMDiTSpec(BackboneSpec):
    """The release's double-stream (MM-DiT) transformer."""

    name: Literal["mmdit"] = "mmdit"
    width: SpecInt = Field(gt=0, le=MAX_WIDTH, description=f"hidden size (at most {MAX_WIDTH})")
    heads: SpecInt = Field(gt=0, le=MAX_WIDTH, description="attention heads; divides width")
    depth: SpecInt = Field(gt=0, le=MAX_DEPTH, description=f"number of double-stream blocks (at most {MAX_DEPTH})")
    axes_dim: tuple[_PositiveInt, _PositiveInt, _PositiveInt] = Field(
        description="RoPE dims per position axis, each even; sums to the head dim")
    mlp_ratio: SpecFloat = Field(
        4.0, gt=0, le=MAX_MLP_RATIO,
        description=f"MLP hidden size / width (at most {MAX_MLP_RATIO:g}; int(width * mlp_ratio) must be >= 1)",
    )
    qkv_bias: SpecBool = True
    rope_theta: SpecFloat = Field(10000.0, ge=ROPE_THETA_RANGE[0], le=ROPE_THETA_RANGE[1],
                                  description=f"RoPE base (in [{ROPE_THETA_RANGE[0]:g}, {ROPE_THETA_RANGE[1]:g}])")
    attn_scale: Union[Literal["mup", "standard"], SpecFloat] = Field(
        "mup", description="softmax scale: 'mup' = 8/head_dim (the release), 'standard' = head_dim**-0.5, or a number"
    )
    time_factor: SpecFloat = Field(1000.0, gt=0, le=MAX_TIME_FACTOR,
                                   description=f"t is multiplied by this before the sinusoidal embedding (in (0, "
                                               f"{MAX_TIME_FACTOR:g}])")
    gradient_checkpointing: SpecBool = Field(False, description="recompute each block in backward (saves memory)")
    latent_attention: Literal["full", "causal"] = Field(
        "full", description="'full': every token attends to every token (the release); 'causal': latent token i "
                            "attends to the image tokens and latent tokens 0..i, image tokens to image tokens only, so "
                            "no latent token depends on a later one (an ordered encoder, for nested dropout)")

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def softmax_scale(self) -> float:
        if self.attn_scale == "mup":
            return 8.0 / self.head_dim
        if self.attn_scale == "standard":
            return self.head_dim**-0.5
        return float(self.attn_scale)

    @model_validator(mode="after")
    def _check(self) -> "MMDiTSpec":
        if self.width % self.heads:
            raise ValueError(f"width ({self.width}) must be divisible by heads ({self.heads})")
        if any(d % 2 for d in self.axes_dim) or sum(self.axes_dim) != self.head_dim:
            raise ValueError(f"axes_dim {list(self.axes_dim)} must be even and sum to the head dim {self.head_dim}")
        if isinstance(self.attn_scale, float) and not 0 < self.attn_scale <= MAX_ATTN_SCALE:
            raise ValueError(f"attn_scale must be 'mup', 'standard' or a number in (0, {MAX_ATTN_SCALE:g}], got {self.attn_scale}")
        if int(self.width * self.mlp_ratio) < 1:
            raise ValueError(f"mlp_ratio ({self.mlp_ratio}) gives an MLP hidden size int(width * mlp_ratio) < 1; it must be >= 1")
        return self


# ----------------------------------------------------------------------------- quantizers
class QuantizerSpec(ComponentSpec):
    """Spec of a quantizer; validating this class dispatches on ``name``.

    Three hooks, which an explicit spec class (``register(name, spec=MySpec)``) may override and
    which otherwise ask the registered class (:class:`flowmo.quantizers.Quantizer`'s
    classmethods of the same names, so a quantizer registered with one decorator line declares
    them on its class): ``check_channels`` validates the spec against the code's channel count
    (FlowMoSpec calls it with ``code_channels``), ``loss_terms`` lists the quantizer's
    loss terms, ``encoder_channels`` gives the channels the encoder outputs. ``discrete`` is the
    registered class's declaration (:attr:`flowmo.quantizers.Quantizer.discrete`).
    """

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = QUANTIZERS

    def check_channels(self, channels: int) -> None:
        """Raise ValueError if this quantizer cannot quantize ``channels`` channels per token
        (default: the registered class's ``check_channels(spec, channels)``; the interface's
        accepts any count)."""
        _component_class(self).check_channels(self, channels)

    def loss_terms(self) -> Optional[list[LossTerm]]:
        """The loss terms the quantizer adds (in either mode; names without the
        ``quantizer/`` prefix); default: the registered class's ``loss_terms(spec)``, which
        is ``[]`` (no auxiliary loss) unless the class declares its terms."""
        return _component_class(self).loss_terms(self)

    def encoder_channels(self, channels: int) -> int:
        """The channels per token the encoder must output for a code of ``channels`` channels
        (default: the registered class's ``encoder_channels(spec, channels)``: ``channels``
        unless the class declares otherwise; ``kl``: ``2 * channels``). Raises TypeError naming
        the quantizer when the declaration is not a positive python int."""
        e = _component_class(self).encoder_channels(self, channels)
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            raise TypeError(f"quantizer {self.name!r}: encoder_channels(spec, {channels}) must return a positive "
                            f"python int (the encoder's output channels), got {e!r}")
        return e

    @property
    def discrete(self) -> bool:
        """Whether the quantizer has tokens: the registered class's ``discrete`` (True for LFQ
        and FSQ, False for the continuous ``kl`` and ``identity``)."""
        return bool(_component_class(self).discrete)


def no_tokens_error(bottleneck: str, what: str, *, owner: str = "this FlowMo's",
                    fix: str = ("use reconstruct, or encode, quantize and decode "
                                    "(model.decode(model.quantize(model.encode(x), losses=False).values))")) -> ValueError:
    """The one error of a token path (``what``: e.g. ``"tokenize"``) given a model whose
    bottleneck (its quantizer's registered name, ``bottleneck``) is continuous, raised where
    the call enters: ``"this FlowMo's bottleneck 'kl' is continuous: it has no tokens (tokenize
    needs a discrete quantizer such as lfq); use reconstruct, or encode, quantize and decode (...)"``. ``owner``
    words whose bottleneck it is, ``fix`` what to do instead."""
    return ValueError(f"{owner} bottleneck {bottleneck!r} is continuous: it has no tokens ({what} needs a discrete "
                      f"quantizer such as lfq); {fix}")


class LFQSpec(QuantizerSpec):
    """Lookup-free quantization (sign), with the release's strided entropy groups."""

    name: Literal["lfq"] = "lfq"
    group_bits: SpecInt = Field(9, gt=0, le=20, description="bits per entropy group (the release's codebook_size_for_entropy)")
    temperature: SpecFloat = Field(0.1, gt=0)
    entropy_weight: SpecFloat = Field(0.0025, ge=0)
    commit_weight: SpecFloat = Field(0.000625, ge=0)

    def loss_terms(self) -> list[LossTerm]:
        return [
            LossTerm("entropy", self.entropy_weight,
                     "per-sample entropy - codebook entropy of the entropy groups (release's LFQ entropy loss)"),
            LossTerm("commitment", self.commit_weight, "mean((z - sign(z))^2)"),
        ]

    def check_channels(self, channels: int) -> None:
        check_binary_channels(channels, self.group_bits, "LFQ")


def check_binary_channels(channels: int, group_bits: int, quantizer: str) -> None:
    """Raise ValueError (saying what to change) unless a binary quantizer (one bit per channel,
    entropy groups of ``group_bits`` bits: LFQ, BSQ; ``quantizer`` names it in the message) can
    take ``channels`` channels: at most 62 (one int64 index per token) and a multiple of
    ``group_bits``."""
    if channels > 62:
        raise ValueError(f"code_channels ({channels}) must be <= 62 for {quantizer} (one int64 index per token)")
    if channels % group_bits:
        g = group_bits
        fits = [d for d in range(min(channels, g), 0, -1) if channels % d == 0]
        raise ValueError(f"code_channels ({channels}) must be divisible by quantizer.group_bits ({g}): set code_channels "
                         f"to a multiple of {g} (e.g. {max(channels - channels % g, g)}; --set model.code_channels=N) "
                         f"or quantizer.group_bits to a divisor of {channels} (e.g. {fits[0]}; --set model.quantizer.group_bits=G)")


class FSQSpec(QuantizerSpec):
    """Finite scalar quantization with per-channel level counts."""

    name: Literal["fsq"] = "fsq"
    levels: tuple[Annotated[SpecInt, Field(ge=2)], ...] = Field(
        (8, 8, 8, 5, 5, 5), min_length=1,
        description="levels per channel, each >= 2; their product (the codebook size) at most 2**62",
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if math.prod(v) > 2**62:
            raise ValueError(f"the product of levels ({math.prod(v)}) must be <= 2**62 (one int64 index per token)")
        return v

    def loss_terms(self) -> list[LossTerm]:
        return []  # FSQ has no auxiliary loss

    def check_channels(self, channels: int) -> None:
        if len(self.levels) != channels:
            n = len(self.levels)
            raise ValueError(f"quantizer.levels has {n} entries but code_channels is {channels}; they must be equal: set "
                             f"code_channels to {n} (--set model.code_channels={n}) or give quantizer.levels {channels} entries")


# ----------------------------------------------------------------------------- time samplers
class TimeSamplerSpec(ComponentSpec):
    """Spec of a timesampler component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = TIME_SAMPLERS


class UniformTimeSpec(TimeSamplerSpec):
    name: Literal["uniform"] = "uniform"
    shift: SpecFloat = Field(1.0, gt=0, description="t -> s t / (1 + (s - 1) t); 1 = no shift")


class LogitNormalTimeSpec(TimeSamplerSpec):
    name: Literal["logit_normal"] = "logit_normal"
    mean: SpecFloat = 0.0
    std: SpecFloat = Field(1.0, gt=0)
    shift: SpecFloat = Field(1.0, gt=0)


class FatLogitNormalTimeSpec(TimeSamplerSpec):
    """The release's "fat lognormal": logit-normal, replaced by U(0, 1) with probability ``uniform_fraction``."""

    name: Literal["fat_logit_normal"] = "fat_logit_normal"
    mean: SpecFloat = 0.0
    std: SpecFloat = Field(1.0, gt=0)
    uniform_fraction: SpecFloat = Field(0.1, ge=0, le=1)
    shift: SpecFloat = Field(1.0, gt=0)


# ----------------------------------------------------------------------------- perceptual distances
class PerceptualSpec(ComponentSpec):
    """Spec of a perceptual component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = PERCEPTUAL_DISTANCES


# ----------------------------------------------------------------------------- flow losses
class FlowLossSpec(ComponentSpec):
    """Spec of a flowloss component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = FLOW_LOSSES

    def loss_terms(self) -> Optional[list[LossTerm]]:
        """The terms this flow loss returns, or None when the component does not declare them
        (default: the registered class's ``loss_terms(spec)``; :class:`flowmo.losses.FlowLoss`'s
        returns None: a flow loss has no terms that hold for every flow loss)."""
        return _component_class(self).loss_terms(self)


class RectifiedFlowLossSpec(FlowLossSpec):
    """Rectified flow in the release's convention (t = 1 noise, target eps - x)."""

    name: Literal["rectified_flow"] = "rectified_flow"
    cfg_dropout: SpecFloat = Field(0.1, ge=0, le=1, description="probability of zeroing a sample's code")
    perceptual: Optional[SerializeAsAny[PerceptualSpec]] = Field(
        None, description="distance on the one-step estimate x_hat = x_t - t v (release: lpips_vgg)"
    )
    perceptual_weight: SpecFloat = Field(0.1, ge=0)

    def loss_terms(self) -> list[LossTerm]:
        terms = [LossTerm("diffusion", 1.0, "mean((eps - x - v(x_t, t))^2), rectified flow")]
        if self.perceptual is not None and self.perceptual_weight > 0:
            terms.append(LossTerm("perceptual", self.perceptual_weight,
                                  f"{self.perceptual.name} distance between x and x_hat = x_t - t v"))
        return terms


# ----------------------------------------------------------------------------- post-training
class PosttrainSpec(ComponentSpec):
    """Spec of a posttrain component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = POSTTRAIN_OBJECTIVES

    flow_weight: SpecFloat = Field(1.0, ge=0, description="weight of the flow loss kept during post-training")

    def loss_terms(self) -> Optional[list[LossTerm]]:
        """The objective's own terms (the kept flow loss not included), or None when the
        component does not declare them (default: the registered class's ``loss_terms(spec)``;
        :class:`flowmo.losses.PosttrainObjective`'s returns None)."""
        return _component_class(self).loss_terms(self)


def _component_class(spec: ComponentSpec) -> Any:
    """The class whose hooks (``loss_terms``, ``check_channels``) speak for ``spec``: the class
    registered under ``spec.name``, or the kind's interface for a factory function (whose
    defaults then apply)."""
    reg = type(spec).registry
    factory, iface = reg.get(spec.name).factory, reg.interface
    return factory if isinstance(factory, type) and issubclass(factory, iface) else iface


class ModeSeekingSpec(PosttrainSpec):
    """Stage 1B: a K-step Euler chain from noise, distance to the input. Its steps: random per
    sample (``grid`` None, the release's) or those of a fixed ``grid`` (a K-step decoder)."""

    name: Literal["mode_seeking"] = "mode_seeking"
    k: SpecInt = Field(8, gt=0, le=MAX_CHAIN_STEPS, description=f"Euler steps in the chain (1 .. {MAX_CHAIN_STEPS})")
    distance: SerializeAsAny[PerceptualSpec] = Field(
        default_factory=lambda: PerceptualSpec(name="mse"),
        description="sample-level distance (release: resnet50_logits)",
    )
    weight: SpecFloat = Field(0.01, ge=0)
    checkpoint: SpecBool = Field(True, description="gradient checkpointing on each decoder call of the chain")
    grid: Optional[SerializeAsAny[TimeGridSpec]] = Field(
        None, description="None: random per-sample step sizes (the release's Stage 1B); a time grid: the chain runs "
                          "on grid(k) for every sample, which trains a k-step decoder (its sampler is recorded as "
                          "the model's preset 'mode_seeking-<k>')")

    def loss_terms(self) -> list[LossTerm]:
        steps = "random" if self.grid is None else f"{self.grid.name}-grid"
        return [LossTerm("mode_seeking", self.weight,
                         f"{self.distance.name} distance between x and the {self.k}-step chain sample ({steps} steps)")]


class DistillationSpec(PosttrainSpec):
    """Few-step distillation of a guided many-step sampler (the ``teacher`` sampler run on the
    decoder as post-training starts, frozen) into a ``k``-step, unguided one: k windows on the
    teacher's time grid, in each one student Euler step trained to land where the teacher's
    steps in that window land (velocity regression; piecewise like PeRFlow, Yan et al. 2024; for
    k = 1 the knowledge distillation of Luhman & Luhman 2021)."""

    name: Literal["distillation"] = "distillation"
    k: SpecInt = Field(4, gt=0, le=MAX_CHAIN_STEPS, description=f"student steps = decoder calls (1 .. {MAX_CHAIN_STEPS})")
    teacher: SamplerSpec = Field(default_factory=SamplerSpec,
                                 description="the sampler distilled (default: the release's, 25 Euler steps with "
                                             "guidance, 31 calls); at least k steps")
    weight: SpecFloat = Field(1.0, ge=0)
    flow_weight: SpecFloat = Field(0.0, ge=0, description="weight of the flow loss kept during post-training")

    @model_validator(mode="after")
    def _steps(self) -> "DistillationSpec":
        if self.teacher.steps < self.k:
            raise ValueError(f"the teacher sampler has {self.teacher.steps} steps, fewer than the student's k = {self.k}")
        return self

    def loss_terms(self) -> list[LossTerm]:
        return [LossTerm("distillation", self.weight,
                         f"velocity MSE of one student step against the teacher's steps in each of {self.k} windows")]


# ----------------------------------------------------------------------------- token generators
class GeneratorSpec(ComponentSpec):
    """Spec of a token generator (:class:`flowmo.generators.TokenGenerator`); validating this
    class dispatches on ``name``. A generator's spec holds its architecture (e.g. MaskGiT's
    ``width``, ``depth``, ...); what the token layout fixes, ``vocab_size``, ``seq_len`` and
    ``num_classes``, is wiring: ``GENERATORS.build(spec, vocab_size=V, seq_len=L, num_classes=C)``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = GENERATORS
