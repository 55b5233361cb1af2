"""Decoding: an ODE solver on a time grid with classifier-free guidance.

Precision: the ODE state and every piece of step arithmetic (the solver's updates, Heun's
averaging, the guidance combination) run in the *state dtype*, ``state_dtype(noise.dtype)``:
float32 for float32, bfloat16 and float16 noise, float64 for float64 noise. The decoder is
called with its inputs cast to its own dtype (``decoder_dtype``, e.g. a bfloat16 model's)
and its velocity is cast back to the state dtype before any arithmetic. So a model loaded in
bfloat16 or float16 rounds only its own computation; the solver does not round the state to
8 (or 11) bits on every step, and the returned images are in the state dtype (float32).

Host syncs: one per :func:`sample` call. The time grid is computed on the host as Python
floats (:func:`flowmo.samplers.grids.grid_floats`) before the loop, so no step reads a tensor;
the checks of the inputs' values (finite, castable to the decoder's dtype) and of the result
are gathered in a :class:`flowmo.devices.ValueChecks` and read once, after the last step.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from ..devices import ValueChecks
from ..spec import GuidanceSpec, SamplerSpec
from .grids import build_grid, describe, grid_floats
from .solvers import build_solver

__all__ = ["sample", "SampleOutput", "GuidedVelocity", "state_dtype", "check_float_batch"]

# (x_t, t (B,), cond (B, T, C + 1)) -> v
DecoderFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ODE state and the step arithmetic use for inputs of ``dtype``: at least
    float32 (float16 / bfloat16 -> float32, float32 -> float32, float64 -> float64)."""
    if not dtype.is_floating_point:
        raise TypeError(f"the sampler's state needs a floating-point dtype, got {dtype}")
    return torch.promote_types(dtype, torch.float32)


@dataclass
class SampleOutput:
    """What :func:`sample` returns.

    ``images`` (B, ...) like the noise, in the state dtype (float32 for float32, bfloat16 and
    float16 noise; float64 for float64), whatever the decoder's dtype; ``intermediates`` z
    after each step, same dtype (only with ``return_intermediates``).
    """

    images: Tensor
    decoder_calls: int  # decoder evaluations per image (a guided step counts 2)
    times: Tensor  # the grid used, float64
    intermediates: list[Tensor] = field(default_factory=list)  # z after each step, on request


