"""The check for the time-sampler kind: :func:`check_time_sampler`."""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from .checker import _Checker, _mismatch, _seeded


_TIME_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def check_time_sampler(sampler: Any, *, max_examples: int = 25, large_n: int = 100_000) -> dict[str, int]:
    """Check a training-time sampler: ``sampler.sample(n, generator=, dtype=)`` (or
    ``sampler(n, generator=, dtype=)``) -> (n,) times in [0, 1].

    Properties: ``draws`` (shape (n,), dtype honoured for float32/64/16 and bfloat16, finite,
    in [0, 1], n = 0 included); ``empty`` (n = 0); ``reproducible`` (the same seeded
    torch.Generator gives the same draws, whatever the global RNG state); ``seeds_differ``
    (two seeds give different draws of 64); ``generator_advances`` (two successive draws from
    one generator differ); ``mean`` (the mean of ``large_n`` draws is finite, in [0, 1]).
    Returns ``{property: examples run}``.
    """
    from ..losses.time_samplers import TimeSampler

    ck = _Checker("check_time_sampler", max_examples)
    st = ck.st
    if isinstance(sampler, TimeSampler):
        draw_fn = sampler.sample
        shift = sampler.shift
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not (math.isfinite(shift) and shift > 0):
            ck.fail("attributes", f"shift must be a finite number > 0, got {shift!r}")
    elif callable(sampler):
        draw_fn = sampler
    else:
        raise TypeError(f"sampler must be a flowmo.losses.TimeSampler or a callable (n, generator=, dtype=) -> "
                        f"times, got {type(sampler).__name__}")

    def draw(n: int, seed: Optional[int], dtype: torch.dtype = torch.float32) -> Tensor:
        g = _seeded(seed) if seed is not None else None
        t = draw_fn(n, generator=g, dtype=dtype)
        if not isinstance(t, Tensor):
            raise AssertionError(f"sample returned {type(t).__name__}, not a tensor")
        return t

    def p_draws(ex) -> None:
        n, seed, dtype = ex
        t = draw(n, seed, dtype)
        if tuple(t.shape) != (n,):
            raise AssertionError(f"shape {tuple(t.shape)} for n={n}, expected ({n},)")
        if t.dtype != dtype:
            raise AssertionError(f"dtype {t.dtype}, asked for {dtype}")
        if not torch.isfinite(t).all():
            raise AssertionError("draws are not all finite")
        if n and (float(t.min()) < 0 or float(t.max()) > 1):
            raise AssertionError(f"draws in [{float(t.min())!r}, {float(t.max())!r}], outside [0, 1]")

    def p_empty() -> None:
        for dtype in (torch.float32, torch.float64):
            t = draw(0, 0, dtype)
            if tuple(t.shape) != (0,) or t.dtype != dtype:
                raise AssertionError(f"n=0 gave shape {tuple(t.shape)}, dtype {t.dtype}")

    def p_reproducible(ex) -> None:
        n, seed = ex
        torch.manual_seed(seed ^ 0x5EED)
        a = draw(n, seed)
        torch.manual_seed(seed ^ 0xBEEF)
        torch.rand(7)
        b = draw(n, seed)
        if not torch.equal(a, b):
            raise AssertionError(f"non-deterministic: the same seed gave different draws (the generator must be "
                                 f"the only source of randomness): {_mismatch(a, b)}")

    def p_seeds_differ(ex) -> None:
        s1, s2 = ex
        a, b = draw(64, s1), draw(64, s2)
        if torch.equal(a, b):
            raise AssertionError(f"seeds {s1} and {s2} gave identical draws of 64")

    def p_generator_advances(seed: int) -> None:
        g = _seeded(seed)
        a = draw_fn(64, generator=g, dtype=torch.float32)
        b = draw_fn(64, generator=g, dtype=torch.float32)
        if torch.equal(a, b):
            raise AssertionError("two successive draws from one generator are identical")

    def p_mean(seed: int) -> None:
        t = draw(large_n, seed, torch.float64)
        m = float(t.mean())
        if not math.isfinite(m) or not 0 <= m <= 1:
            raise AssertionError(f"mean of {large_n} draws is {m!r}; expected a finite number in [0, 1]")

    seeds = st.integers(0, 2**63 - 1)
    ck.run("draws", st.tuples(st.integers(0, 3000), seeds, st.sampled_from(_TIME_DTYPES)), p_draws)
    ck.once("empty", p_empty)
    ck.run("reproducible", st.tuples(st.integers(1, 500), st.integers(0, 2**31 - 1)), p_reproducible)
    ck.run("seeds_differ", st.tuples(seeds, seeds).filter(lambda s: s[0] != s[1]), p_seeds_differ)
    ck.run("generator_advances", seeds, p_generator_advances, max_examples=min(max_examples, 10))
    ck.run("mean", seeds, p_mean, max_examples=min(max_examples, 3))
    return ck.report
