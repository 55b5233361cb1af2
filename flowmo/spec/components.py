"""Typed specs: one pydantic model per component kind, composed into :class:`FlowMoSpec`.

A component spec is tagged by its ``name``, the name its factory is registered under.
Validating a kind's base class (e.g. ``QuantizerSpec.model_validate({"name": "fsq", ...})``)
dispatches on that name to the spec class the factory was registered with, so a component
registered from user code is usable by name in a FlowMoSpec, and JSON round-trips keep
every field of every component.

Specs are data: a FlowMoSpec fully determines the model's architecture, its training
losses and its default sampler, and round-trips through JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Callable, ClassVar, Literal, NamedTuple, Optional, TypeVar, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    field_validator,
    model_validator,
)

from ..registry import (
    BACKBONES,
    FLOW_LOSSES,
    PERCEPTUAL_DISTANCES,
    POSTTRAIN_OBJECTIVES,
    QUANTIZERS,
    SOLVERS,
    TIME_GRIDS,
    TIME_SAMPLERS,
    Registry,
)

__all__ = [
    "ComponentSpec",
    "BackboneSpec",
    "MMDiTSpec",
    "QuantizerSpec",
    "LFQSpec",
    "FSQSpec",
    "TimeSamplerSpec",
    "UniformTimeSpec",
    "LogitNormalTimeSpec",
    "FatLogitNormalTimeSpec",
    "PerceptualSpec",
    "FlowLossSpec",
    "RectifiedFlowLossSpec",
    "TimeGridSpec",
    "PowGridSpec",
    "ShiftedGridSpec",
    "SolverSpec",
    "GuidanceSpec",
    "SamplerSpec",
    "PosttrainSpec",
    "ModeSeekingSpec",
    "FlowMoSpec",
    "LossTerm",
    "SpecModel",
    "sigma_to_t",
    "replace_spec",
    "merge_data",
]


# ----------------------------------------------------------------------------- strict scalars
# pydantic's lax mode turns True into 1, "3" / " 4 " / "1_000" into ints, "no" / "off" / 0 into
# False and "1e-3" / True into floats. A config override like ``freeze_encoder_at=false`` would then
# silently mean 0. The field types below refuse booleans and strings where a number is expected
# and accept only real booleans where a boolean is expected. Integer fields accept ints (numpy ints
# too) and floats with an integral value (1.0, 1e5: what YAML gives for ``1e5``); 1.5 is refused.
# Float fields accept ints and floats. User component specs may use them too.

def _is_bool_scalar(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ in ("bool_", "bool") and type(v).__module__ == "numpy"


def _is_bool(v: Any) -> bool:
    """A boolean: python's, numpy's, or an array / tensor of booleans (``torch.tensor(True)``)."""
    return _is_bool_scalar(v) or _is_array(v) and str(v.dtype) in ("torch.bool", "bool")


def _is_array(v: Any) -> bool:
    """A torch tensor or numpy array (duck-typed: ``dtype``, ``shape`` and ``item``)."""
    return not isinstance(v, (int, float, str, bytes)) and all(hasattr(v, a) for a in ("dtype", "shape", "item"))


def _bool_hint(v: Any) -> str:
    return f"got the boolean {v!r} (a boolean is not a number: write a number, or null where the field accepts none)"


def _is_quoted_number(v: Any) -> bool:
    """A string (or bytes) holding a finite number, e.g. ``"3"`` or ``"1e-3"`` (a number written in quotes)."""
    try:
        return math.isfinite(float(v.decode() if isinstance(v, bytes) else v))
    except (ValueError, UnicodeDecodeError):
        return False


def _refuse_bool_and_str(v: Any, expected: str) -> Any:
    if _is_bool(v):
        raise ValueError(f"expected {expected}, {_bool_hint(v)}")
    if isinstance(v, (str, bytes)):
        hint = " (write the number without quotes)" if _is_quoted_number(v) else ""
        raise ValueError(f"expected {expected}, got the string {v!r}{hint}")
    if _is_array(v):  # a 0-d tensor / array holds one number; anything larger is not a number
        if tuple(v.shape) != ():
            raise ValueError(f"expected {expected}, got a {type(v).__name__} of shape {tuple(v.shape)}")
        v = v.item()
        if isinstance(v, (str, bytes)):
            raise ValueError(f"expected {expected}, got the string {v!r}")
    return v


def _strict_int(v: Any) -> Any:
    return _refuse_bool_and_str(v, "an integer")


def _strict_float(v: Any) -> Any:
    return _refuse_bool_and_str(v, "a number")


def _strict_bool(v: Any) -> Any:
    if _is_bool_scalar(v):
        return bool(v)
    raise ValueError(f"expected true or false, got {type(v).__name__} {v!r}")


def strict_literal(values: tuple) -> Callable[[Any], Any]:
    """A before-validator for a Literal of numbers: a boolean is not 1 / 0 (unless listed), and a
    string is not a number (unless strings are listed). A spec derived from a factory's arguments
    uses it for ``Literal[...]`` annotations holding ints (see :mod:`flowmo.registry.derive`)."""
    expected = "an integer" if all(isinstance(v, int) for v in values if not isinstance(v, (str, type(None)))) \
        else "a number"

    def check(v: Any) -> Any:
        if _is_bool(v) and not any(isinstance(x, bool) and x == bool(v) for x in values):
            raise ValueError(f"expected {expected}, {_bool_hint(v)}")
        if isinstance(v, (str, bytes)) and not any(isinstance(x, str) for x in values):
            _refuse_bool_and_str(v, expected)
        return v

    return check


SpecInt = Annotated[int, BeforeValidator(_strict_int)]
"""An int field refusing booleans and strings (see the note above)."""
SpecFloat = Annotated[float, BeforeValidator(_strict_float)]
"""A float field refusing booleans and strings (ints are accepted)."""
SpecBool = Annotated[bool, BeforeValidator(_strict_bool)]
"""A bool field accepting only true/false (not 0/1, "no", "off", ...)."""

# Upper bounds of size fields: far beyond any real model, low enough that a typo (2**63) is
# refused at validation instead of overflowing torch's int64 shapes or exhausting memory.
MAX_IMAGE_SIZE = 2**16
"""Largest image_size / patch_size (pixels per side)."""
MAX_TOKENS = 2**16
"""Largest code_length and code_channels."""
MAX_WIDTH = 2**16
"""Largest backbone width (and heads)."""
MAX_DEPTH = 1024
"""Most blocks in a backbone."""
MAX_MLP_RATIO = 64.0
"""Largest backbone mlp_ratio."""
MAX_SAMPLER_STEPS = 2**16
"""Most sampler (ODE) steps of one decode."""
MAX_CHAIN_STEPS = 1024
"""Most Euler steps in the mode-seeking chain (each keeps its activations for the backward)."""

# Ranges of fields whose extreme values give NaN or a degenerate model/grid (the release's values
# are well inside: time_factor 1000, rope_theta 10000, attn_scale 8 / head_dim, pow p 0.25).
MAX_TIME_FACTOR = 1e6
"""Largest time_factor: t * time_factor * frequency must stay far from float32 overflow (cos(inf) = NaN)."""
ROPE_THETA_RANGE = (1.0, 1e9)
"""rope_theta range: >= 1 keeps every RoPE frequency theta ** (-2k / d) <= 1 radian per position
(a tiny theta overflows the angles to inf and the rotation to NaN)."""
MAX_ATTN_SCALE = 100.0
"""Largest numeric attn_scale (the release's 'mup' is 8 / head_dim; 'standard' is head_dim ** -0.5)."""
POW_P_RANGE = (0.05, 20.0)
"""pow grid exponent range: outside it (k / n) ** (1 / p) underflows to 0 or rounds to 1 for
neighbouring steps, so the grid is no longer strictly decreasing at large step counts."""
SHIFT_RANGE = (1e-3, 1e3)
"""shifted grid ``shift`` range."""


class LossTerm(NamedTuple):
    """One term of a training loss, as declared by a spec (see :meth:`FlowMoSpec.loss_terms`).

    ``name`` is the key of the term in :class:`flowmo.model.LossOutput` ``.terms``;
    ``weight`` is the factor already applied to that term (the total is the plain sum of
    the terms); ``what`` says what the unweighted term is, in words.
    """

    name: str
    weight: float
    what: str


class SpecModel(BaseModel):
    """Base of the spec models: frozen, no unknown fields, no NaN/Inf, editable with :meth:`replace`.

    ``mutually_exclusive`` lists groups of input keys that are alternatives to one another
    (e.g. :class:`GuidanceSpec`'s ``interval`` / ``interval_sigma``): an edit that gives one
    key of a group drops the others from the edited spec (see :func:`merge_data`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    mutually_exclusive: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def replace(self, **changes: Any) -> Any:
        """A validated copy with ``changes`` applied (semantics: :func:`replace_spec`)."""
        return replace_spec(self, changes)


class ComponentSpec(SpecModel):
    """Base of every component spec: frozen, no unknown fields, tagged by ``name``.

    Subclasses that stand for a whole component kind set ``kind_base = True`` and
    ``registry``; validating such a class dispatches on ``name`` to the registered spec.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str
    registry: ClassVar[Optional[Registry]] = None

    def __new__(cls, *args: Any, **data: Any) -> Any:
        # ``QuantizerSpec(name="fsq", levels=...)`` is the registered spec of "fsq" (an FSQSpec):
        # calling a kind's base class dispatches on the name, as validating one does
        if data and cls.__dict__.get("kind_base", False):
            return cls.model_validate(data)
        return super().__new__(cls)

    @model_validator(mode="wrap")
    @classmethod
    def _dispatch_on_name(cls, data: Any, handler: Any) -> Any:
        if not cls.__dict__.get("kind_base", False):
            return handler(data)
        if isinstance(data, cls) and type(data) is not cls:
            return data  # already a concrete spec of this kind
        if isinstance(data, str):
            data = {"name": data}
        elif isinstance(data, BaseModel):
            data = data.model_dump()
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping with a 'name' field, got {type(data).__name__}")
        reg = cls.registry
        assert reg is not None
        if "name" not in data:
            raise ValueError(f"missing 'name' of the {reg.kind}; registered: {', '.join(reg.names())}")
        entry = reg.get(data["name"])  # RegistryError (a ValueError) lists the registered names
        spec_cls = entry.spec
        if spec_cls is None or spec_cls is cls:
            return handler(data)
        return spec_cls.model_validate(data)


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
    axes_dim: tuple[SpecInt, SpecInt, SpecInt] = Field(description="RoPE dims per position axis; sums to the head dim")
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
        hd = self.width // self.heads
        if any(d <= 0 or d % 2 for d in self.axes_dim):
            raise ValueError(f"every entry of axes_dim must be positive and even, got {list(self.axes_dim)}")
        if sum(self.axes_dim) != hd:
            raise ValueError(
                f"axes_dim {list(self.axes_dim)} sums to {sum(self.axes_dim)} but the head dim "
                f"width/heads = {self.width}/{self.heads} = {hd}; they must be equal"
            )
        if isinstance(self.attn_scale, float) and not 0 < self.attn_scale <= MAX_ATTN_SCALE:
            raise ValueError(f"attn_scale must be 'mup', 'standard' or a number in (0, {MAX_ATTN_SCALE:g}], "
                             f"got {self.attn_scale}")
        if int(self.width * self.mlp_ratio) < 1:
            raise ValueError(
                f"mlp_ratio ({self.mlp_ratio}) gives an MLP hidden size int(width * mlp_ratio) = "
                f"{int(self.width * self.mlp_ratio)}; it must be >= 1"
            )
        return self


# ----------------------------------------------------------------------------- quantizers
class QuantizerSpec(ComponentSpec):
    """Spec of a quantizer; validating this class dispatches on ``name``.

    Two hooks, which an explicit spec class (``register(name, spec=MySpec)``) may override and
    which otherwise ask the registered class (:class:`flowmo.quantizers.Quantizer`'s
    classmethods of the same names, so a quantizer registered with one decorator line declares
    them on its class): ``check_channels`` validates the spec against the code's channel count
    (FlowMoSpec calls it with ``code_channels``), ``loss_terms`` lists the quantizer's
    training-mode loss terms.
    """

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = QUANTIZERS

    def check_channels(self, channels: int) -> None:
        """Raise ValueError if this quantizer cannot quantize ``channels`` channels per token
        (default: the registered class's ``check_channels(spec, channels)``; the interface's
        accepts any count)."""
        _component_class(self).check_channels(self, channels)

    def loss_terms(self) -> Optional[list[LossTerm]]:
        """The loss terms the quantizer adds in training mode (names without the
        ``quantizer/`` prefix); default: the registered class's ``loss_terms(spec)``, which
        is ``[]`` (no auxiliary loss) unless the class declares its terms."""
        return _component_class(self).loss_terms(self)


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
        if channels > 62:
            raise ValueError(f"code_channels ({channels}) must be <= 62 for LFQ (one int64 index per token): set "
                             "code_channels (--set model.code_channels=N) to at most 62")
        if channels % self.group_bits:
            fits = [d for d in range(min(channels, self.group_bits), 0, -1) if channels % d == 0]
            lower = channels - channels % self.group_bits
            raise ValueError(
                f"code_channels ({channels}) must be divisible by quantizer.group_bits ({self.group_bits}): set "
                f"code_channels to a multiple of {self.group_bits} (e.g. {max(lower, self.group_bits)}; "
                f"--set model.code_channels=N) or quantizer.group_bits to a divisor of {channels} "
                f"(e.g. {fits[0]}; --set model.quantizer.group_bits=G)"
            )


class FSQSpec(QuantizerSpec):
    """Finite scalar quantization with per-channel level counts."""

    name: Literal["fsq"] = "fsq"
    levels: tuple[SpecInt, ...] = Field(
        (8, 8, 8, 5, 5, 5), min_length=1,
        description="levels per channel, each >= 2; their product (the codebook size) at most 2**62",
    )

    @field_validator("levels")
    @classmethod
    def _levels(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(n < 2 for n in v):
            raise ValueError(f"every level count must be >= 2, got {list(v)}")
        size = 1
        for n in v:
            size *= n
        if size > 2**62:
            raise ValueError(f"the product of levels ({size}) must be <= 2**62 (one int64 index per token)")
        return v

    def loss_terms(self) -> list[LossTerm]:
        return []  # FSQ has no auxiliary loss

    def check_channels(self, channels: int) -> None:
        if len(self.levels) != channels:
            raise ValueError(
                f"quantizer.levels has {len(self.levels)} entries but code_channels is {channels}; they must be equal "
                f"(FSQ quantizes one channel per level count): set code_channels to {len(self.levels)} "
                f"(--set model.code_channels={len(self.levels)}; replace(code_channels={len(self.levels)})) or give "
                f"quantizer.levels {channels} entries (--set model.quantizer.levels=[...])"
            )


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


# ----------------------------------------------------------------------------- sampling
class TimeGridSpec(ComponentSpec):
    """Spec of a timegrid component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = TIME_GRIDS


class PowGridSpec(TimeGridSpec):
    """t_k = (k / n) ** (1 / p); the release uses p = 0.25."""

    name: Literal["pow"] = "pow"
    p: SpecFloat = Field(0.25, ge=POW_P_RANGE[0], le=POW_P_RANGE[1],
                         description=f"exponent, in [{POW_P_RANGE[0]:g}, {POW_P_RANGE[1]:g}] (the grid stays strictly "
                                     "decreasing at every step count)")


class ShiftedGridSpec(TimeGridSpec):
    """The linear grid under t -> s t / (1 + (s - 1) t) (s > 1 puts more steps near t = 1)."""

    name: Literal["shifted"] = "shifted"
    shift: SpecFloat = Field(3.0, ge=SHIFT_RANGE[0], le=SHIFT_RANGE[1],
                             description=f"in [{SHIFT_RANGE[0]:g}, {SHIFT_RANGE[1]:g}]")


class SolverSpec(ComponentSpec):
    """Spec of a solver component; validating this class dispatches on ``name``."""

    kind_base: ClassVar[bool] = True
    registry: ClassVar[Optional[Registry]] = SOLVERS


def sigma_to_t(sigma: float) -> float:
    """EDM sigma -> rectified-flow time: t = sigma / (1 + sigma)."""
    return sigma / (1.0 + sigma)


class GuidanceSpec(SpecModel):
    """Classifier-free guidance: v = v_u + scale (v_c - v_u) when t lies in ``interval``.

    ``interval`` is in t (inclusive; None = everywhere). The release's EDM sigma interval
    can be given instead as ``interval_sigma``; it is converted with t = sigma / (1 + sigma).
    Giving both in one mapping is refused; an edit (``replace``, ``--set``) that gives one of
    them replaces the other (``mutually_exclusive``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    mutually_exclusive: ClassVar[tuple[tuple[str, ...], ...]] = (("interval", "interval_sigma"),)

    scale: SpecFloat = 1.5
    interval: Optional[tuple[SpecFloat, SpecFloat]] = (sigma_to_t(0.17), sigma_to_t(1.02))

    @model_validator(mode="before")
    @classmethod
    def _from_sigma(cls, data: Any) -> Any:
        if isinstance(data, dict) and "interval_sigma" in data:
            data = dict(data)
            sig = data.pop("interval_sigma")
            if "interval" in data:
                raise ValueError("give guidance.interval (in t) or guidance.interval_sigma, not both")
            if sig is not None:
                if (not isinstance(sig, (list, tuple)) or len(sig) != 2
                        or not all(isinstance(x, numbers.Real) and not _is_bool(x) for x in sig)):
                    raise ValueError(f"interval_sigma must be a pair [lo, hi] of numbers, got {sig!r}")
                lo, hi = (float(x) for x in sig)
                if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
                    raise ValueError(f"interval_sigma must satisfy 0 <= lo <= hi < inf, got {sig!r}")
                data["interval"] = (sigma_to_t(lo), sigma_to_t(hi))
            else:
                data["interval"] = None
        return data

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: Optional[tuple[float, float]]) -> Optional[tuple[float, float]]:
        if v is not None and not (0.0 <= v[0] <= v[1] <= 1.0):
            raise ValueError(f"guidance.interval must satisfy 0 <= lo <= hi <= 1 (in t), got {v}")
        return v


class SamplerSpec(SpecModel):
    """How images are decoded: an ODE solver on a time grid, with guidance.

    Validating a str looks it up in :data:`flowmo.samplers.SAMPLER_PRESETS` (``"release"``,
    ``"fast"``, or a name a user added there), so ``sampler="fast"`` works wherever a sampler
    spec or a dict of its fields is accepted; an unknown name raises ValueError listing the
    presets. A preset is a complete sampler: taking one replaces the whole sampler (steps,
    grid, solver, guidance, clip), not only the fields the preset changes from the default;
    later edits (a dict, ``--steps``/``--grid`` on the command line) apply to it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps: SpecInt = Field(25, gt=0, le=MAX_SAMPLER_STEPS,
                           description=f"ODE steps of one decode (1 .. {MAX_SAMPLER_STEPS})")
    grid: SerializeAsAny[TimeGridSpec] = Field(default_factory=lambda: PowGridSpec())
    solver: SerializeAsAny[SolverSpec] = Field(default_factory=lambda: SolverSpec(name="euler"))
    guidance: GuidanceSpec = Field(default_factory=GuidanceSpec)
    clip: SpecBool = Field(True, description="clamp the output to [-1, 1]")

    @model_validator(mode="before")
    @classmethod
    def _preset_name(cls, data: Any) -> Any:
        if not isinstance(data, str):
            return data
        from ..samplers.presets import SAMPLER_PRESETS  # imported here: the presets module imports this one

        if data not in SAMPLER_PRESETS:
            raise ValueError(f"unknown sampler preset {data!r}; available: {', '.join(SAMPLER_PRESETS)} "
                             "(or give a SamplerSpec or a dict of its fields)")
        preset = SAMPLER_PRESETS[data]
        return preset.model_dump() if isinstance(preset, BaseModel) else preset


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
    assert reg is not None
    factory, iface = reg.get(spec.name).factory, reg.interface
    return factory if isinstance(factory, type) and issubclass(factory, iface) else iface


class ModeSeekingSpec(PosttrainSpec):
    """Stage 1B: a K-step Euler chain from noise with random step sizes, distance to the input."""

    name: Literal["mode_seeking"] = "mode_seeking"
    k: SpecInt = Field(8, gt=0, le=MAX_CHAIN_STEPS, description=f"Euler steps in the chain (1 .. {MAX_CHAIN_STEPS})")
    distance: SerializeAsAny[PerceptualSpec] = Field(
        default_factory=lambda: PerceptualSpec(name="mse"),
        description="sample-level distance (release: resnet50_logits)",
    )
    weight: SpecFloat = Field(0.01, ge=0)
    checkpoint: SpecBool = Field(True, description="gradient checkpointing on each decoder call of the chain")

    def loss_terms(self) -> list[LossTerm]:
        return [LossTerm("mode_seeking", self.weight,
                         f"{self.distance.name} distance between x and the {self.k}-step chain sample")]


# ----------------------------------------------------------------------------- the whole model
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
    posttrain: SerializeAsAny[PosttrainSpec] = Field(
        default_factory=lambda: ModeSeekingSpec()
    )

    @model_validator(mode="after")
    def _check(self) -> "FlowMoSpec":
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size ({self.image_size}) must be divisible by patch_size ({self.patch_size})"
            )
        try:
            self.quantizer.check_channels(self.code_channels)
        except ValueError as e:
            raise ValueError(f"quantizer: {e}") from None
        return self

    # -- conveniences
    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def bits_per_pixel(self) -> float:
        """Bits of the discrete code per image pixel: code_length * bits per token / image_size**2.

        Bits per token are the quantizer's :attr:`flowmo.quantizers.Quantizer.bits_per_token`
        (log2 of its codebook size unless the quantizer declares otherwise; LFQ: code_channels,
        FSQ: sum of log2 of its levels), read from the quantizer this spec builds.
        """
        return self.code_length * self.bits_per_token / (self.image_size**2)

    @property
    def bits_per_token(self) -> float:
        """Bits of one token: the quantizer's ``bits_per_token`` (built from this spec, no weights loaded)."""
        return float(QUANTIZERS.build(self.quantizer, channels=self.code_channels).bits_per_token)

    def loss_terms(self, stage: Literal["1a", "1b"] = "1a") -> list[LossTerm]:
        """The terms of the training loss of ``stage``, as :meth:`flowmo.FlowMo.loss` ("1a")
        and :meth:`flowmo.FlowMo.posttrain_loss` ("1b") return them in training mode.

        Stage 1A: the flow loss's terms plus the quantizer's (``quantizer/...``). Stage 1B
        (the release's recipe): the flow loss's terms times ``posttrain.flow_weight``
        (omitted when 0), the quantizer's terms (reported; they carry no gradient, since
        the encoder is frozen) and the post-training objective's terms.

        Raises ValueError if ``stage`` is not "1a"/"1b", or a component (e.g. a user-registered
        one) does not declare its terms (its spec's ``loss_terms()`` returns None) or declares
        them wrongly: the declaration must be a list or tuple of :class:`LossTerm` (or of
        ``(name, weight, what)`` triples) with non-empty str names, finite real weights and str
        descriptions, and the names of the stage's terms must be unique across the components
        (a quantizer's names count with their ``quantizer/`` prefix).
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
                    raise ValueError(
                        f"{part} {spec.name!r} declares the loss term {t.name!r}, which {owner[t.name]} "
                        f"also declares; the terms of stage {stage} must have distinct names"
                    )
                owner[t.name] = f"{part} {spec.name!r}"
                out.append(t)
        return out

    def to_json(self, **kw: Any) -> str:
        return self.model_dump_json(indent=kw.pop("indent", 2), **kw)

    @classmethod
    def from_json(cls, text: str) -> "FlowMoSpec":
        return cls.model_validate_json(text)

    def fingerprint(self) -> str:
        """A short hash of the architecture-relevant fields (tokens are only valid between equal fingerprints)."""
        d = self.model_dump(mode="json", include={"image_size", "patch_size", "code_length", "code_channels",
                                                  "encoder", "decoder", "quantizer"})
        for k in ("encoder", "decoder"):
            d[k].pop("gradient_checkpointing", None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
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


# ----------------------------------------------------------------------------- editing specs
S = TypeVar("S", bound=BaseModel)


def replace_spec(spec: S, changes: Mapping[str, Any]) -> S:
    """A validated copy of ``spec`` (any spec: FlowMoSpec, SamplerSpec, a component spec, ...)
    with ``changes`` applied; :meth:`SpecModel.replace` and ``FlowMoSpec.replace`` call it.

    The result is ``model_validate(merge_data(type(spec), spec.model_dump(), changes))`` (for
    a component spec, validated through its kind's base class, so a new ``name`` dispatches):
    see :func:`merge_data` for the merge rules. Raises TypeError if ``spec`` is not a pydantic
    model or ``changes`` not a mapping, ValueError naming unknown fields, and pydantic's
    ValidationError (a ValueError) naming the fields of an invalid result.
    """
    if not isinstance(spec, BaseModel):
        raise TypeError(f"spec must be a spec (a pydantic model), got {type(spec).__name__}")
    cls = type(spec)
    data = merge_data(cls, spec.model_dump(), changes)
    return (_kind_base(cls) or cls).model_validate(data)


def merge_data(cls: type[BaseModel], base: Any, changes: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """The data of spec class ``cls`` (``base``: a dict of its fields, a spec object, or a
    name) edited by ``changes``, unvalidated: what :func:`replace_spec` validates and what
    the training config's file overrides and ``--set`` overrides build (flowmo.train.config).

    Rules, for each ``key: value`` of ``changes``:

    - ``key`` must be a field of the spec class (or an alternative key of a
      ``mutually_exclusive`` group); anything else raises ValueError naming the unknown keys,
      the place (``where``, e.g. ``"sampler.guidance"``) and the accepted ones. For a
      component spec the class is the one its ``name`` is registered with.
    - a dict value for a field that holds a spec merges into the current value by these
      rules, recursively (a missing or None current value counts as the field's default, or
      as empty); a str value for a component field means ``{"name": value}``.
    - a component whose ``name`` changes starts from nothing: the old component's fields
      are dropped and the new one's defaults fill what ``changes`` does not give (the same
      name keeps them).
    - giving one key of a ``mutually_exclusive`` group (``interval`` / ``interval_sigma``)
      drops the others from the result.
    - any other value (a spec object, list, tuple, number, None, a sampler preset name)
      replaces the field whole.

    Raises TypeError if ``changes`` is not a mapping and ValueError for unknown keys.
    """
    if not isinstance(changes, Mapping):
        raise TypeError(f"{where or cls.__name__}: the changes must be a mapping of field names to values, "
                        f"got {type(changes).__name__} {changes!r}")
    base = _as_data(cls, base)
    data: dict[str, Any] = dict(base) if isinstance(base, Mapping) else {}
    target: Optional[type[BaseModel]] = cls
    kind = _kind_base(cls)
    if kind is not None:
        old = data.get("name")
        if "name" in changes and old is not None and changes["name"] != old:
            data = {}  # another component: the old one's fields do not apply to it
        target = _registered_spec(kind, changes.get("name", data.get("name")))
    if target is not None:
        place = where or cls.__name__
        if kind is not None and kind.registry is not None:
            place = f"{place} ({kind.registry.kind} {changes.get('name', data.get('name'))!r})"
        _check_keys(target, changes, place)
    fields = (target or cls).model_fields
    groups = _exclusive_groups(target or cls)
    for key in changes:
        for group in groups:
            if key in group:
                for other in group:
                    if other != key and other not in changes:
                        data.pop(other, None)
    for key, value in changes.items():
        info = fields.get(key)
        sub = _model_class(info.annotation) if info is not None else None
        if sub is not None and isinstance(value, str) and _kind_base(sub) is not None:
            value = {"name": value}
        if sub is not None and isinstance(value, Mapping):
            current = data[key] if key in data else _default_data(info)
            data[key] = merge_data(sub, current, value, where=f"{where}.{key}" if where else key)
        else:
            data[key] = value.model_dump() if isinstance(value, BaseModel) else value
    return data


def _kind_base(cls: type) -> Optional[type[ComponentSpec]]:
    """The component-kind base class (``kind_base = True``) of spec class ``cls``, or None."""
    for c in cls.__mro__:
        if c.__dict__.get("kind_base", False):
            return c
    return None


def _registered_spec(kind: type[ComponentSpec], name: Any) -> Optional[type[BaseModel]]:
    """The spec class registered for component ``name`` of ``kind`` (the kind's base class when
    the factory takes none); None when the name is not registered (validation says so)."""
    reg = kind.registry
    if reg is None or not isinstance(name, str) or name not in reg:
        return None
    return reg.get(name).spec or kind


def _exclusive_groups(cls: type) -> tuple[tuple[str, ...], ...]:
    return cls.mutually_exclusive if isinstance(cls, type) and issubclass(cls, SpecModel) else ()


def _check_keys(cls: type[BaseModel], changes: Mapping[str, Any], where: str) -> None:
    accepted = list(cls.model_fields)
    accepted += [k for g in _exclusive_groups(cls) for k in g if k not in accepted]
    unknown = [k for k in changes if k not in accepted]
    if unknown:
        s = "s" if len(unknown) > 1 else ""
        raise ValueError(f"{where}: unknown field{s} {', '.join(repr(k) for k in unknown)} "
                         f"({cls.__name__} takes {', '.join(accepted)})")


def _model_class(annotation: Any) -> Optional[type[BaseModel]]:
    """The spec class a field's annotation holds (through Optional and Annotated), or None."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _model_class(typing.get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        found = {c for c in map(_model_class, typing.get_args(annotation)) if c is not None}
        return found.pop() if len(found) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _as_data(cls: type[BaseModel], value: Any) -> Any:
    """A current value as a dict of fields where it is a spec object or a name."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, str):
        if _kind_base(cls) is not None:
            return {"name": value}
        return cls.model_validate(value).model_dump()  # e.g. a sampler preset name
    return value


def _default_data(info: Any) -> Any:
    if info.is_required():
        return {}
    return _as_data(_model_class(info.annotation) or BaseModel, info.get_default(call_default_factory=True))


def _declared_terms(part: str, spec: Any) -> list[LossTerm]:
    """``spec.loss_terms()`` checked (see :meth:`FlowMoSpec.loss_terms`), as a list of LossTerm."""
    where = f"{part} {spec.name!r}"
    terms = spec.loss_terms()
    if terms is None:
        raise ValueError(
            f"{where} does not declare its loss terms (its spec's loss_terms() returns None). Declare them on its "
            "class: a classmethod `loss_terms(cls, spec)` returning [flowmo.LossTerm(name, weight, what), ...] (the "
            "keys of the dict it returns, the weight it applied, in words what the term is; the spec holds the "
            "configuration, e.g. spec.weight); or, registered with an explicit spec class, override that spec "
            "class's loss_terms(self)")
    if isinstance(terms, LossTerm):
        raise ValueError(f"{where}: loss_terms() returned one LossTerm ({terms.name!r}); it must return a list of them")
    if not isinstance(terms, (list, tuple)):
        raise ValueError(f"{where}: loss_terms() must return a list of LossTerm(name, weight, what), "
                         f"got {type(terms).__name__} {terms!r}")
    out: list[LossTerm] = []
    for i, t in enumerate(terms):
        if not isinstance(t, (list, tuple)) or len(t) != 3:
            raise ValueError(f"{where}: loss_terms() entry {i} must be a LossTerm(name, weight, what) "
                             f"(or a 3-tuple), got {type(t).__name__} {t!r}")
        name, weight, what = t
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: loss_terms() entry {i}: the name must be a non-empty str, got {name!r}")
        try:
            w = float(weight) if isinstance(weight, numbers.Real) and not _is_bool(weight) else math.nan
        except (OverflowError, TypeError, ValueError):
            w = math.nan
        if not math.isfinite(w):
            raise ValueError(f"{where}: loss term {name!r}: the weight must be a finite number, got {weight!r}")
        if not isinstance(what, str):
            raise ValueError(f"{where}: loss term {name!r}: the description must be a str, got {what!r}")
        if any(o.name == name for o in out):
            raise ValueError(f"{where}: loss_terms() declares the term {name!r} twice")
        out.append(LossTerm(name, w, what))
    return out
