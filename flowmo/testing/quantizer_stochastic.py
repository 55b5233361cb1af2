"""The parts of :func:`~flowmo.testing.check_quantizer` for bottlenecks that are not a deterministic
codebook: :func:`check_continuous` (``discrete`` False: no codebook, no indices) and
:func:`check_stochastic` (``stochastic`` True: training-mode values sampled from draws the
quantizer makes with a ``torch.Generator``, checked against its declared moments)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from .checker import _Checker, _mismatch, _seeded
from .quantizer_probe import _QuantizerProbe

__all__ = ["check_continuous", "check_stochastic", "MOMENT_DRAWS", "MOMENT_SIGMAS"]

MOMENT_DRAWS = 2000
"""Draws per example of the ``moments`` property: each value's sample mean and variance over
this many training-mode calls (one batched call of the input repeated this many times)."""

MOMENT_SIGMAS = 6.0
"""The ``moments`` property's tolerance in standard errors of the sample mean (sigma / sqrt(n))
and of the sample variance (sigma^2 sqrt(2 / (n - 1)), exact for Gaussian draws)."""


def check_continuous(ck: _Checker, probe: _QuantizerProbe, inputs: Any, large: list[Tensor]) -> None:
    """Property ``continuous`` (a quantizer with ``discrete`` False): its codebook methods,
    ``codes_to_indices``, ``indices_to_codes`` and ``check_indices``, raise ValueError (it has
    no codebook; a silent answer would pass for tokens), in either mode. Its outputs' indices
    are None and its ``codebook_size`` / ``bits_per_token`` None: checked with every output and
    by the ``attributes`` property."""
    q = probe.q

    def body(z: Tensor) -> None:
        q.eval()
        values = probe.quantize(z).values.detach()
        calls: list[tuple[str, Callable[[], Any]]] = [
            ("codes_to_indices", lambda: q.codes_to_indices(values)),
            ("indices_to_codes", lambda: q.indices_to_codes(torch.zeros(values.shape[:-1], dtype=torch.int64,
                                                                        device=values.device))),
            ("check_indices", lambda: q.check_indices(torch.zeros(values.shape[:-1], dtype=torch.int64))),
        ]
        for name, call in calls:
            try:
                got = call()
            except ValueError:
                continue
            raise AssertionError(f"a continuous quantizer's {name} must raise ValueError (it has no codebook, so no "
                                 f"indices), got {type(got).__name__}")

    ck.run("continuous", inputs, body, max_examples=1, examples=large)


def check_stochastic(ck: _Checker, probe: _QuantizerProbe, inputs: Any, large: list[Tensor], few: int) -> None:
    """The properties of a stochastic quantizer (``stochastic`` True; nothing for another):

    - ``noise``: ``draw_noise(B, T, generator=g)`` gives float32 (B, T, C) finite draws on the
      quantizer's device, the same for the same seed whatever the module's mode (the model
      draws before it knows the mode's use), other draws for another seed; in training mode
      ``forward(z, noise=...)`` uses them (another draw gives other values, for a continuous
      quantizer: a discrete one's sample may land on the same codes) and gives the same
      values for the same draws; in eval mode it ignores them (the values of ``forward(z)``).
    - ``moments`` (when the quantizer declares ``moments(z)``): over :data:`MOMENT_DRAWS`
      training-mode calls with draws from a seeded generator, each value's sample mean and
      variance lie within :data:`MOMENT_SIGMAS` standard errors of the declared mean and
      variance, and eval mode's values are the declared mean (to the values' dtype).
    """
    if not probe.stochastic:
        return
    q, C, E, device = probe.q, probe.C, probe.E, probe.device

    def p_noise(z: Tensor) -> None:
        b, t = z.shape[:2]
        q.eval()
        n1 = q.draw_noise(b, t, generator=_seeded(1), device=device)
        q.train()
        again = q.draw_noise(b, t, generator=_seeded(1), device=device)
        other = q.draw_noise(b, t, generator=_seeded(2), device=device)
        for what, n in (("draw_noise", n1), ("draw_noise (train mode)", again), ("draw_noise (another seed)", other)):
            if not isinstance(n, Tensor) or n.dtype != torch.float32 or tuple(n.shape) != (b, t, C):
                raise AssertionError(f"{what} must return a float32 ({b}, {t}, {C}) tensor for a stochastic quantizer, "
                                     f"got {getattr(n, 'dtype', type(n).__name__)} {tuple(getattr(n, 'shape', ()))}")
            if n.device != device or not bool(torch.isfinite(n).all()):
                raise AssertionError(f"{what} must give finite draws on {device}, got them on {n.device}")
        if not torch.equal(n1, again):
            raise AssertionError(f"draw_noise depends on the module's mode: {_mismatch(n1, again)} (the model draws "
                                 "the noise in either mode, so the draws after it stay the same)")
        if n1.numel() == 0:
            return
        if torch.equal(n1, other):
            raise AssertionError("draw_noise gives the same draws for two generator seeds: it must draw from generator")
        def fwd(noise: Tensor, what: str) -> Any:  # from the baseline state, its changes checked
            return probe.call(lambda x: q(x, noise=noise), z, what=what, forward=True)

        a, a2, c = fwd(n1, "forward(z, noise)"), fwd(n1.clone(), "forward(z, noise)"), fwd(other, "forward(z, noise)")
        if not torch.equal(a.values, a2.values):
            raise AssertionError(f"non-deterministic: training-mode forward with the same noise gave different values: "
                                 f"{_mismatch(a.values, a2.values)}")
        if not probe.discrete and torch.equal(a.values, c.values):  # a discrete sample may land on the same code
            raise AssertionError("training-mode forward gives the same values for two different noise draws: it does "
                                 "not sample (a stochastic quantizer samples in training mode)")
        q.eval()
        with_noise, without = fwd(n1, "forward(z, noise)"), probe.call(q, z, what="forward(z)", forward=True)
        if not torch.equal(with_noise.values, without.values):
            raise AssertionError(f"eval-mode forward uses the noise it is given: {_mismatch(with_noise.values, without.values)}"
                                 " (eval mode is deterministic: ignore noise there)")

    def p_moments(seed: int) -> None:
        z = torch.randn(2, 3, E, generator=_seeded(seed)).to(device)
        declared = q.moments(z)
        mean, var = (v.detach().double().cpu() for v in declared)
        for what, v in (("mean", mean), ("variance", var)):
            if tuple(v.shape) != (2, 3, C) or not bool(torch.isfinite(v).all()):
                raise AssertionError(f"moments' {what} must be finite, of shape {(2, 3, C)}, got {tuple(v.shape)}")
        n = MOMENT_DRAWS
        reps = z.repeat(n, 1, 1)  # sample i of repeat r is row r * 2 + i: each value n times, independently
        q.train()
        noise = q.draw_noise(2 * n, 3, generator=_seeded(seed + 1), device=device)
        with torch.no_grad():
            values = probe.call(lambda x: q(x, noise=noise), reps, what="forward(z, noise)", forward=True).values
        draws = values.double().cpu().reshape(n, 2, 3, C)
        got_mean, got_var = draws.mean(0), draws.var(0)
        mean_tol = MOMENT_SIGMAS * (var / n).sqrt() + 1e-6 * (1 + mean.abs())
        var_tol = MOMENT_SIGMAS * var * math.sqrt(2 / (n - 1)) + 1e-9
        if bool(((got_mean - mean).abs() > mean_tol).any()):
            raise AssertionError(f"the training-mode values' sample mean over {n} draws is not the declared mean "
                                 f"(within {MOMENT_SIGMAS:g} standard errors): {_mismatch(got_mean, mean)}")
        if bool(((got_var - var).abs() > var_tol).any()):
            raise AssertionError(f"the training-mode values' sample variance over {n} draws is not the declared "
                                 f"variance (within {MOMENT_SIGMAS:g} standard errors): {_mismatch(got_var, var)}")
        q.eval()
        with torch.no_grad():
            ev = probe.call(q, z, what="forward(z)", forward=True).values
        if not torch.equal(ev, mean.to(ev.dtype).to(ev.device)):
            raise AssertionError(f"eval-mode values are not the declared mean: {_mismatch(ev, mean.to(ev.dtype))}")

    ck.run("noise", inputs, p_noise, max_examples=few, examples=large)
    q.eval()
    if q.moments(torch.zeros(1, 1, E, device=device)) is not None:
        ck.run("moments", ck.st.integers(0, 2**31 - 1), p_moments, max_examples=min(few, 4))
