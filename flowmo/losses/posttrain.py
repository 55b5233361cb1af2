"""Stage 1B: the mode-seeking post-training objective."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Optional

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from ..registry import POSTTRAIN_OBJECTIVES
from ..samplers.grids import build_grid, check_times, describe
from ..samplers.sampler import check_float_batch, state_dtype
from ..spec import GuidanceSpec, LossTerm, ModeSeekingSpec, SamplerSpec
from .flow import VelocityFn
from .perceptual import build_distance

__all__ = ["PosttrainObjective", "ModeSeeking", "random_chain_times", "few_step_sampler", "check_sampler_preset"]


def _check_u(u: Any, *, batch: Optional[int] = None, steps: Optional[int] = None,
             device: Optional[torch.device] = None) -> Tensor:
    """Validate chain draws ``u`` (B, K + 1); TypeError / ValueError naming ``u``.

    Real floating dtype, 2-D with B >= 1 rows and K + 1 >= 2 columns (``batch`` / ``steps``
    = K when given), on ``device`` when given, finite, non-negative, and each row's entries
    1..K summing to a positive number (the times need a positive total to run from 1 to 0).
    """
    if not isinstance(u, Tensor):
        raise TypeError(f"u must be a torch.Tensor of non-negative draws (batch, K + 1), got {type(u).__name__}")
    if not u.is_floating_point():
        raise TypeError(f"u must be a real floating-point tensor (uniform draws), got dtype {u.dtype}")
    shape_ok = (u.ndim == 2 and u.shape[0] >= 1 and u.shape[1] >= 2 and (batch is None or u.shape[0] == batch)
                and (steps is None or u.shape[1] == steps + 1))
    if not shape_ok or u.device.type == "meta" or (device is not None and u.device != device):
        raise ValueError(f"u must have shape ({batch or 'batch'}, {'K + 1' if steps is None else steps + 1}) (rows >= 1,"
                         f" columns >= 2) on {device or 'a device with values'}, got {describe(u)}")
    if not bool(torch.isfinite(u).all()):
        raise ValueError("u contains NaN or Inf values")
    if bool((u < 0).any()):
        raise ValueError(f"u must be non-negative (its entries are step sizes), got a minimum of {float(u.min()):.3g}")
    zero_rows = (u[:, 1:] == 0).all(dim=1).nonzero()
    if len(zero_rows):
        raise ValueError(f"u[{int(zero_rows[0, 0])}, 1:] is all zero: each row's entries 1..K need a positive sum")
    return u


def random_chain_times(u: Tensor) -> Tensor:
    """Per-sample times of a K-step chain from uniform draws u (B, K + 1).

    s = cumsum(u), normalised to run from 0 to 1; the times are s in reversed order
    (t_0 = 1, ..., t_K = 0), non-increasing. ``u[:, 0]`` cancels in the normalisation:
    the step sizes are proportional to ``u[:, 1:]`` (computed as the cumulative sum of
    those, so a large ``u[:, 0]`` cannot swamp them). Computed in float64 on each row
    divided by its largest entry, so no sum overflows; returned in u's dtype, (B, K + 1).

    ``u`` must be a real floating tensor (B, K + 1), B >= 1, K >= 1, finite, non-negative,
    with each row's entries 1..K summing to a positive number; otherwise TypeError /
    ValueError naming ``u``.
    """
    return _chain_times(_check_u(u))


def _chain_times(u: Tensor) -> Tensor:
    """:func:`random_chain_times` of a ``u`` already checked."""
    w = u[:, 1:].double()
    c = torch.cumsum(w / w.amax(dim=1, keepdim=True), dim=1)  # entries <= 1 each: no overflow
    s = torch.cat((torch.zeros_like(c[:, :1]), c), dim=1) / c[:, -1:]
    return s.flip(1).to(u.dtype)


class PosttrainObjective(ABC):
    """The interface of every post-training (Stage 1B) objective.

    Registered with :data:`flowmo.POSTTRAIN_OBJECTIVES`; built as
    ``POSTTRAIN_OBJECTIVES.build(spec)`` (no wiring) on first use by
    :attr:`flowmo.FlowMo.posttrain_objective`. The spec's ``flow_weight`` (a field of every
    :class:`flowmo.spec.PosttrainSpec`) is the model's business, not the objective's. Check a
    new objective with :func:`flowmo.testing.check_posttrain`.

    Optional capabilities: ``checkpoints_decoder`` (default False): True when the objective
    recomputes its decoder calls in backward (gradient checkpointing); the model then also
    checkpoints the kept flow loss's decoder call, whose activations would otherwise set the
    step's memory peak. ``needs_teacher`` (default False): True when the objective compares the
    decoder with a frozen copy of itself as post-training started (distillation); the model
    then passes ``teacher=`` (that copy's velocity, :meth:`flowmo.FlowMo.teacher_velocity`) to
    ``__call__``, and the trainer makes the copy and keeps it in its checkpoints.
    :meth:`sampler_preset`: the sampler the objective trains for (default None).

    A subclass's constructor takes its configuration as keyword-only arguments (registered
    with one decorator line; ``flow_weight``, a field of every post-training spec, is added to
    the derived spec and is not passed) or its spec (an explicit spec class); there is no base
    constructor to call.

    Declaration: the classmethod :meth:`loss_terms` (``spec`` -> the objective's own terms);
    :meth:`flowmo.FlowMoSpec.loss_terms` needs it for stage "1b", and the default (None: not
    declared) makes it raise, saying how to declare them.
    """

    checkpoints_decoder: bool = False
    needs_teacher: bool = False

    def sampler_preset(self) -> Optional[tuple[str, SamplerSpec]]:
        """The sampler the objective trains the decoder for, as ``(name, spec)`` (e.g.
        ``("distillation-4", <4-step sampler>)``), or None (the default: the objective does not
        change how the model decodes). The trainer records a preset as the model's sampler and
        in its ``sampler_presets``, so the trained folder decodes with it by default and by name."""
        return None

    @classmethod
    def loss_terms(cls, spec: Any) -> Optional[list[LossTerm]]:
        """The objective's own terms for its spec (the kept flow loss not included).

        Args:
            spec: the objective's spec (its configuration as attributes).

        Returns:
            A list of ``flowmo.LossTerm(name, weight, what)``, one per key of the dict
            ``__call__`` returns, or None (the default): not declared.
        """
        return None

    @abstractmethod
    def __call__(self, velocity: VelocityFn, x: Tensor, cond: Tensor, *, noise: Optional[Tensor] = None,
                 u: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """The objective's terms for one batch (an objective with ``needs_teacher`` also takes
        ``teacher=``, a velocity function like ``velocity`` that must not be trained).

        Args:
            velocity: ``velocity(x_t, t, cond)`` -> v, the decoder (as for :class:`FlowLoss`).
            x: clean images (B, 3, H, W) in [-1, 1], in the decoder's dtype (trusted: the caller,
                :meth:`flowmo.FlowMo.posttrain_loss`, checked them).
            cond: the decoder's conditioning (B, T, C + 1).
            noise: optional starting noise of x's shape (default: drawn from ``generator``).
            u: optional per-sample random draws (B, ...) the objective documents (default:
                drawn from ``generator``).
            generator: the only source of randomness.

        Returns:
            dict of named, already-weighted scalar float tensors, differentiable through
            ``velocity``; the same arguments (and generator state) give the same terms.
        """


@POSTTRAIN_OBJECTIVES.register("mode_seeking", spec=ModeSeekingSpec)
class ModeSeeking(PosttrainObjective):
    """Sample K Euler steps from noise with random per-sample step sizes (the release's Stage
    1B) or on the fixed grid ``spec.grid`` (a K-step decoder: its sampler is the objective's
    :meth:`sampler_preset`), through the decoder (gradient checkpointing on each call), and
    penalise ``weight * d(sample, x)``.

    ``checkpoints_decoder`` is the spec's ``checkpoint``."""

    def __init__(self, spec: ModeSeekingSpec):
        self.spec = spec
        self.checkpoints_decoder = spec.checkpoint
        self.distance = build_distance(spec.distance)
        self.times: Optional[Tensor] = None  # the fixed grid's (k + 1,) float64 times, when spec.grid is set
        if spec.grid is not None:
            self.times = check_times(build_grid(spec.grid)(spec.k), spec.k, f"time grid {spec.grid.name!r}")

    def sampler_preset(self) -> Optional[tuple[str, SamplerSpec]]:
        """With ``grid`` set: ``("mode_seeking-<k>", k unguided Euler steps on that grid)``, the
        sampler the chain trains; else None (random steps train no particular sampler)."""
        if self.spec.grid is None:
            return None
        return f"mode_seeking-{self.spec.k}", few_step_sampler(self.spec.k, self.spec.grid)

    def draw_u(self, batch: int, *, generator: Optional[torch.Generator] = None, device=None) -> Tensor:
        return torch.rand(batch, self.spec.k + 1, generator=generator, device=device)

    def chain(self, velocity: VelocityFn, noise: Tensor, cond: Tensor, u: Tensor, *,
              decoder_dtype: Optional[torch.dtype] = None) -> Tensor:
        """The K-step Euler sample from ``noise`` (B, ...) with per-sample times from ``u`` (B, K + 1).

        ``velocity(x_t, t, cond)`` is called with x_t cast to ``decoder_dtype`` (default: noise's
        dtype), t float32 (B,) and ``cond`` as given; it must return a real floating tensor of
        x_t's shape. The state and the step arithmetic z <- z - (t_i - t_{i+1}) v run in
        ``state_dtype(noise.dtype)`` (float32 for float32, bfloat16 and float16; float64 for
        float64): each velocity is cast to it before use and the step sizes are differences of
        the float64 times. Returns (B, ...) in that dtype.

        Arguments: ``noise`` a finite floating tensor with a batch dimension B >= 1 (not meta);
        ``cond`` a tensor with batch B on noise's device; ``u`` as :func:`random_chain_times`
        requires, of shape (B, K + 1) and on noise's device (the times then run from 1 to 0,
        monotonically); with ``spec.grid`` set, ``u`` must be None (every sample runs on the
        grid's times). Anything else raises TypeError / ValueError naming the argument.
        """
        check_float_batch(noise, "noise")
        self._check_cond_and_u(cond, u, noise.shape[0], noise.device, u_required=True)
        return self._chain(velocity, noise, cond, u, decoder_dtype)

    def _check_cond_and_u(self, cond: Any, u: Any, b: int, device: torch.device, u_required: bool) -> None:
        """``cond`` with batch ``b`` on ``device``; ``u``: None with ``spec.grid``, else (B, K + 1)
        draws (:func:`random_chain_times`), which may be None (drawn later) unless ``u_required``."""
        if not isinstance(cond, Tensor) or cond.ndim < 1 or cond.shape[0] != b or cond.device != device:
            raise ValueError(f"cond must have batch {b} on {device} (noise's), got {describe(cond)}")
        if u is not None and self.times is not None:
            raise ValueError("u must be None: this chain runs on the fixed grid spec.grid (its times take no draws)")
        if self.times is None and (u is not None or u_required):
            _check_u(u, batch=b, steps=self.spec.k, device=device)

    def _chain(self, velocity: VelocityFn, noise: Tensor, cond: Tensor, u: Optional[Tensor],
               decoder_dtype: Optional[torch.dtype] = None) -> Tensor:
        """:meth:`chain` of arguments already checked."""
        b = noise.shape[0]
        times64 = _chain_times(u.double()) if self.times is None else self.times.to(noise.device).expand(b, -1)
        work = state_dtype(noise.dtype)
        dd = decoder_dtype or noise.dtype
        times = times64.to(torch.float32)
        z = noise.to(work)
        view = (-1,) + (1,) * (z.ndim - 1)
        use_ckpt = self.spec.checkpoint and torch.is_grad_enabled()
        for i in range(self.spec.k):
            t = times[:, i]
            dt = (times64[:, i] - times64[:, i + 1]).to(work).view(view)
            x = z.to(dd)
            v = checkpoint(velocity, x, t, cond, use_reentrant=False) if use_ckpt else velocity(x, t, cond)
            if not isinstance(v, Tensor) or v.shape != z.shape or not v.is_floating_point():
                raise TypeError(f"velocity must return a real floating-point tensor of shape {tuple(z.shape)}, "
                                f"got {describe(v)}")
            z = z - dt * v.to(work)
        return z

    def __call__(self, velocity: VelocityFn, x: Tensor, cond: Tensor, *, noise: Optional[Tensor] = None,
                 u: Optional[Tensor] = None, generator: Optional[torch.Generator] = None) -> dict[str, Tensor]:
        """``{"mode_seeking": weight * mean_b d(chain sample, x)}``.

        ``x`` (B, 3, H, W) is given in the decoder's dtype (as :meth:`FlowMo.posttrain_loss`
        does): the decoder is called in that dtype, the chain runs in ``state_dtype(x.dtype)``
        (float32 for a bfloat16 model) and the distance compares the float32 sample with x
        cast up (exactly). ``noise`` defaults to N(0, I) drawn in the state dtype, so a
        bfloat16 and a float32 model draw the same noise from the same generator; a given
        ``noise`` must be a finite floating tensor of x's shape on x's device. ``u`` (B, K + 1)
        as :meth:`chain` requires, on x's device; default: uniform draws.
        """
        if noise is not None:
            check_float_batch(noise, "noise")
            if noise.shape != x.shape or noise.device != x.device:
                raise ValueError(f"noise must have the shape of x {tuple(x.shape)} and its device, got {describe(noise)}")
        self._check_cond_and_u(cond, u, x.shape[0], x.device, u_required=False)
        work = state_dtype(x.dtype)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=work)
        if u is None and self.times is None:
            u = self.draw_u(x.shape[0], generator=generator, device=x.device)
        sample = self._chain(velocity, noise, cond, u, x.dtype)
        dist = self.distance.to(x.device)(sample, x.to(sample.dtype))
        return {"mode_seeking": self.spec.weight * dist.mean()}



def few_step_sampler(k: int, grid: Any, clip: bool = True) -> SamplerSpec:
    """The sampler of a decoder trained for ``k`` steps on ``grid`` (a time grid spec): k Euler
    steps without guidance (guidance, if any, was distilled into the decoder), so k decoder calls."""
    return SamplerSpec(steps=k, grid=grid, solver={"name": "euler"}, guidance=GuidanceSpec(scale=1.0, interval=None),
                       clip=clip)


def check_sampler_preset(preset: Any, what: str = "sampler_preset()") -> Optional[tuple[str, SamplerSpec]]:
    """``preset`` if it is None or ``(name, SamplerSpec)`` with a name a model's
    ``sampler_presets`` accepts (:data:`flowmo.spec.model.PRESET_NAME`, not a global preset's);
    TypeError / ValueError naming ``what`` otherwise."""
    from ..spec.model import check_preset_name

    if preset is None:
        return None
    if not isinstance(preset, tuple) or len(preset) != 2 or not isinstance(preset[1], SamplerSpec):
        raise TypeError(f"{what} must return None or a tuple (name, flowmo.SamplerSpec), got {preset!r}")
    check_preset_name(preset[0], what)
    return preset
