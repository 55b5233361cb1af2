"""The rectified-flow (Stage 1A) loss in the release's convention, and CFG dropout."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..registry import FLOW_LOSSES
from ..spec import LossTerm, RectifiedFlowLossSpec
from .perceptual import build_distance

__all__ = ["FlowLoss", "RectifiedFlowLoss", "apply_keep", "cfg_dropout", "cfg_keep", "VelocityFn"]

# (x_t (B, 3, H, W), t (B,), conditioning (B, T, C + 1)) -> velocity (B, 3, H, W)
VelocityFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def cfg_keep(batch: int, p: float, generator: Optional[torch.Generator] = None,
             device: Union[str, torch.device, None] = None) -> Optional[Tensor]:
    """Which samples keep their conditioning under classifier-free-guidance dropout of rate ``p``:
    a bool (batch,) tensor, True with probability 1 - p (one ``torch.rand`` draw from
    ``generator``), or None when ``p <= 0`` (nothing is dropped and nothing is drawn)."""
    if p <= 0:
        return None
    return torch.rand(batch, generator=generator, device=device) >= p


def apply_keep(cond: Tensor, keep: Tensor) -> Tensor:
    """``cond`` (B, ...) with the samples where ``keep`` (B,) is False/0 zeroed."""
    return cond * keep.to(cond.dtype).view(-1, *([1] * (cond.ndim - 1)))


def cfg_dropout(cond: Tensor, p: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """Zero the whole conditioning of each sample with probability ``p`` (classifier-free guidance)."""
    keep = cfg_keep(cond.shape[0], p, generator, cond.device)
    return cond if keep is None else apply_keep(cond, keep)


def _bcast(t: Tensor, like: Tensor) -> Tensor:
    return t.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


class FlowLoss(ABC):
    """The interface of every flow loss (the Stage 1A training loss of the decoder).

    Registered with :data:`flowmo.FLOW_LOSSES`; built as ``FLOW_LOSSES.build(spec)`` (no
    wiring) on first use by :attr:`flowmo.FlowMo.flow_loss`. A subclass's constructor takes
    its configuration as keyword-only arguments (registered with one decorator line) or its
    spec (an explicit spec class); there is no base constructor to call. Check a new loss with
    :func:`flowmo.testing.check_flow_loss`.

    Declaration: the classmethod :meth:`loss_terms` (``spec`` -> the terms ``__call__``
    returns); :meth:`flowmo.FlowMoSpec.loss_terms` needs it, and the default (None: not
    declared) makes it raise, saying how to declare them.
    """

    @classmethod
    def loss_terms(cls, spec: Any) -> Optional[list[LossTerm]]:
        """The terms this flow loss returns for its spec.

        Args:
            spec: the flow loss's spec (its configuration as attributes).

        Returns:
            A list of ``flowmo.LossTerm(name, weight, what)``, one per key of the dict
            ``__call__`` returns (the weight already applied, what the term is in words), or
            None (the default): not declared.
        """
        return None

    def draw_dropout(self, batch: int, generator: Optional[torch.Generator] = None,
                     device: Union[str, torch.device, None] = None) -> Union[Tensor, bool, None]:
        """The dropout draw ``__call__(..., dropout=True, generator=generator)`` would make, made
        beforehand: a (B,) bool keep mask to pass as ``dropout``, False when the loss drops
        nothing, or None (the default) when the loss cannot draw beforehand (a caller then passes
        ``dropout=True`` and the generator)."""
        return None

    @abstractmethod
    def __call__(
        self,
        velocity: VelocityFn,
        x: Tensor,
        cond: Tensor,
        t: Tensor,
        noise: Tensor,
        *,
        dropout: Union[bool, Tensor] = True,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Tensor]:
        """The loss terms of one batch.

        Args:
            velocity: ``velocity(x_t, t, cond)`` -> v (B, 3, H, W), the decoder: x_t (B, 3, H, W)
                in x's dtype, t (B,) float in [0, 1], cond (B, T, C + 1).
            x: clean images (B, 3, H, W), floating, in [-1, 1].
            cond: the decoder's conditioning (B, T, C + 1) (the code plus a channel of ones).
            t: flow times (B,) in [0, 1] (t = 0 data, t = 1 noise).
            noise: N(0, I) draws of x's shape (the t = 1 end of the path).
            dropout: whether to apply classifier-free-guidance dropout to ``cond`` (drawn from
                ``generator``), or the (B,) bool tensor of the samples that keep their
                conditioning, drawn beforehand by :meth:`draw_dropout` (a compiled training
                step takes every draw as an input: ``torch.compile`` cannot trace a generator).
            generator: the only source of randomness of the dropout (None: global RNG).

        Returns:
            dict of named, already-weighted scalar float tensors (the model sums them);
            differentiable through ``velocity``. The same arguments (and generator state)
            give the same terms.
        """


@FLOW_LOSSES.register("rectified_flow", spec=RectifiedFlowLossSpec)
class RectifiedFlowLoss(FlowLoss):
    """x_t = (1 - t) x + t eps, target v = eps - x, diffusion = mean((eps - v - x)^2).

    With a perceptual distance, adds ``perceptual_weight * mean(d(x_hat, x))`` on the one-step
    estimate x_hat = x_t - t v.
    """

    def __init__(self, spec: RectifiedFlowLossSpec):
        self.spec = spec
        self.perceptual = build_distance(spec.perceptual) if spec.perceptual is not None else None

    def draw_dropout(self, batch: int, generator: Optional[torch.Generator] = None,
                     device: Union[str, torch.device, None] = None) -> Union[Tensor, bool]:
        keep = cfg_keep(batch, self.spec.cfg_dropout, generator, device)
        return False if keep is None else keep

    def __call__(
        self,
        velocity: VelocityFn,
        x: Tensor,
        cond: Tensor,
        t: Tensor,
        noise: Tensor,
        *,
        dropout: Union[bool, Tensor] = True,
        generator: Optional[torch.Generator] = None,
    ) -> dict[str, Tensor]:
        if isinstance(dropout, Tensor):
            cond = apply_keep(cond, dropout)
        elif dropout:
            cond = cfg_dropout(cond, self.spec.cfg_dropout, generator)
        tb = _bcast(t, x)
        x_t = (1 - tb) * x + tb * noise
        v = velocity(x_t, t, cond)
        target = noise.float() - x.float()
        terms = {"diffusion": (target - v.float()).pow(2).mean()}
        if self.perceptual is not None and self.spec.perceptual_weight > 0:
            x_hat = x_t - tb * v
            dist = self.perceptual.to(x.device)(x_hat, x)
            terms["perceptual"] = self.spec.perceptual_weight * dist.mean()
        return terms
