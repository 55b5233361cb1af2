"""FlowMo's training objectives: the Stage 1A loss (rectified flow on the decoder plus the
quantizer's and perceptual terms) and the Stage 1B post-training loss, as methods that
:class:`flowmo.FlowMo` inherits; :class:`LossOutput` holds a loss and its named terms."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch
import torch.utils.checkpoint
from torch import Tensor

from .losses.flow import FlowLoss
from .losses.posttrain import PosttrainObjective
from .registry import FLOW_LOSSES, POSTTRAIN_OBJECTIVES

__all__ = ["LossOutput", "ObjectivesMixin"]


@dataclass
class LossOutput:
    """A training loss: ``total`` (what to backpropagate) and its named terms (weighted)."""

    total: Tensor
    terms: dict[str, Tensor]

    def detached(self) -> dict[str, float]:
        out = {"total": float(self.total.detach())}
        out.update({k: float(v.detach()) for k, v in self.terms.items()})
        return out


def _merge_terms(terms: dict, new: Any, source: str) -> None:
    """Add ``new`` (a mapping name -> tensor from ``source``) to ``terms``; ValueError naming
    the key if a name is already taken (a term would silently replace another)."""
    if not isinstance(new, Mapping) or not all(isinstance(v, Tensor) for v in new.values()):
        raise TypeError(f"{source} must return a dict of named tensors, got {type(new).__name__}")
    for k in new:
        if k in terms:
            raise ValueError(f"{source} returns a term named {k!r}, which another part of the loss already "
                             "uses; rename the term (loss terms must have distinct names)")
    terms.update(new)


def _check_teacher_capability(objective: Any) -> None:
    """``needs_teacher`` must be a bool, and an objective that needs a teacher must take
    ``teacher=`` (TypeError naming the class otherwise, before any training step)."""
    import inspect

    name = type(objective).__name__
    needs = objective.needs_teacher
    if not isinstance(needs, bool):
        raise TypeError(f"{name}.needs_teacher must be a bool (True: its __call__ takes teacher=), got {needs!r}")
    if needs:
        params = inspect.signature(objective.__call__).parameters
        if "teacher" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise TypeError(f"{name} declares needs_teacher = True but its __call__ takes no teacher= argument")


class ObjectivesMixin:
    """The training losses of :class:`flowmo.FlowMo` (they use its encoder, quantizer, decoder,
    time sampler and input checks)."""

    @property
    def flow_loss(self) -> FlowLoss:
        """The spec's flow loss (:class:`flowmo.losses.FlowLoss`), built on first use."""
        if self._flow_loss is None:
            self._flow_loss = FLOW_LOSSES.build(self.spec.flow_loss)
        return self._flow_loss

    @property
    def posttrain_objective(self) -> PosttrainObjective:
        """The spec's post-training objective (:class:`flowmo.losses.PosttrainObjective`), built on first use."""
        if self._posttrain is None:
            objective = POSTTRAIN_OBJECTIVES.build(self.spec.posttrain)
            _check_teacher_capability(objective)
            self._posttrain = objective
        return self._posttrain

    # ------------------------------------------------------------------ the teacher
    def set_teacher(self, state: Optional[Mapping[str, Tensor]] = None) -> None:
        """Freeze a copy of the decoder as the teacher of a distillation objective
        (``posttrain.needs_teacher``): the decoder's current weights, or ``state``: the decoder's
        weights as :meth:`teacher_state` returns them (keys without the ``decoder.`` prefix) or a
        whole model's state dict (its ``decoder.*`` entries are taken). Call it after loading the
        weights the teacher should have (the trainer calls it after ``train.init_from``).

        The teacher is not a submodule: it is not in :meth:`state_dict`, not saved by
        :meth:`save_pretrained` and never trained; ``.to()`` / ``.double()`` move and cast it with
        the model. Raises TypeError when ``state`` is not a mapping of dense tensors, and
        StateDictMismatchError (a ValueError) naming the keys when its keys or shapes do not fit
        the decoder or it holds NaN / Inf values."""
        from .state_dicts import check_finite, check_state_dict

        teacher = copy.deepcopy(self.decoder)
        if state is not None:
            if not isinstance(state, Mapping):
                raise TypeError(f"state must be a mapping name -> tensor (the decoder's weights), got "
                                f"{type(state).__name__}")
            if not all(isinstance(k, str) for k in state):
                bad_keys = [k for k in state if not isinstance(k, str)][:5]
                raise TypeError(f"state's keys must be parameter names (str), got {bad_keys}")
            if any(k.startswith("decoder.") for k in state):
                state = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
            bad = [k for k, v in state.items() if not isinstance(v, Tensor) or v.layout != torch.strided
                   or v.device.type == "meta"]
            if bad:
                raise TypeError(f"state must map names to dense tensors with values; not so for {bad[:5]}")
            check_state_dict({k: tuple(v.shape) for k, v in teacher.state_dict().items()}, dict(state),
                             "the teacher's state (the decoder's weights, keys without 'decoder.')")
            check_finite(state, "the teacher's state")
            teacher.load_state_dict(state)
        else:
            check_finite(teacher.state_dict(), "the decoder (the teacher would copy it)")
        teacher.requires_grad_(False)
        teacher.eval()
        self.__dict__["_teacher"] = teacher  # bypasses nn.Module registration on purpose

    def teacher_state(self) -> dict[str, Tensor]:
        """A copy of the teacher decoder's weights (keys without the ``decoder.`` prefix; editing
        it leaves the teacher as it is); ValueError when :meth:`set_teacher` was not called."""
        if self._teacher is None:
            raise ValueError("this model has no teacher (call set_teacher() first)")
        return {k: v.detach().clone() for k, v in self._teacher.state_dict().items()}

    def teacher_velocity(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """:meth:`decoder_velocity` of the frozen teacher (same arguments and shapes)."""
        if self._teacher is None:
            raise ValueError("this model has no teacher (call set_teacher() first)")
        return self._decoder_velocity(self._teacher, x_t, t, cond)

    def loss(self, images: Tensor, *, t: Optional[Tensor] = None, noise: Optional[Tensor] = None,
             cfg_dropout: bool = True, generator: Optional[torch.Generator] = None) -> LossOutput:
        """Stage 1A: rectified flow on the decoder plus the quantizer's (and perceptual) terms.

        ``t`` (B,) and ``noise`` (like images) default to draws from the spec's time sampler and N(0, I).
        """
        images = self._check_images(images)
        b = images.shape[0]
        q = self.quantize(self.encode(images))
        if t is None:
            t = self.time_sampler.sample(b, generator=generator, device=images.device)
        elif not isinstance(t, Tensor):
            raise TypeError(f"t must be a ({b},) torch.Tensor of times in [0, 1] or None, got {type(t).__name__}")
        else:
            t = self._check_times(t, b, "t")
        if noise is None:
            noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        else:
            noise = self._check_noisy(noise, "noise")
            if noise.shape != images.shape:
                raise ValueError(f"noise must have the shape of images {tuple(images.shape)}, got {tuple(noise.shape)}")
        terms: dict[str, Tensor] = {}
        _merge_terms(terms, dict(self.flow_loss(self.decoder_velocity, images, self.conditioning(q.values), t,
                                                noise, dropout=cfg_dropout, generator=generator)), "the flow loss")
        _merge_terms(terms, {f"quantizer/{k}": v for k, v in q.losses.items()}, "the quantizer")
        total = torch.stack([v.float() for v in terms.values()]).sum()
        # in training mode a non-finite total is returned: a training loop must see it (the trainer
        # skips and counts such steps, and all ranks must agree on that), not an exception
        if not self.training and not bool(torch.isfinite(total)):
            raise ValueError(
                f"the loss is not finite: noise (max |noise| = {float(noise.abs().max()):.3g}) or the images "
                f"are too large for {self.dtype}, or the weights are not finite"
            )
        return LossOutput(total, terms)

    def posttrain_loss(self, images: Tensor, *, generator: Optional[torch.Generator] = None,
                       noise: Optional[Tensor] = None, u: Optional[Tensor] = None,
                       cfg_dropout: bool = True) -> LossOutput:
        """Stage 1B (the release's recipe): the flow loss (weighted by ``posttrain.flow_weight``),
        the quantizer's terms and the post-training objective's terms, with the encoder and
        quantizer frozen. The quantizer's terms are computed without gradients (nothing they
        depend on trains in Stage 1B); they are reported, as the release's Stage 1B loss holds
        them. ``spec.loss_terms("1b")`` lists the terms.

        ``noise`` (the chain's starting noise) must be a finite floating tensor of the images'
        shape on the model's device; ``u`` (the objective's draws; for ``mode_seeking`` (B, K + 1),
        finite, non-negative, each row's entries 1..K with a positive sum) a finite floating
        tensor with batch B on the model's device; both default to draws from ``generator``.
        Bad values raise TypeError / ValueError naming the argument. A post-training objective
        whose term names collide with the flow loss's or the quantizer's raises ValueError (a
        term would silently replace another). As in :meth:`loss`, a non-finite total raises
        ValueError in eval mode and is returned in training mode.
        """
        images = self._check_images(images)
        b = images.shape[0]
        if noise is not None:
            self._check_noisy(noise, "noise", cast=False)
            if noise.shape != images.shape:
                raise ValueError(f"noise must have the shape of images {tuple(images.shape)}, got {tuple(noise.shape)}")
        if u is not None:
            if not isinstance(u, Tensor):
                raise TypeError(f"u must be a torch.Tensor of draws with batch {b} or None, got {type(u).__name__}")
            if not u.is_floating_point():
                raise TypeError(f"u must be a real floating-point tensor, got dtype {u.dtype}")
            if u.ndim < 1 or u.shape[0] != b:
                raise ValueError(f"u must have batch {b} (the images'), got shape {tuple(u.shape)}")
            self._check_device(u, "u")
            if not bool(torch.isfinite(u).all()):
                raise ValueError("u contains NaN or Inf values")
        with torch.no_grad():
            q = self.quantizer(self.encode(images))
        cond = self.conditioning(q.values)
        spec = self.spec.posttrain
        terms: dict[str, Tensor] = {}
        flow_weight = spec.flow_weight
        if flow_weight > 0:
            t = self.time_sampler.sample(b, generator=generator, device=images.device)
            eps = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
            velocity = self.decoder_velocity
            if self.posttrain_objective.checkpoints_decoder and torch.is_grad_enabled():
                # recompute this decoder call in backward too: the chain's calls are checkpointed,
                # and holding this one's activations would set the step's memory peak
                def velocity(x_t: Tensor, t_: Tensor, c: Tensor) -> Tensor:
                    return torch.utils.checkpoint.checkpoint(self.decoder_velocity, x_t, t_, c, use_reentrant=False)
            flow = self.flow_loss(velocity, images, cond, t, eps, dropout=cfg_dropout,
                                  generator=generator)
            _merge_terms(terms, {k: flow_weight * v for k, v in flow.items()}, "the flow loss")
        _merge_terms(terms, {f"quantizer/{k}": v for k, v in q.losses.items()}, "the quantizer")
        objective = self.posttrain_objective
        kw: dict[str, Any] = {}
        if objective.needs_teacher:
            if self._teacher is None:
                raise ValueError(f"the post-training objective {spec.name!r} compares the decoder with a frozen "
                                 "teacher: call model.set_teacher() first (the trainer does, from train.init_from)")
            kw["teacher"] = self.teacher_velocity
        extra = objective(self.decoder_velocity, images, cond, noise=noise, u=u, generator=generator, **kw)
        _merge_terms(terms, extra, f"the post-training objective {spec.name!r}")
        total = torch.stack([v.float() for v in terms.values()]).sum()
        if not self.training and not bool(torch.isfinite(total)):
            raise ValueError(
                f"the Stage 1B loss is not finite: noise or the images are too large for {self.dtype}, "
                "or the weights are not finite"
            )
        return LossOutput(total, terms)

    def forward(self, images: Tensor, *, objective: str = "flow", **kw: Any) -> LossOutput:
        """The training loss (so that DistributedDataParallel sees the computation):
        ``objective="flow"`` is :meth:`loss`, ``"posttrain"`` is :meth:`posttrain_loss`."""
        if objective == "flow":
            return self.loss(images, **kw)
        if objective == "posttrain":
            return self.posttrain_loss(images, **kw)
        raise ValueError(f"objective must be 'flow' or 'posttrain', got {objective!r}")
