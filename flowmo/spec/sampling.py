"""The sampler's specs: the time grid and ODE solver kinds with the built-in grids' specs,
classifier-free guidance, and :class:`SamplerSpec`, which composes them (and takes a preset's name)."""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, Literal, Mapping, Optional

from pydantic import ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from ..registry import SOLVERS, TIME_GRIDS, Registry
from flowmo.registry.spec_base import ComponentSpec, SpecModel
from flowmo.registry.scalars import (
    MAX_SAMPLER_STEPS,
    POW_P_RANGE,
    SHIFT_RANGE,
    SpecBool,
    SpecFloat,
    SpecInt,
    is_bool,
)


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


class KnotsGridSpec(TimeGridSpec):
    """The grid through given times: ``steps = len(times) - 1`` gives exactly ``times``; another
    step count interpolates them piecewise-linearly (knot j sits at fraction j / (len - 1) of the
    linear grid). A few-step decoder's preset records its training times this way."""

    name: Literal["knots"] = "knots"
    times: tuple[SpecFloat, ...] = Field((1.0, 0.0), min_length=2, max_length=MAX_SAMPLER_STEPS + 1,
                                         description="the knots: from exactly 1 (noise) down to exactly 0 (data), "
                                                     f"strictly decreasing, 2 .. {MAX_SAMPLER_STEPS + 1} of them")

    @field_validator("times")
    @classmethod
    def _times(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if v[0] != 1.0 or v[-1] != 0.0:
            raise ValueError(f"times must run from exactly 1 (noise) to exactly 0 (data), got {v[0]!r} .. {v[-1]!r}")
        import numpy as np

        for i in range(len(v) - 1):
            # also in float32, the precision the decoder sees t in (1 > 1e-300 > 0 is not)
            if not (v[i + 1] < v[i] and np.float32(v[i + 1]) < np.float32(v[i])):
                raise ValueError(f"times must be strictly decreasing (also in float32), but times[{i}:{i + 2}] = {v[i:i + 2]}")
        return tuple(float(x) for x in v)


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
                pair = isinstance(sig, (list, tuple)) and len(sig) == 2 and all(
                    isinstance(x, numbers.Real) and not is_bool(x) for x in sig)
                lo, hi = (float(x) for x in sig) if pair else (math.nan, math.nan)
                if not 0 <= lo <= hi < math.inf:
                    raise ValueError(f"interval_sigma must be a pair [lo, hi] of numbers with 0 <= lo <= hi < inf, got {sig!r}")
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
        return resolve_preset(data).model_dump() if isinstance(data, str) else data


SAMPLER_PRESETS: dict[str, SamplerSpec] = {}
"""Named sampler settings (``model.decode(code, sampler="fast")``, ``--sampler fast``): name ->
:class:`SamplerSpec`. :mod:`flowmo.samplers` adds the built-in ones once the grids and solvers
they name are registered ("release": the release's 25 Euler steps; "fast": 8); add your own here."""


def resolve_preset(name: str, model_presets: Optional[Mapping[str, SamplerSpec]] = None) -> SamplerSpec:
    """The sampler a preset ``name`` stands for: the model's own preset of that name
    (``FlowMoSpec.sampler_presets``, e.g. a few-step decoder's ``"distillation-4"``) when it
    has one, else the global :data:`SAMPLER_PRESETS` entry. Raises ValueError listing both
    kinds of names when neither has it."""
    model_presets = model_presets or {}
    if name in model_presets:
        return model_presets[name]
    if name in SAMPLER_PRESETS:
        return SamplerSpec.model_validate(SAMPLER_PRESETS[name])
    own = f"; this model's own: {', '.join(model_presets)}" if model_presets else ""
    raise ValueError(f"unknown sampler preset {name!r}; available: {', '.join(SAMPLER_PRESETS)}{own}")
