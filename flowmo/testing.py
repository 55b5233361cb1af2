"""A conformance kit for people writing their own components.

Each ``check_*`` function runs property-based tests (with `hypothesis`_) against one
component and raises ``AssertionError`` naming the first property that failed; on success
it returns a small report, ``{property name: examples run}``. Use them in your own test
suite::

    from flowmo.testing import check_quantizer, check_solver, check_time_sampler

    def test_my_quantizer():
        check_quantizer(lambda: MyVQ(MyVQSpec(), channels=16), channels=16)

    def test_my_solver():
        check_solver(MyRK4(), order=2)   # order: the highest order the kit should hold it to

    def test_my_time_sampler():
        check_time_sampler(MyTimeSampler(MyTimeSpec()))

The checks run deterministically (``derandomize=True``) on the CPU (a quantizer is fed
on the device of its parameters/buffers). hypothesis is imported only when a check runs;
install it with ``pip install hypothesis``.

.. _hypothesis: https://hypothesis.readthedocs.io
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

__all__ = ["check_quantizer", "check_time_sampler", "check_solver"]


# ----------------------------------------------------------------------------- machinery
def _hypothesis():
    try:
        import hypothesis
        from hypothesis import strategies as st
    except ImportError as e:  # pragma: no cover - exercised only without hypothesis
        raise ImportError(
            "flowmo.testing needs the 'hypothesis' package for its property-based checks: "
            "pip install hypothesis  (or: pip install 'flowmo[test]')"
        ) from e
    return hypothesis, st


class _Checker:
    """Runs named properties under hypothesis and turns every failure into an AssertionError."""

    def __init__(self, kind: str, max_examples: int):
        if not isinstance(max_examples, int) or max_examples < 1:
            raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
        self.hyp, self.st = _hypothesis()
        self.kind = kind
        self.max_examples = max_examples
        self.report: dict[str, int] = {}

    def message(self, name: str, detail: str) -> str:
        return f"{self.kind}: property {name!r} failed: {detail}"

    def fail(self, name: str, detail: str) -> None:
        raise AssertionError(self.message(name, detail))

    def run(self, name: str, strategy: Any, body: Callable[[Any], None],
            max_examples: Optional[int] = None) -> None:
        """Run ``body(example)`` on examples drawn from ``strategy``."""
        hyp = self.hyp
        self.report[name] = 0
        prefix = self.message(name, "")

        def prop(example):
            self.report[name] += 1
            try:
                body(example)
            except AssertionError as e:
                if str(e).startswith(prefix):
                    raise
                raise AssertionError(self.message(name, str(e) or type(e).__name__)) from e
            except Exception as e:  # an error inside the component is a failure of this property
                raise AssertionError(self.message(name, f"raised {type(e).__name__}: {e}")) from e

        prop.__name__ = prop.__qualname__ = f"{self.kind}_{name}"
        settings = hyp.settings(
            max_examples=max_examples or self.max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            report_multiple_bugs=False,
            suppress_health_check=list(hyp.HealthCheck),
            print_blob=False,
            # no shrinking: the inputs come from seeds, and shrinking a broken component's
            # failure can take far longer than finding it
            phases=(hyp.Phase.explicit, hyp.Phase.generate),
        )
        test = settings(hyp.given(strategy)(prop))
        try:
            test()
        except AssertionError:
            raise
        except Exception as e:  # hypothesis' own errors (Flaky: a failure that did not repeat, ...)
            raise AssertionError(self.message(name, f"{type(e).__name__}: {e}")) from e

    def once(self, name: str, body: Callable[[], None]) -> None:
        """A property checked on one fixed case."""
        self.run(name, self.st.just(None), lambda _: body(), max_examples=1)


def _mismatch(a: Tensor, b: Tensor) -> str:
    """Describe the first position where a and b differ."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a != b) if not a.is_floating_point() else ~torch.isclose(a.double(), b.double(), rtol=0, atol=0,
                                                                      equal_nan=True)
    idx = diff.nonzero()
    if not len(idx):
        return "no mismatch"
    pos = tuple(int(i) for i in idx[0])
    return f"{int(diff.sum())} of {diff.numel()} entries differ, first at {pos}: {a[pos].item()!r} vs {b[pos].item()!r}"


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- quantizers
def check_quantizer(make: Union[Any, Callable[[], Any]], channels: int, *, max_examples: int = 25,
                    forward_idempotent: bool = True) -> dict[str, int]:
    """Check a :class:`flowmo.quantizers.Quantizer` (an instance, or a zero-argument factory).

    Properties (each run on ``max_examples`` drawn examples; inputs (B, T, channels) of
    several magnitudes, with exact zeros and codewords among them):

    - ``output``: ``forward`` returns a QuantizerOutput; values (B, T, C) with the input's
      dtype, finite; indices (B, T) int64 in [0, codebook_size).
    - ``indices_roundtrip``: codes_to_indices(indices_to_codes(i)) == i exactly, for indices
      drawn over the whole range (codebook sizes up to 2**62).
    - ``codes_roundtrip``: codes_to_indices(values) == indices and
      indices_to_codes(indices) == values exactly (the values are codewords).
    - ``idempotent``: quantizing the values again gives the same values and indices. The
      values are always re-quantized through the codebook (codes_to_indices then
      indices_to_codes); with ``forward_idempotent`` (the default) also through ``forward``.
      Pass ``forward_idempotent=False`` for quantizers whose forward bounds its input by a map
      that is not the identity on the codewords (FSQ's tanh bound), so that forward(values)
      may land on another codeword.
    - ``gradients``: straight-through: values.sum().backward() gives finite, not all-zero
      gradients on the input, of the input's shape.
    - ``losses``: in train() and eval() mode, ``losses`` (and ``stats``) are dicts of named,
      finite, scalar tensors (eval may give none) and ``loss`` is a finite scalar.
    - ``deterministic``: the same input gives the same values, indices and losses.
    - ``bfloat16``: a bfloat16 input gives bfloat16 values and the indices of the float32
      version of the same (bfloat16-representable) input; its values are those codewords
      to bfloat16 precision.

    Returns ``{property: examples run}``. Restores the module's train/eval mode.
    """
    from .quantizers.base import Quantizer, QuantizerOutput

    ck = _Checker("check_quantizer", max_examples)
    st = ck.st
    if isinstance(make, torch.nn.Module):
        q = make
    elif callable(make):
        q = make()
    else:
        raise TypeError(f"make must be a Quantizer or a zero-argument factory returning one, got {type(make).__name__}")
    if not isinstance(q, Quantizer):
        raise AssertionError(f"check_quantizer: expected a flowmo.quantizers.Quantizer, got {type(q).__name__}")
    if not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    if getattr(q, "channels", channels) != channels:
        ck.fail("attributes", f"quantizer.channels is {q.channels} but channels={channels} was given")
    cs = getattr(q, "codebook_size", None)
    if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
        ck.fail("attributes", f"codebook_size must be a positive python int, got {cs!r}")
    if cs > 2**63:
        ck.fail("attributes", f"codebook_size {cs} does not fit in int64 indices")
    device = next((t.device for t in list(q.parameters()) + list(q.buffers())), torch.device("cpu"))
    was_training = q.training
    C = channels

    def quantize(z: Tensor, what: str = "forward") -> QuantizerOutput:
        out = q(z)
        if not isinstance(out, QuantizerOutput):
            raise AssertionError(f"{what} returned {type(out).__name__}, not a QuantizerOutput")
        return out

    def codewords(idx: Tensor) -> Tensor:
        codes = q.indices_to_codes(idx)
        if not isinstance(codes, Tensor) or not codes.is_floating_point():
            raise AssertionError(f"indices_to_codes must return a floating-point tensor, got {codes!r:.80}")
        if tuple(codes.shape) != tuple(idx.shape) + (C,):
            raise AssertionError(f"indices_to_codes: shape {tuple(codes.shape)} for indices of shape "
                                 f"{tuple(idx.shape)}; expected {tuple(idx.shape) + (C,)}")
        return codes

    def to_indices(codes: Tensor) -> Tensor:
        idx = q.codes_to_indices(codes)
        if not isinstance(idx, Tensor) or idx.dtype != torch.int64:
            raise AssertionError(f"codes_to_indices must return an int64 tensor, got "
                                 f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if tuple(idx.shape) != tuple(codes.shape[:-1]):
            raise AssertionError(f"codes_to_indices: shape {tuple(idx.shape)} for codes of shape "
                                 f"{tuple(codes.shape)}; expected {tuple(codes.shape[:-1])}")
        return idx

    # --- strategies
    index_lists = st.integers(1, 3).flatmap(
        lambda b: st.integers(1, 4).flatmap(
            lambda t: st.tuples(st.just((b, t)), st.lists(st.integers(0, cs - 1), min_size=b * t, max_size=b * t))))

    @st.composite
    def inputs(draw, scales=(1e-3, 0.1, 1.0, 3.0, 30.0, 1e3), specials=("none", "zeros", "codewords")):
        b, t = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        g = _seeded(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from(scales))
        z = torch.randn(b, t, C, generator=g, dtype=torch.float64) * scale
        special = draw(st.sampled_from(specials))
        if special == "zeros":  # exact +0 and -0 entries among the others
            mask = torch.rand(b, t, C, generator=g) < 0.5
            sign = torch.rand(b, t, C, generator=g) < 0.5
            z = torch.where(mask, torch.where(sign, 0.0, -0.0).to(z.dtype), z)
        elif special == "codewords":  # inputs that are codewords already
            idx = torch.randint(0, min(cs, 2**62), (b, t), generator=g)
            z = codewords(idx.to(device)).double().cpu()
        return z.float().to(device)

    def check_output(out: QuantizerOutput, z: Tensor) -> None:
        b, t = z.shape[:2]
        v, i = out.values, out.indices
        if not isinstance(v, Tensor) or tuple(v.shape) != (b, t, C):
            raise AssertionError(f"values shape {tuple(getattr(v, 'shape', ()))}, expected {(b, t, C)}")
        if v.dtype != z.dtype:
            raise AssertionError(f"values dtype {v.dtype} differs from the input's {z.dtype}")
        if not torch.isfinite(v).all():
            raise AssertionError("values are not all finite")
        if not isinstance(i, Tensor) or tuple(i.shape) != (b, t):
            raise AssertionError(f"indices shape {tuple(getattr(i, 'shape', ()))}, expected {(b, t)}")
        if i.dtype != torch.int64:
            raise AssertionError(f"indices dtype {i.dtype}, expected torch.int64")
        if int(i.min()) < 0 or int(i.max()) >= cs:
            raise AssertionError(f"indices in [{int(i.min())}, {int(i.max())}], outside [0, {cs})")

    def check_terms(terms: Any, what: str) -> None:
        if not isinstance(terms, dict):
            raise AssertionError(f"{what} must be a dict, got {type(terms).__name__}")
        for k, v in terms.items():
            if not isinstance(k, str) or not k:
                raise AssertionError(f"{what} keys must be non-empty strings, got {k!r}")
            if not isinstance(v, Tensor) or v.ndim != 0:
                raise AssertionError(f"{what}[{k!r}] must be a scalar tensor, got {getattr(v, 'shape', type(v))}")
            if not v.is_floating_point() or not torch.isfinite(v):
                raise AssertionError(f"{what}[{k!r}] must be a finite float, got {v!r}")

    # --- properties
    def p_output(z: Tensor) -> None:
        q.eval()
        check_output(quantize(z), z)

    def p_indices_roundtrip(ex) -> None:
        shape, flat = ex
        idx = torch.tensor(flat, dtype=torch.int64, device=device).reshape(shape)
        back = to_indices(codewords(idx))
        if not torch.equal(back, idx):
            raise AssertionError(f"codes_to_indices(indices_to_codes(i)) != i: {_mismatch(back, idx)}")

    def p_codes_roundtrip(z: Tensor) -> None:
        q.eval()
        out = quantize(z)
        v = out.values.detach()
        idx = to_indices(v)
        if not torch.equal(idx, out.indices):
            raise AssertionError(f"codes_to_indices(values) != indices: {_mismatch(idx, out.indices)}")
        codes = codewords(out.indices)
        if not torch.equal(codes.float(), v.float()):
            raise AssertionError(f"indices_to_codes(indices) != values: {_mismatch(codes.float(), v.float())}")

    def p_idempotent(z: Tensor) -> None:
        q.eval()
        out = quantize(z)
        v = out.values.detach()
        again = codewords(to_indices(v))
        if not torch.equal(again.to(v.dtype), v):
            raise AssertionError(f"re-quantizing values through the codebook moved them: {_mismatch(again, v)}")
        if forward_idempotent:
            out2 = quantize(v.clone(), "forward(values)")
            if not torch.equal(out2.indices, out.indices):
                raise AssertionError(f"forward(values) gives other indices: {_mismatch(out2.indices, out.indices)}"
                                     " (pass forward_idempotent=False if forward is not a projection)")
            if not torch.equal(out2.values.detach(), v):
                raise AssertionError(f"forward(values) gives other values: {_mismatch(out2.values, v)}"
                                     " (pass forward_idempotent=False if forward is not a projection)")

    def p_gradients(z: Tensor) -> None:
        q.eval()
        z = z.clone().requires_grad_(True)
        out = quantize(z)
        if not out.values.requires_grad:
            raise AssertionError("values do not require grad: no straight-through gradient")
        out.values.sum().backward()
        g = z.grad
        if g is None:
            raise AssertionError("no gradient reached the input")
        if g.shape != z.shape:
            raise AssertionError(f"gradient shape {tuple(g.shape)} differs from the input's {tuple(z.shape)}")
        if not torch.isfinite(g).all():
            raise AssertionError("gradient is not finite")
        if not (g != 0).any():
            raise AssertionError("gradient is all zero: values must pass gradients straight through")

    def p_losses(z: Tensor) -> None:
        for mode in ("train", "eval"):
            q.train(mode == "train")
            out = quantize(z)
            check_output(out, z)
            check_terms(out.losses, f"{mode}-mode losses")
            check_terms(out.stats, f"{mode}-mode stats")
            total = out.loss
            if not isinstance(total, Tensor) or total.ndim != 0 or not torch.isfinite(total):
                raise AssertionError(f"{mode}-mode loss must be a finite scalar, got {total!r}")

    def p_deterministic(z: Tensor) -> None:
        for mode in ("eval", "train"):
            q.train(mode == "train")
            a, b = quantize(z.clone()), quantize(z.clone())
            if not torch.equal(a.indices, b.indices):
                raise AssertionError(f"{mode} mode: indices differ between two calls: {_mismatch(a.indices, b.indices)}")
            if not torch.equal(a.values, b.values):
                raise AssertionError(f"{mode} mode: values differ between two calls: {_mismatch(a.values, b.values)}")
            if set(a.losses) != set(b.losses) or any(not torch.equal(a.losses[k], b.losses[k]) for k in a.losses):
                raise AssertionError(f"{mode} mode: losses differ between two calls: {a.losses} vs {b.losses}")

    def p_bfloat16(z: Tensor) -> None:
        q.eval()
        zb = z.to(torch.bfloat16)
        ob, of = quantize(zb), quantize(zb.float())
        check_output(ob, zb)
        if not torch.equal(ob.indices, of.indices):
            raise AssertionError("bfloat16 input gives other indices than the same values in float32: "
                                 f"{_mismatch(ob.indices, of.indices)}")
        codes = codewords(ob.indices).float()
        vb = ob.values.detach().float()
        if not torch.allclose(vb, codes, rtol=2**-7, atol=1e-6):
            raise AssertionError(f"bfloat16 values are not the codewords of their indices: {_mismatch(vb, codes)}")

    try:
        ck.run("output", inputs(), p_output)
        ck.run("indices_roundtrip", index_lists, p_indices_roundtrip)
        ck.run("codes_roundtrip", inputs(), p_codes_roundtrip)
        ck.run("idempotent", inputs(), p_idempotent)
        ck.run("gradients", inputs(scales=(0.1, 0.5, 1.0), specials=("none",)), p_gradients)
        ck.run("losses", inputs(), p_losses)
        ck.run("deterministic", inputs(), p_deterministic)
        ck.run("bfloat16", inputs(), p_bfloat16)
    finally:
        q.train(was_training)
    return ck.report


# ----------------------------------------------------------------------------- time samplers
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
    ck = _Checker("check_time_sampler", max_examples)
    st = ck.st
    draw_fn = getattr(sampler, "sample", sampler)
    if not callable(draw_fn):
        raise TypeError(f"sampler must have a .sample method or be callable, got {type(sampler).__name__}")

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
            raise AssertionError(f"the same seed gave different draws (the generator must be the only "
                                 f"source of randomness): {_mismatch(a, b)}")

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


# ----------------------------------------------------------------------------- solvers
def _grid(kind: str, steps: int, param: float, cuts: list[float]) -> Tensor:
    """A float64 time grid from exactly 1 down to exactly 0 (built here, independently of flowmo.samplers)."""
    k = torch.arange(steps, -1, -1, dtype=torch.float64)
    u = k / steps
    if kind == "linear":
        t = u
    elif kind == "pow":
        t = u ** (1.0 / param)
    elif kind == "shifted":
        t = param * u / (param * u + (1 - u))
    else:  # "random": strictly decreasing interior points
        inner = sorted(set(cuts), reverse=True)
        t = torch.tensor([1.0] + inner + [0.0], dtype=torch.float64)
    t[0], t[-1] = 1.0, 0.0
    return t


def check_solver(solver: Any, *, order: int = 1, max_examples: int = 25) -> dict[str, int]:
    """Check an ODE solver: ``solver.solve(velocity, z, times, callback)`` integrating
    dz/dt = velocity(z, t) (t a python float) along ``times`` (1 -> 0), calling
    ``callback(i, z)`` after step i.

    Properties, on float64 tensors of any shape (0-d and empty included):

    - ``constant``: exact (to ~1e-9) for a constant velocity, on linear, pow, shifted and random
      monotone grids; the output keeps the shape and dtype, the input is not modified and the
      callback runs once per step, i = 0 .. steps - 1.
    - ``linear_in_t`` (``order >= 2``): exact to 1e-5 for v = a + b t on the same grids.
    - ``convergence``: on dz/dt = lam z the error at t = 0 decreases as the steps double
      (8, 16, 32, 64 on the linear grid) and the observed order is at least ``order - 0.5``.
    - ``float32_state``: a float32 state with a float32 (constant) velocity, as
      :func:`flowmo.samplers.sample` hands every solver for a bfloat16 / float16 model: the
      output is float32 and within float32 accumulation error (4 (steps + 1) eps32 (1 + |z| +
      |a|)) of the exact z - a, i.e. the solver does not round the state or its steps to a
      lower precision (a bfloat16 state would be ~2**-9 |z| off).

    Returns ``{property: examples run}``.
    """
    if not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    ck = _Checker("check_solver", max_examples)
    st = ck.st
    if not hasattr(solver, "solve") and callable(solver):
        solver = solver()
    if not callable(getattr(solver, "solve", None)):
        raise TypeError(f"solver must have a .solve(velocity, z, times, callback) method, got {type(solver).__name__}")

    def as_float(t: Any) -> float:
        if isinstance(t, Tensor):
            if t.numel() != 1:
                raise AssertionError(f"velocity called with a time of shape {tuple(t.shape)}; expected a scalar")
            return float(t)
        return float(t)

    grids = st.tuples(
        st.sampled_from(("linear", "pow", "shifted", "random")),
        st.integers(1, 40),
        st.floats(0.1, 10.0),
        st.lists(st.floats(1e-3, 1 - 1e-3), min_size=0, max_size=30),
    ).map(lambda g: _grid(*g))
    shapes = st.lists(st.integers(0, 3), max_size=4).map(tuple)
    fields = st.tuples(shapes, grids, st.integers(0, 2**32 - 1))

    def solve(velocity: Callable[[Tensor, float], Tensor], z: Tensor, times: Tensor) -> Tensor:
        calls: list[int] = []
        z_in = z.clone()
        out = solver.solve(velocity, z, times, lambda i, zi: calls.append(int(i)))
        if not isinstance(out, Tensor) or out.shape != z.shape or out.dtype != z.dtype:
            raise AssertionError(f"solve returned {getattr(out, 'shape', type(out))} "
                                 f"{getattr(out, 'dtype', '')} for z of shape {tuple(z.shape)}, {z.dtype}")
        if not torch.equal(z, z_in):
            raise AssertionError("solve modified its input z in place")
        steps = len(times) - 1
        if calls != list(range(steps)):
            raise AssertionError(f"callback called with steps {calls[:10]}..., expected 0 .. {steps - 1}")
        return out

    def close(out: Tensor, expected: Tensor, tol: float, what: str, times: Tensor) -> None:
        err = (out - expected).abs()
        bound = tol * (1 + expected.abs())
        if (err > bound).any():
            raise AssertionError(f"{what}: max error {float(err.max()):.3g} > {tol:g} on a grid of "
                                 f"{len(times) - 1} steps {[round(float(x), 6) for x in times[:6]]}...")

    def p_constant(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)

        def velocity(z_, t):
            as_float(t)
            return a.clone()

        close(solve(velocity, z, times), z - a, 1e-9, "constant velocity", times)

    def p_linear_in_t(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a, b = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(3))

        def velocity(z_, t):
            return a + b * as_float(t)

        # z(0) = z(1) + int_1^0 (a + b t) dt = z(1) - a - b / 2
        close(solve(velocity, z, times), z - a - b / 2, 1e-5, "velocity a + b t", times)

    def p_convergence(ex) -> None:
        shape, lam, seed = ex
        z = torch.randn(shape, generator=_seeded(seed), dtype=torch.float64) + 2.0

        def velocity(z_, t):
            as_float(t)
            return lam * z_

        exact = z * math.exp(-lam)  # dz/dt = lam z, from t = 1 to t = 0
        errs = []
        for n in (8, 16, 32, 64):
            times = torch.arange(n, -1, -1, dtype=torch.float64) / n
            errs.append(float((solve(velocity, z, times) - exact).abs().max()))
        floor = 1e-12 * (1 + float(exact.abs().max()))
        if errs[-1] <= floor:
            return  # exact to rounding
        if not all(e2 < e1 or e2 <= floor for e1, e2 in zip(errs, errs[1:])):
            raise AssertionError(f"dz/dt = {lam} z: errors {errs} do not decrease with 8, 16, 32, 64 steps")
        pairs = [(e1, e2) for e1, e2 in zip(errs, errs[1:]) if e2 > 100 * floor]
        e1, e2 = pairs[-1] if pairs else (errs[-2], errs[-1])
        observed = math.log2(e1 / e2) if e2 > 0 else float("inf")
        if observed < order - 0.5:
            raise AssertionError(f"dz/dt = {lam} z: observed order {observed:.2f} < {order} - 0.5 (errors {errs})")

    def p_float32_state(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z64, a64 = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(2))
        z, a = z64.float(), a64.float()

        def velocity(z_, t):
            as_float(t)
            if z_.dtype != torch.float32:
                raise AssertionError(f"velocity called with a {z_.dtype} state; the state given was float32")
            return a.clone()

        out = solve(velocity, z, times)
        exact = z.double() - a.double()
        err = (out.double() - exact).abs()
        eps = torch.finfo(torch.float32).eps
        bound = 4 * len(times) * eps * (1 + z.double().abs() + a.double().abs())
        if (err > bound).any():
            raise AssertionError(f"float32 state, constant velocity: max error {float(err.max()):.3g} exceeds "
                                 f"float32 accumulation error (max bound {float(bound.max()):.3g}) on a grid of "
                                 f"{len(times) - 1} steps: the solver rounds the state or its steps below float32")

    ck.run("constant", fields, p_constant)
    ck.run("float32_state", fields, p_float32_state)
    if order >= 2:
        ck.run("linear_in_t", fields, p_linear_in_t)
    lams = st.sampled_from((-2.0, -1.0, -0.5, 0.5, 1.0, 2.0))
    nonempty = st.lists(st.integers(1, 3), max_size=3).map(tuple)
    ck.run("convergence", st.tuples(nonempty, lams, st.integers(0, 2**32 - 1)), p_convergence,
           max_examples=min(max_examples, 10))
    return ck.report
