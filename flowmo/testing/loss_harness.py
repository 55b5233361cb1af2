"""What the checks of the loss kinds (flow losses, post-training objectives, declared loss terms)
run against: a small learnable stand-in decoder, its inputs, and checks of the returned terms
and of the gradients they give the decoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checker import _same, _seeded, _shape


def _check_terms(terms: Any, what: str) -> dict[str, Tensor]:
    """A non-empty dict of named, finite, scalar floating tensors."""
    if not isinstance(terms, dict) or not terms:
        raise AssertionError(f"{what} must return a non-empty dict of named scalar tensors, got {terms!r:.100}")
    for k, v in terms.items():
        if not isinstance(k, str) or not k:
            raise AssertionError(f"{what}: term names must be non-empty strings, got {k!r}")
        if not isinstance(v, Tensor) or v.ndim != 0 or not v.is_floating_point():
            raise AssertionError(f"{what}: term {k!r} must be a scalar floating tensor, got "
                                 f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
        if not bool(torch.isfinite(v)):
            raise AssertionError(f"{what}: term {k!r} is {float(v)!r}")
    return terms


def _same_terms(a: dict[str, Tensor], b: dict[str, Tensor], what: str) -> None:
    if set(a) != set(b) or any(not _same(a[k], b[k]) for k in a):
        shown = {k: float(v.detach()) for k, v in a.items()}, {k: float(v.detach()) for k, v in b.items()}
        raise AssertionError(f"non-deterministic: {what} gave different terms: {shown[0]} vs {shown[1]}")


class _ToyDecoder(torch.nn.Module):
    """A decoder stand-in for the loss checks: v = a * x_t + b * (2 t - 1) + c * mean(cond), with
    learnable a, b, c; it checks every call's arguments and counts the calls."""

    def __init__(self, x_shape: tuple[int, ...], cond_shape: tuple[int, ...], kind: str, *,
                 any_batch: bool = False, abc: tuple[float, float, float] = (0.3, -0.2, 0.5)):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(abc[0]))
        self.b = torch.nn.Parameter(torch.tensor(abc[1]))
        self.c = torch.nn.Parameter(torch.tensor(abc[2]))
        self.x_shape, self.cond_shape, self.kind, self.calls = tuple(x_shape), tuple(cond_shape), kind, 0
        self.any_batch = any_batch  # a teacher may be called on part of the batch, or twice it (guidance)

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.calls += 1
        b = x_t.shape[0] if self.any_batch and isinstance(x_t, Tensor) and x_t.ndim else self.x_shape[0]
        xs, cs = (b,) + self.x_shape[1:], (b,) + self.cond_shape[1:]
        if not isinstance(x_t, Tensor) or tuple(x_t.shape) != xs or not x_t.is_floating_point():
            raise AssertionError(f"the {self.kind} called velocity with x_t of shape "
                                 f"{_shape(x_t)}; expected {xs}, floating")
        if not isinstance(t, Tensor) or tuple(t.shape) != (b,) or not t.is_floating_point():
            raise AssertionError(f"the {self.kind} called velocity with t of shape "
                                 f"{_shape(t)}; expected ({b},), floating")
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise AssertionError(f"the {self.kind} called velocity with t outside [0, 1]: {t.tolist()}")
        if not isinstance(cond, Tensor) or tuple(cond.shape) != cs:
            raise AssertionError(f"the {self.kind} called velocity with cond of shape "
                                 f"{_shape(cond)}; expected {cs}")
        view = (-1,) + (1,) * (x_t.ndim - 1)
        m = cond.float().flatten(1).mean(1).view(view)
        return (self.a * x_t.float() + self.b * (2 * t.float().view(view) - 1) + self.c * m).to(x_t.dtype)


def _loss_inputs(seed: int, batch: int, image_size: int, code_shape: tuple[int, int]):
    g = _seeded(seed)
    x = torch.rand(batch, 3, image_size, image_size, generator=g) * 2 - 1
    cond = torch.cat((torch.randn(batch, *code_shape, generator=g).sign(), torch.ones(batch, code_shape[0], 1)), -1)
    return x, cond


def _backward(terms: dict[str, Tensor], what: str) -> None:
    total = torch.stack([v.float() for v in terms.values()]).sum()
    if not total.requires_grad:
        raise AssertionError(f"{what}: no gradient reached the velocity (the terms are detached from it)")
    total.backward()


def _check_velocity_grads(decoder: _ToyDecoder, what: str) -> None:
    grads = [p.grad for p in decoder.parameters()]
    if all(g is None for g in grads):
        raise AssertionError(f"{what}: no gradient reached the velocity (the decoder would not train)")
    if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
        raise AssertionError(f"{what}: the velocity's gradient is not finite")
    if all(g is None or not bool(g.any()) for g in grads):
        raise AssertionError(f"{what}: the velocity's gradient is all zero")