class GuidedVelocity:
    """v(z, t) with CFG: v_u + scale (v_c - v_u) when t is in the interval, else v_c.

    The guided evaluation runs conditional and unconditional inputs as one batch.
    Counts decoder evaluations in ``calls``.

    ``decoder_dtype``: the dtype the decoder is called with: z, ``cond`` and ``null_cond``
    are cast to it for the call (None: z's own dtype, and the conditioning as given).
    Whatever the decoder returns (a real floating-point tensor of z's shape; anything else
    raises ``TypeError`` / ``ValueError``) is cast back to z's dtype *before* the guidance
    combination, so ``__call__(z, t)`` returns a tensor of z's shape and dtype and the
    combination runs in z's precision (float32 for a bfloat16 model).
    """

    def __init__(self, decoder: DecoderFn, cond: Tensor, null_cond: Tensor, guidance: GuidanceSpec,
                 decoder_dtype: Optional[torch.dtype] = None):
        self.decoder = decoder
        self.cond = cond if decoder_dtype is None else cond.to(decoder_dtype)
        self.null_cond = null_cond if decoder_dtype is None else null_cond.to(decoder_dtype)
        self.guidance = guidance
        self.decoder_dtype = decoder_dtype
        self.calls = 0

    def _decode(self, z: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        x = z if self.decoder_dtype is None else z.to(self.decoder_dtype)
        v = self.decoder(x, t, cond)
        if not isinstance(v, Tensor) or v.shape != z.shape or not v.is_floating_point():
            raise TypeError(f"the decoder must return a real floating-point velocity of shape {tuple(z.shape)}, "
                            f"got {describe(v)}")
        return v.to(z.dtype)

    def guided_at(self, t: float) -> bool:
        g = self.guidance
        if g.scale == 1.0:
            return False
        return g.interval is None or (g.interval[0] <= t <= g.interval[1])

    def __call__(self, z: Tensor, t: float) -> Tensor:
        b = z.shape[0]
        if self.guided_at(t):
            tt = torch.full((2 * b,), t, device=z.device, dtype=torch.float32)
            v = self._decode(torch.cat((z, z)), tt, torch.cat((self.cond, self.null_cond)))
            v_c, v_u = v[:b], v[b:]
            self.calls += 2
            return v_u + self.guidance.scale * (v_c - v_u)  # in z's dtype: v was cast back
        self.calls += 1
        return self._decode(z, torch.full((b,), t, device=z.device, dtype=torch.float32), self.cond)


def check_float_batch(x: object, name: str, checks: Optional[ValueChecks] = None) -> None:
    """Check that ``x`` is a real floating-point tensor with a batch dimension of size >= 1,
    with values (not on the meta device), all finite. Raises TypeError (not a real float
    tensor) or ValueError (no batch, meta, NaN/Inf), naming ``name``. With ``checks``, the
    finite check is added to it (read later by its owner, with its other checks) instead of
    read now (one host sync)."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"{name} must be a real floating-point torch.Tensor, got {describe(x)}")
    if x.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it has no values)")
    if x.ndim < 1 or x.shape[0] == 0:
        raise ValueError(f"{name} must have a batch dimension of size >= 1, got shape {tuple(x.shape)}")
    now = ValueChecks() if checks is None else checks
    now.add(torch.isfinite(x), lambda: ValueError(f"{name} contains NaN or Inf values"))
    if checks is None:
        now.read()


def sample(
    decoder: DecoderFn,
    noise: Tensor,
    cond: Tensor,
    spec: SamplerSpec,
    *,
    null_cond: Optional[Tensor] = None,
    return_intermediates: bool = False,
    enable_grad: bool = False,
    decoder_dtype: Optional[torch.dtype] = None,
    checks: Optional[ValueChecks] = None,
) -> SampleOutput:
    """Integrate from ``noise`` (t = 1) to an image (t = 0) conditioned on ``cond``.

    ``decoder(x_t, t, cond)`` gets x_t and ``cond`` (B, T, C + 1) in ``decoder_dtype`` and t
    a float32 (B,) tensor. ``decoder_dtype`` defaults to the decoder's own dtype when the
    decoder is an ``nn.Module`` or a method of one (e.g. ``model.decoder_velocity``) whose
    floating parameters share one dtype, else to noise's dtype; given explicitly, it must
    equal that parameter dtype (``ValueError`` otherwise, unless autocast is enabled on
    noise's device, where the module casts for itself). The decoder returns a velocity of x_t's
    shape (any real floating dtype; integer, boolean or complex velocities raise
    ``TypeError``). ``null_cond`` is the unconditional input (default: zeros like ``cond``),
    of cond's shape and device; ``cond`` and ``null_cond`` may be of any floating dtype
    (e.g. float64 conditioning for a bfloat16 decoder): both are cast to ``decoder_dtype``,
    and a value that overflows that dtype raises ``ValueError`` naming the argument.
    ``spec`` may also be a dict of SamplerSpec fields (missing ones take SamplerSpec's
    defaults) or a preset name of :data:`flowmo.samplers.SAMPLER_PRESETS` (``"fast"``).

    The solver integrates a state of dtype ``state_dtype(noise.dtype)`` (float32 for float32,
    bfloat16 and float16 noise) and sees a velocity function that returns that dtype, so a
    solver's arithmetic (built-in or registered by a user) and the guidance combination never
    round to the decoder's precision. ``images`` and ``intermediates`` are in that dtype.

    Runs without autograd unless ``enable_grad``. Bad arguments raise ValueError / TypeError
    naming them; a non-finite result raises ValueError, and so does a time grid whose output is
    not (steps + 1,) times running strictly down from exactly 1 to exactly 0
    (:func:`flowmo.samplers.grids.check_times`; a grid running 0 -> 1 would integrate the
    wrong way).

    One host sync per call: the grid's times are Python floats (computed on the host before
    the loop, :func:`flowmo.samplers.grids.grid_floats`; the solver gets them as a tuple), and
    the value checks (noise, cond and null_cond finite and castable, the result finite) are
    read together after the last step, so a bad value is reported after the sampling ran on
    it. ``checks``: the caller's own pending value checks (e.g. :meth:`flowmo.FlowMo.decode`'s
    of its arguments), read in that same sync, before sample's own (their errors win).
    """
    checks = ValueChecks() if checks is None else checks
    spec = _check_inputs(decoder, noise, cond, spec, null_cond, checks)
    own = _module_dtype(decoder)
    if not (decoder_dtype is None or isinstance(decoder_dtype, torch.dtype) and decoder_dtype.is_floating_point):
        raise TypeError(f"decoder_dtype must be a floating-point torch.dtype or None, got {decoder_dtype!r}")
    if decoder_dtype not in (None, own) and own is not None and not torch.is_autocast_enabled(noise.device.type):
        raise ValueError(f"decoder_dtype is {decoder_dtype} but the decoder's parameters are {own}: pass {own} or None")
    if null_cond is None:
        null_cond = torch.zeros_like(cond)
    dd = decoder_dtype or own or noise.dtype
    cond, null_cond = _to_decoder_dtype(cond, "cond", dd, checks), _to_decoder_dtype(null_cond, "null_cond", dd, checks)
    times = tuple(grid_floats(build_grid(spec.grid), spec.steps, f"time grid {spec.grid.name!r}"))
    solver = build_solver(spec.solver)
    velocity = GuidedVelocity(decoder, cond, null_cond, spec.guidance, dd)
    work = state_dtype(noise.dtype)
    inter: list[Tensor] = []
    cb = (lambda i, z: inter.append(z)) if return_intermediates else None
    with (nullcontext() if enable_grad else torch.no_grad()):
        z = solver.solve(velocity, noise.to(work), times, cb)  # the state's shape and dtype (check_solver)
        checks.add(torch.isfinite(z), lambda: ValueError(
            f"sampling produced non-finite images: noise, cond or guidance ({spec.guidance.scale}) is too large for "
            f"{dd}, or the weights are not finite"))
        checks.read()  # the call's one host sync
        if spec.clip:
            z = z.clamp(-1.0, 1.0)
    return SampleOutput(z, velocity.calls, torch.tensor(times, dtype=torch.float64), inter)


def _module_dtype(decoder) -> Optional[torch.dtype]:
    """The floating dtype of the decoder's parameters when the decoder is an ``nn.Module`` or a
    method of one and all its floating parameters share one dtype; else None."""
    mod = decoder if isinstance(decoder, torch.nn.Module) else (decoder.__self__ if inspect.ismethod(decoder) else None)
    if not isinstance(mod, torch.nn.Module):
        return None
    dtypes = {p.dtype for p in mod.parameters() if p.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def _to_decoder_dtype(x: Tensor, name: str, dtype: torch.dtype, checks: ValueChecks) -> Tensor:
    """``x`` (finite) cast to the decoder's dtype; adds to ``checks`` a ValueError naming
    ``name`` for values that overflow it."""
    y = x.to(dtype)
    if y.dtype != x.dtype:
        checks.add(torch.isfinite(y), lambda: ValueError(
            f"{name} has values beyond the range of the decoder's dtype {dtype}; scale it down"))
    return y


def _check_inputs(decoder, noise, cond, spec, null_cond, checks: ValueChecks) -> SamplerSpec:
    """Validate sample()'s arguments (ValueError / TypeError naming the argument; the value
    checks go to ``checks``); returns the spec."""
    spec = SamplerSpec.model_validate(spec) if isinstance(spec, (dict, str)) else spec
    if not isinstance(spec, SamplerSpec) or not callable(decoder):
        raise TypeError(f"spec must be a SamplerSpec, a dict or a sampler preset name and decoder a callable, got "
                        f"{describe(spec)} and {describe(decoder)}")
    for name, x in (("noise", noise), ("cond", cond), ("null_cond", null_cond)):
        if x is not None or name != "null_cond":
            check_float_batch(x, name, checks)
    if (cond.shape[0], cond.device) != (noise.shape[0], noise.device) or (
            null_cond is not None and (null_cond.shape, null_cond.device) != (cond.shape, cond.device)):
        raise ValueError(f"cond must have noise's batch and device, null_cond cond's shape and device; got noise "
                         f"{describe(noise)}, cond {describe(cond)}, null_cond {describe(null_cond)}")
    return spec
