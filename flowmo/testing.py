"""A conformance kit for people writing their own components: one check per component kind.

Each ``check_*`` function runs property-based tests (with `hypothesis`_) against one
component and raises ``AssertionError`` naming the first property that failed (a component
that gives different results for the same input is reported as "non-deterministic"); on
success it returns a small report, ``{property name: examples run}``. The kinds and their
checks:

=========================  ==========================  =====================================
kind (registry)            interface                   check
=========================  ==========================  =====================================
backbone                   flowmo.blocks.Backbone       :func:`check_backbone`
quantizer                  flowmo.quantizers.Quantizer  :func:`check_quantizer`
time sampler               flowmo.losses.TimeSampler    :func:`check_time_sampler`
flow loss                  flowmo.losses.FlowLoss       :func:`check_flow_loss`
time grid                  flowmo.samplers.TimeGrid     :func:`check_time_grid`
ODE solver                 flowmo.samplers.Solver       :func:`check_solver`
post-training objective    flowmo.losses.PosttrainObjective  :func:`check_posttrain`
perceptual distance        flowmo.losses.PerceptualDistance  :func:`check_distance`
=========================  ==========================  =====================================

:func:`check_component` builds any registered component from its spec and runs the right
check. Use them in your own test suite::

    from flowmo.testing import check_component, check_quantizer, check_solver, check_time_grid

    def test_my_quantizer():
        check_quantizer(lambda: MyVQ(codebook_size=256, channels=16), channels=16)

    def test_my_registered_grid():
        check_component(flowmo.TimeGridSpec.model_validate({"name": "my_grid"}))

    def test_my_solver():
        check_solver(MyRK4(), order=2)   # order: the highest order the kit should hold it to

The checks run deterministically (``derandomize=True``) on the CPU (a quantizer is fed
on the device of its parameters/buffers). hypothesis is imported only when a check runs;
install it with ``pip install hypothesis``.

.. _hypothesis: https://hypothesis.readthedocs.io
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from .registry import with_article

__all__ = ["check_quantizer", "check_time_sampler", "check_solver", "check_time_grid", "check_backbone",
           "check_flow_loss", "check_distance", "check_posttrain", "check_component"]


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
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
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
        except self.hyp.errors.Flaky as e:  # an example failed, then passed when hypothesis ran it again
            inner = [x for x in getattr(e, "exceptions", ()) if isinstance(x, BaseException)]
            detail = str(inner[0]) if inner else str(e)
            detail = detail[len(prefix):] if detail.startswith(prefix) else detail
            raise AssertionError(self.message(
                "deterministic", f"non-deterministic: while checking {name!r}, an example failed and then passed "
                                 f"when run again with the same input (the first failure: {detail})")) from None
        except Exception as e:  # hypothesis' own errors
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


def _shape(x: Any) -> Any:
    """A tensor's shape as a tuple, or the type name of anything else (for messages)."""
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- quantizers
def check_quantizer(make: Union[Any, Callable[[], Any]], channels: int, *, max_examples: int = 25,
                    forward_idempotent: Optional[bool] = None) -> dict[str, int]:
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
      indices_to_codes); with ``forward_idempotent`` also through ``forward``. Its default
      (None) is the quantizer's own declaration, :attr:`Quantizer.forward_idempotent` (False
      for quantizers whose forward bounds its input by a map that is not the identity on the
      codewords, like FSQ's tanh, so that forward(values) may land on another codeword).
    - ``gradients``: straight-through: values.sum().backward() gives finite, not all-zero
      gradients on the input, of the input's shape.
    - ``losses``: in train() and eval() mode, ``losses`` (and ``stats``) are dicts of named,
      finite, scalar tensors (eval may give none) and ``loss`` is a finite scalar.
    - ``deterministic``: the same input gives the same values, indices and losses (a failure
      says "non-deterministic" and where the two calls differ).
    - ``bfloat16``: a bfloat16 input gives bfloat16 values and the indices of the float32
      version of the same (bfloat16-representable) input; its values are those codewords
      to bfloat16 precision.
    - ``all_zero``: tokens whose channels are all exactly 0 (the whole batch, or some tokens
      among others) give finite codewords and valid indices (codes round-trip) in eval mode,
      and finite losses in training mode (e.g. no 0 / 0 from normalising a zero vector).
    - ``extreme``: inputs of huge magnitude (1e4 up to half the float32 maximum, mixed with
      ordinary values) give finite codewords and valid indices (codes round-trip) in eval mode
      (e.g. no overflow of squared distances into inf / NaN), and finite losses in training
      mode (e.g. no overflow of a squared commitment error).
    - ``input_unchanged``: forward does not modify its input in place (eval and train mode).
    - ``batch_independent``: in eval mode each sample's values and indices are those it gets
      alone (a quantizer that normalises over the batch fails).
    - ``empty``: inputs without tokens ((0, T, C), (B, 0, C)) either raise ValueError /
      TypeError or give empty values and indices of the right shapes and finite losses (not
      the NaN of a mean over nothing), in both modes.
    - ``groups`` (when ``has_groups``): group_indices_to_codes(codes_to_group_indices(values))
      == values.

    Also checked first (property ``attributes``): ``channels`` equals ``channels``,
    ``codebook_size`` is a python int in [1, 2**63], ``bits_per_token`` a finite number in
    (0, log2(codebook_size)] (or 0 for a codebook of one), ``has_groups`` a bool.

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
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    try:
        q_channels, cs = q.channels, q.codebook_size
    except AttributeError as e:  # the interface's required attributes
        ck.fail("attributes", f"the quantizer must set channels and codebook_size in its constructor ({e})")
    if q_channels != channels:
        ck.fail("attributes", f"quantizer.channels is {q_channels} but channels={channels} was given")
    if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
        ck.fail("attributes", f"codebook_size must be a positive python int, got {cs!r}")
    if cs > 2**63:
        ck.fail("attributes", f"codebook_size {cs} does not fit in int64 indices")
    bits = q.bits_per_token
    if (isinstance(bits, bool) or not isinstance(bits, (int, float)) or not math.isfinite(bits) or bits < 0
            or bits > math.log2(cs) + 1e-9 or (bits == 0 and cs > 1)):
        ck.fail("attributes", f"bits_per_token must be a number in (0, log2(codebook_size) = {math.log2(cs):g}], "
                              f"got {bits!r}")
    if not isinstance(q.has_groups, bool):
        ck.fail("attributes", f"has_groups must be a bool, got {q.has_groups!r}")
    if forward_idempotent is None:
        forward_idempotent = q.forward_idempotent
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
        if i.numel() and (int(i.min()) < 0 or int(i.max()) >= cs):
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

    def check_roundtrip(out: QuantizerOutput) -> None:
        """The output's values and indices round-trip through the codebook."""
        v = out.values.detach()
        idx = to_indices(v)
        if not torch.equal(idx, out.indices):
            raise AssertionError(f"codes_to_indices(values) != indices: {_mismatch(idx, out.indices)}")
        codes = codewords(out.indices)
        if not torch.equal(codes.float(), v.float()):
            raise AssertionError(f"indices_to_codes(indices) != values: {_mismatch(codes.float(), v.float())}")

    def p_codes_roundtrip(z: Tensor) -> None:
        q.eval()
        check_roundtrip(quantize(z))

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
            where = f"non-deterministic: two {mode}-mode calls on the same input gave different"
            if not torch.equal(a.indices, b.indices):
                raise AssertionError(f"{where} indices: {_mismatch(a.indices, b.indices)}")
            if not torch.equal(a.values, b.values):
                raise AssertionError(f"{where} values: {_mismatch(a.values, b.values)}")
            if set(a.losses) != set(b.losses) or any(not _same(a.losses[k], b.losses[k]) for k in a.losses):
                raise AssertionError(f"{where} losses: {a.losses} vs {b.losses}")

    def check_codes(out: QuantizerOutput, z: Tensor, what: str) -> None:
        """Valid output whose values and indices round-trip through the codebook."""
        try:
            check_output(out, z)
            check_roundtrip(out)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None

    def p_all_zero(ex) -> None:
        (b, t), seed, whole = ex
        z = torch.randn(b, t, C, generator=_seeded(seed)).to(device)
        if whole:
            z.zero_()
        else:
            z[:, 0] = 0.0  # the first token of every sample
        what = "an all-zero batch" if whole else "all-zero tokens among others"
        q.eval()
        check_codes(quantize(z), z, f"{what} (eval mode)")
        q.train()
        out = quantize(z)
        check_output(out, z)
        check_terms(out.losses, f"training-mode losses on {what}")
        if not torch.isfinite(out.loss):
            raise AssertionError(f"training-mode loss on {what} is {float(out.loss)!r}")

    def p_extreme(ex) -> None:
        (b, t), seed, magnitude = ex
        g = _seeded(seed)
        z = torch.randn(b, t, C, generator=g, dtype=torch.float64)
        huge = torch.rand(b, t, C, generator=g) < 0.5
        z = torch.where(huge, torch.sign(z) * magnitude, z).float().to(device)
        q.eval()
        check_codes(quantize(z), z, f"inputs of magnitude {magnitude:.3g}")
        q.train()
        out = quantize(z)
        check_output(out, z)
        check_terms(out.losses, f"training-mode losses on inputs of magnitude {magnitude:.3g}")
        if not isinstance(out.loss, Tensor) or not bool(torch.isfinite(out.loss)):
            raise AssertionError(f"training-mode loss on inputs of magnitude {magnitude:.3g} is {out.loss!r}")

    def p_input_unchanged(z: Tensor) -> None:
        for mode in ("eval", "train"):
            q.train(mode == "train")
            z_in = z.clone()
            quantize(z)
            if not _same(z, z_in):
                raise AssertionError(f"{mode}-mode forward modified its input in place: {_mismatch(z, z_in)}")

    def p_batch_independent(z: Tensor) -> None:
        q.eval()
        together = quantize(z)
        for i in range(z.shape[0]):
            alone = quantize(z[i:i + 1].clone())
            for what, a, b in (("indices", together.indices[i:i + 1], alone.indices),
                               ("values", together.values[i:i + 1].detach(), alone.values.detach())):
                if not torch.equal(a, b):
                    raise AssertionError(f"sample {i}'s {what} depend on the rest of the batch (eval mode: each "
                                         f"token is quantized on its own): {_mismatch(a, b)}")

    def p_empty() -> None:
        for shape in ((0, 2, C), (2, 0, C), (0, 0, C)):
            z = torch.zeros(shape, device=device)
            for mode in ("eval", "train"):
                q.train(mode == "train")
                try:
                    try:
                        out = quantize(z)
                    except (ValueError, TypeError):
                        continue  # refused with a clear error: fine
                    check_output(out, z)
                    check_terms(out.losses, f"{mode}-mode losses")
                    if not isinstance(out.loss, Tensor) or not bool(torch.isfinite(out.loss)):
                        raise AssertionError(f"{mode}-mode loss is {out.loss!r}")
                except AssertionError as e:
                    raise AssertionError(f"an input of shape {shape} (no tokens): {e}") from None

    def p_groups(z: Tensor) -> None:
        q.eval()
        v = quantize(z).values.detach()
        gi = q.codes_to_group_indices(v)
        if not isinstance(gi, Tensor) or gi.dtype != torch.int64 or tuple(gi.shape[:-1]) != tuple(v.shape[:-1]):
            raise AssertionError(f"codes_to_group_indices must return int64 (..., groups) indices, got "
                                 f"{tuple(gi.shape) if isinstance(gi, Tensor) else type(gi).__name__}")
        back = q.group_indices_to_codes(gi)
        if not torch.equal(back.float(), v.float()):
            raise AssertionError(f"group_indices_to_codes(codes_to_group_indices(values)) != values: "
                                 f"{_mismatch(back.float(), v.float())}")

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
        sizes = st.tuples(st.integers(1, 3), st.integers(1, 4))
        ck.run("output", inputs(), p_output)
        ck.run("deterministic", inputs(), p_deterministic)
        ck.run("indices_roundtrip", index_lists, p_indices_roundtrip)
        ck.run("codes_roundtrip", inputs(), p_codes_roundtrip)
        ck.run("idempotent", inputs(), p_idempotent)
        ck.run("gradients", inputs(scales=(0.1, 0.5, 1.0), specials=("none",)), p_gradients)
        ck.run("losses", inputs(), p_losses)
        ck.run("bfloat16", inputs(), p_bfloat16)
        ck.run("all_zero", st.tuples(sizes, st.integers(0, 2**32 - 1), st.booleans()), p_all_zero,
               max_examples=min(max_examples, 10))
        magnitudes = st.sampled_from((1e4, 1e8, 1e15, 1e30, float(torch.finfo(torch.float32).max) / 2))
        ck.run("extreme", st.tuples(sizes, st.integers(0, 2**32 - 1), magnitudes), p_extreme)
        ck.run("input_unchanged", inputs(), p_input_unchanged, max_examples=min(max_examples, 10))
        ck.run("batch_independent", inputs(), p_batch_independent, max_examples=min(max_examples, 10))
        ck.once("empty", p_empty)
        if q.has_groups:
            ck.run("groups", inputs(), p_groups)
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
    from .losses.time_samplers import TimeSampler

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
    - every property: each velocity call of step i (from times[i] to times[i + 1]) is at a time
      t in [times[i + 1], times[i]], and the step's first call is at times[i], where the state
      is known (a solver that evaluates v at the step's end, or at a fixed t, is reported as
      evaluating v at the wrong time).
    - ``t_dependent``: for v = a + b t on non-uniform grids (pow, shifted, random), the error at
      t = 0 is at most |b| / 2 * sum(dt_i ** 2), the error of Euler's method, which any step that
      evaluates v at times inside the step meets (its error is b dt (c - midpoint) per step);
      a solver that ignores the grid spacing (uniform steps of -1 / steps) or evaluates v at
      the wrong time exceeds it.
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
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be a positive int, got {order!r}")
    from .samplers.solvers import Solver

    ck = _Checker("check_solver", max_examples)
    st = ck.st
    if not isinstance(solver, Solver) and callable(solver) and not isinstance(solver, torch.nn.Module):
        solver = solver()  # a zero-argument factory
    if not isinstance(solver, Solver):
        raise AssertionError(f"check_solver: expected a flowmo.samplers.Solver, got {type(solver).__name__}")

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
    uneven = st.tuples(  # grids whose steps differ in size (p, shift far from 1; random cuts)
        st.sampled_from(("pow", "shifted", "random")),
        st.integers(3, 40),
        st.sampled_from((0.1, 0.2, 0.25, 0.4, 2.5, 4.0, 10.0)),
        st.lists(st.floats(1e-3, 1 - 1e-3), min_size=2, max_size=30),
    ).map(lambda g: _grid(*g))
    shapes = st.lists(st.integers(0, 3), max_size=4).map(tuple)
    fields = st.tuples(shapes, grids, st.integers(0, 2**32 - 1))

    def solve(velocity: Callable[[Tensor, float], Tensor], z: Tensor, times: Tensor) -> Tensor:
        calls: list[int] = []
        at: list[tuple[int, float]] = []  # (the step running, t) of every velocity call

        def timed(z_: Tensor, t: Any) -> Tensor:
            at.append((len(calls), as_float(t)))
            return velocity(z_, t)

        z_in = z.clone()
        out = solver.solve(timed, z, times, lambda i, zi: calls.append(int(i)))
        if not isinstance(out, Tensor) or out.shape != z.shape or out.dtype != z.dtype:
            raise AssertionError(f"solve returned {getattr(out, 'shape', type(out))} "
                                 f"{getattr(out, 'dtype', '')} for z of shape {tuple(z.shape)}, {z.dtype}")
        if not torch.equal(z, z_in):
            raise AssertionError("solve modified its input z in place")
        steps = len(times) - 1
        if calls != list(range(steps)):
            raise AssertionError(f"callback called with steps {calls[:10]}..., expected 0 .. {steps - 1}")
        ts = [float(x) for x in times]
        first: set[int] = set()
        for i, t in at:
            if i >= steps:
                raise AssertionError(f"velocity called after the last step (at t = {t!r})")
            lo, hi = ts[i + 1], ts[i]
            wrong = None
            if not (lo - 1e-12 <= t <= hi + 1e-12):
                wrong = f"at t = {t!r}, outside the step [{lo!r}, {hi!r}]"
            elif i not in first and abs(t - hi) > 1e-12:
                wrong = f"first at t = {t!r}; the state is known at the step's start t = {hi!r}"
            if wrong:
                raise AssertionError(f"the solver evaluates v at the wrong time: step {i} (from t = {hi!r} to "
                                     f"{lo!r}) calls velocity {wrong}")
            first.add(i)
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

    def p_t_dependent(ex) -> None:
        shape, times, seed = ex
        g = _seeded(seed)
        z, a, b = (torch.randn(shape, generator=g, dtype=torch.float64) * 3 for _ in range(3))

        def velocity(z_, t):
            return a + b * as_float(t)

        for grid in (times, _grid("pow", 10, 0.25, [])):
            out = solve(velocity, z, grid)
            expected = z - a - b / 2  # z(0) = z(1) + int_1^0 (a + b t) dt
            dt2 = float(((grid[1:] - grid[:-1]) ** 2).sum())
            bound = b.abs() * dt2 / 2 * (1 + 1e-6) + 1e-9 * (1 + expected.abs())
            err = (out - expected).abs()
            if (err > bound).any():
                k = int((err - bound).flatten().argmax()) if err.numel() else 0
                raise AssertionError(
                    f"velocity a + b t on a grid of {len(grid) - 1} uneven steps "
                    f"{[round(float(x), 6) for x in grid[:6]]}...: error {float(err.flatten()[k]):.3g} exceeds "
                    f"{float(bound.flatten()[k]):.3g} = |b| / 2 * sum(dt^2), the error of a first-order step that "
                    "evaluates v inside the step: the solver ignores the grid spacing or evaluates v at the wrong time")

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
    ck.run("t_dependent", st.tuples(shapes, uneven, st.integers(0, 2**32 - 1)), p_t_dependent)
    ck.run("float32_state", fields, p_float32_state)
    if order >= 2:
        ck.run("linear_in_t", fields, p_linear_in_t)
    lams = st.sampled_from((-2.0, -1.0, -0.5, 0.5, 1.0, 2.0))
    nonempty = st.lists(st.integers(1, 3), max_size=3).map(tuple)
    ck.run("convergence", st.tuples(nonempty, lams, st.integers(0, 2**32 - 1)), p_convergence,
           max_examples=min(max_examples, 10))
    return ck.report


# ----------------------------------------------------------------------------- time grids
def check_time_grid(grid: Any, *, max_examples: int = 25, max_steps: int = 4096) -> dict[str, int]:
    """Check a time grid (a :class:`flowmo.samplers.TimeGrid` or a zero-argument factory):
    ``grid(steps)`` -> the (steps + 1,) times a sampler integrates through, from 1 to 0.

    Properties, for steps drawn from 1 .. ``max_steps``:

    - ``shape``: a float64 tensor of shape (steps + 1,), all finite.
    - ``endpoints``: t[0] == 1 exactly (noise) and t[-1] == 0 exactly (data); a grid that runs
      0 -> 1 is reported as reversed.
    - ``monotone``: strictly decreasing (a repeated time is a wasted decoder call; an
      increase integrates the wrong way), naming the first offending step.
    - ``deterministic``: two calls give the same grid, whatever the global RNG state.
    - ``bad_steps``: steps = 0 and -1 raise ValueError or TypeError.

    Returns ``{property: examples run}``.
    """
    from .samplers.grids import TimeGrid

    ck = _Checker("check_time_grid", max_examples)
    st = ck.st
    if not isinstance(grid, TimeGrid) and callable(grid):
        grid = grid()
    if not isinstance(grid, TimeGrid):
        raise AssertionError(f"check_time_grid: expected a flowmo.samplers.TimeGrid, got {type(grid).__name__}")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")

    def times(steps: int) -> Tensor:
        t = grid(steps)
        if not isinstance(t, Tensor):
            raise AssertionError(f"grid({steps}) returned {type(t).__name__}, not a tensor")
        return t

    def p_shape(steps: int) -> None:
        t = times(steps)
        if tuple(t.shape) != (steps + 1,):
            raise AssertionError(f"grid({steps}) has shape {tuple(t.shape)}; expected ({steps + 1},)")
        if t.dtype != torch.float64:
            raise AssertionError(f"grid({steps}) has dtype {t.dtype}; expected torch.float64 (the sampler's times)")
        if not bool(torch.isfinite(t).all()):
            raise AssertionError(f"grid({steps}) has non-finite times")

    def p_endpoints(steps: int) -> None:
        t = times(steps).double()
        first, last = float(t[0]), float(t[-1])
        if first == 0.0 and last == 1.0:
            raise AssertionError(f"grid({steps}) runs from 0 to 1: it is reversed (t = 1 is noise, where sampling "
                                 "starts; t = 0 is data, where it ends)")
        if first != 1.0 or last != 0.0:
            raise AssertionError(f"grid({steps}) must start at exactly 1 and end at exactly 0, got t[0] = {first!r}, "
                                 f"t[-1] = {last!r}")

    def p_monotone(steps: int) -> None:
        t = times(steps).double()
        ok = t[1:] < t[:-1]
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0, 0])
            raise AssertionError(f"grid({steps}) is not strictly decreasing: t[{i}] = {float(t[i])!r}, "
                                 f"t[{i + 1}] = {float(t[i + 1])!r}")

    def p_deterministic(steps: int) -> None:
        torch.manual_seed(steps)
        a = times(steps)
        torch.manual_seed(steps + 1)
        b = times(steps)
        if not torch.equal(a, b):
            raise AssertionError(f"non-deterministic: two calls grid({steps}) gave different times: {_mismatch(a, b)}")

    def p_bad_steps() -> None:
        for bad in (0, -1):
            try:
                grid(bad)
            except (ValueError, TypeError):
                continue
            raise AssertionError(f"grid({bad}) did not raise ValueError (steps must be a positive int)")

    steps = st.one_of(st.integers(1, min(64, max_steps)), st.integers(1, max_steps))
    ck.run("shape", steps, p_shape)
    ck.run("endpoints", steps, p_endpoints)
    ck.run("monotone", steps, p_monotone)
    ck.run("deterministic", steps, p_deterministic, max_examples=min(max_examples, 10))
    ck.once("bad_steps", p_bad_steps)
    return ck.report


# ----------------------------------------------------------------------------- shared pieces
def _instance(make: Any, cls: type, what: str) -> Any:
    """``make`` if it is a ``cls``, else ``make()`` (a zero-argument factory) checked to be one."""
    obj = make
    if not isinstance(make, cls) and callable(make) and not isinstance(make, torch.nn.Module):
        try:
            inspect.signature(make).bind()
        except TypeError:
            pass  # not a zero-argument factory: reported below
        except ValueError:
            obj = make()  # a builtin without a signature
        else:
            obj = make()
    if not isinstance(obj, cls):
        raise AssertionError(f"{what}: expected {with_article(f'{cls.__module__}.{cls.__qualname__}')} (or a "
                             f"zero-argument factory returning one), got {type(obj).__name__}")
    return obj


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


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal shapes and values, NaN equal to NaN (a NaN in both is not non-determinism)."""
    a, b = a.detach(), b.detach()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    same = a == b
    if a.is_floating_point():
        same = same | (a.isnan() & b.isnan())
    return bool(same.all())


def _same_terms(a: dict[str, Tensor], b: dict[str, Tensor], what: str) -> None:
    if set(a) != set(b) or any(not _same(a[k], b[k]) for k in a):
        shown = {k: float(v.detach()) for k, v in a.items()}, {k: float(v.detach()) for k, v in b.items()}
        raise AssertionError(f"non-deterministic: {what} gave different terms: {shown[0]} vs {shown[1]}")


class _ToyDecoder(torch.nn.Module):
    """A decoder stand-in for the loss checks: v = a * x_t + b * (2 t - 1) + c * mean(cond), with
    learnable a, b, c; it checks every call's arguments and counts the calls."""

    def __init__(self, x_shape: tuple[int, ...], cond_shape: tuple[int, ...], kind: str):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.3))
        self.b = torch.nn.Parameter(torch.tensor(-0.2))
        self.c = torch.nn.Parameter(torch.tensor(0.5))
        self.x_shape, self.cond_shape, self.kind, self.calls = tuple(x_shape), tuple(cond_shape), kind, 0

    def forward(self, x_t: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        self.calls += 1
        b = self.x_shape[0]
        if not isinstance(x_t, Tensor) or tuple(x_t.shape) != self.x_shape or not x_t.is_floating_point():
            raise AssertionError(f"the {self.kind} called velocity with x_t of shape "
                                 f"{_shape(x_t)}; expected {self.x_shape}, floating")
        if not isinstance(t, Tensor) or tuple(t.shape) != (b,) or not t.is_floating_point():
            raise AssertionError(f"the {self.kind} called velocity with t of shape "
                                 f"{_shape(t)}; expected ({b},), floating")
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise AssertionError(f"the {self.kind} called velocity with t outside [0, 1]: {t.tolist()}")
        if not isinstance(cond, Tensor) or tuple(cond.shape) != self.cond_shape:
            raise AssertionError(f"the {self.kind} called velocity with cond of shape "
                                 f"{_shape(cond)}; expected {self.cond_shape}")
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


# ----------------------------------------------------------------------------- flow losses
def check_flow_loss(loss: Any, *, image_size: int = 8, code_shape: tuple[int, int] = (4, 6),
                    max_examples: int = 10) -> dict[str, int]:
    """Check a flow loss (a :class:`flowmo.losses.FlowLoss` or a zero-argument factory) with a
    small learnable stand-in decoder, on images (B, 3, image_size, image_size) in [-1, 1],
    conditioning (B, T, C + 1) for ``code_shape`` = (T, C), t in [0, 1] (0 and 1 included).

    Properties:

    - ``terms``: a non-empty dict of named, finite, scalar floating tensors, with and without
      CFG dropout; the velocity is called with x_t of x's shape, t of shape (B,) in [0, 1] and
      cond of cond's shape.
    - ``gradients``: the summed terms give the decoder finite, not all-zero gradients.
    - ``deterministic``: the same arguments and seeded generator give the same terms (the
      generator must be the only source of randomness).

    Returns ``{property: examples run}``.
    """
    from .losses.flow import FlowLoss

    ck = _Checker("check_flow_loss", max_examples)
    st = ck.st
    fn = _instance(loss, FlowLoss, "check_flow_loss")
    t_values = st.sampled_from(("random", "zero", "one"))
    examples = st.tuples(st.integers(1, 3), st.integers(0, 2**32 - 1), t_values, st.booleans())

    def run(ex, dropout_seed: Optional[int] = None):
        batch, seed, t_kind, dropout = ex
        x, cond = _loss_inputs(seed, batch, image_size, code_shape)
        g = _seeded(seed + 1)
        t = {"random": torch.rand(batch, generator=g), "zero": torch.zeros(batch), "one": torch.ones(batch)}[t_kind]
        noise = torch.randn(x.shape, generator=g)
        dec = _ToyDecoder(x.shape, cond.shape, "flow loss")
        gen = _seeded(seed if dropout_seed is None else dropout_seed)
        terms = fn(dec, x, cond, t, noise, dropout=dropout, generator=gen)
        return _check_terms(terms, "the flow loss"), dec

    def p_terms(ex) -> None:
        _, dec = run(ex)
        if dec.calls == 0:
            raise AssertionError("the flow loss never called the velocity")

    def p_gradients(ex) -> None:
        terms, dec = run(ex)
        _backward(terms, "the flow loss")
        _check_velocity_grads(dec, "the flow loss")

    def p_deterministic(ex) -> None:
        torch.manual_seed(1)
        a, _ = run(ex)
        torch.manual_seed(2)
        b, _ = run(ex)
        _same_terms(a, b, "two calls with the same arguments and generator seed")

    ck.run("terms", examples, p_terms)
    ck.run("gradients", examples, p_gradients)
    ck.run("deterministic", examples, p_deterministic)
    return ck.report


# ----------------------------------------------------------------------------- post-training objectives
def check_posttrain(objective: Any, *, image_size: int = 8, code_shape: tuple[int, int] = (4, 6),
                    max_examples: int = 5) -> dict[str, int]:
    """Check a post-training objective (a :class:`flowmo.losses.PosttrainObjective` or a
    zero-argument factory) with a small learnable stand-in decoder, on images
    (B, 3, image_size, image_size) in [-1, 1] and conditioning (B, T, C + 1).

    Properties:

    - ``terms``: a non-empty dict of named, finite, scalar floating tensors; every velocity
      call gets x_t of x's shape, t (B,) in [0, 1] and cond of cond's shape; ``checkpoints_decoder``
      is a bool.
    - ``gradients``: the summed terms give the decoder finite, not all-zero gradients.
    - ``deterministic``: the same arguments and seeded generator give the same terms.
    - ``noise``: a given ``noise`` of x's shape is used (two different noises give different
      terms for the same generator seed).

    Returns ``{property: examples run}``.
    """
    from .losses.posttrain import PosttrainObjective

    ck = _Checker("check_posttrain", max_examples)
    st = ck.st
    obj = _instance(objective, PosttrainObjective, "check_posttrain")
    if not isinstance(obj.checkpoints_decoder, bool):
        ck.fail("attributes", f"checkpoints_decoder must be a bool, got {obj.checkpoints_decoder!r}")
    examples = st.tuples(st.integers(1, 3), st.integers(0, 2**32 - 1))

    def run(ex, noise: Optional[Tensor] = None):
        batch, seed = ex
        x, cond = _loss_inputs(seed, batch, image_size, code_shape)
        dec = _ToyDecoder(x.shape, cond.shape, "post-training objective")
        terms = obj(dec, x, cond, noise=noise, generator=_seeded(seed))
        return _check_terms(terms, "the post-training objective"), dec, x

    def p_terms(ex) -> None:
        _, dec, _ = run(ex)
        if dec.calls == 0:
            raise AssertionError("the post-training objective never called the velocity")

    def p_gradients(ex) -> None:
        terms, dec, _ = run(ex)
        _backward(terms, "the post-training objective")
        _check_velocity_grads(dec, "the post-training objective")

    def p_deterministic(ex) -> None:
        torch.manual_seed(1)
        a, _, _ = run(ex)
        torch.manual_seed(2)
        b, _, _ = run(ex)
        _same_terms(a, b, "two calls with the same arguments and generator seed")

    def p_noise(ex) -> None:
        batch, seed = ex
        shape = (batch, 3, image_size, image_size)
        g = _seeded(seed + 7)
        a, _, _ = run(ex, noise=torch.randn(shape, generator=g))
        b, _, _ = run(ex, noise=torch.randn(shape, generator=g) * 2)
        if all(torch.equal(a[k], b[k]) for k in a if k in b):
            raise AssertionError("two different noise tensors gave the same terms: the given noise is not used")

    ck.run("terms", examples, p_terms)
    ck.run("gradients", examples, p_gradients)
    ck.run("deterministic", examples, p_deterministic)
    ck.run("noise", examples, p_noise, max_examples=min(max_examples, 3))
    return ck.report


# ----------------------------------------------------------------------------- perceptual distances
def check_distance(distance: Any, *, image_size: int = 16, max_examples: int = 10,
                   atol: float = 1e-5) -> dict[str, int]:
    """Check a sample-level distance (a :class:`flowmo.losses.PerceptualDistance` or a
    zero-argument factory) on images (B, 3, image_size, image_size) in [-1, 1].

    Properties:

    - ``output``: (B,) floating, finite, >= 0.
    - ``identity``: d(x, x) is 0 (within ``atol``).
    - ``batch_independent``: each sample's distance is the one it gets alone (rtol 1e-4).
    - ``gradients``: d(x, y).sum() gives x finite, not all-zero gradients where x != y.
    - ``deterministic``: two calls give the same distances.
    - ``mismatch``: images of different shapes raise ValueError (or TypeError).

    Returns ``{property: examples run}``. Runs on the device of the distance's parameters.
    """
    from .losses.perceptual import PerceptualDistance

    ck = _Checker("check_distance", max_examples)
    st = ck.st
    d = _instance(distance, PerceptualDistance, "check_distance")
    device = next((t.device for t in list(d.parameters()) + list(d.buffers())), torch.device("cpu"))
    examples = st.tuples(st.integers(1, 3), st.integers(0, 2**32 - 1))

    def pair(ex):
        batch, seed = ex
        g = _seeded(seed)
        x = torch.rand(batch, 3, image_size, image_size, generator=g) * 2 - 1
        y = (x + 0.5 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        return x.to(device), y.to(device)

    def dist(x: Tensor, y: Tensor) -> Tensor:
        out = d(x, y)
        if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0],) or not out.is_floating_point():
            raise AssertionError(f"the distance must return a ({x.shape[0]},) floating tensor, got "
                                 f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        return out

    def p_output(ex) -> None:
        out = dist(*pair(ex))
        if not bool(torch.isfinite(out).all()):
            raise AssertionError(f"distances are not all finite: {out.tolist()}")
        if bool((out < 0).any()):
            raise AssertionError(f"distances must be >= 0, got {out.tolist()}")

    def p_identity(ex) -> None:
        x, _ = pair(ex)
        out = dist(x, x.clone())
        if bool((out.abs() > atol).any()):
            raise AssertionError(f"d(x, x) must be 0 (within {atol:g}), got {out.tolist()}")

    def p_batch_independent(ex) -> None:
        x, y = pair(ex)
        together = dist(x, y).detach().double()
        alone = torch.cat([dist(x[i:i + 1], y[i:i + 1]).detach() for i in range(x.shape[0])]).double()
        if not torch.allclose(together, alone, rtol=1e-4, atol=atol):
            raise AssertionError(f"a sample's distance depends on the rest of the batch: {together.tolist()} in a "
                                 f"batch vs {alone.tolist()} alone")

    def p_gradients(ex) -> None:
        x, y = pair(ex)
        x = x.clone().requires_grad_(True)
        dist(x, y).sum().backward()
        if x.grad is None or not bool(torch.isfinite(x.grad).all()) or not bool(x.grad.any()):
            raise AssertionError("d(x, y).sum() gives x no finite, non-zero gradient (the distance would not train "
                                 "the model)")

    def p_deterministic(ex) -> None:
        x, y = pair(ex)
        a, b = dist(x, y), dist(x, y)
        if not torch.equal(a, b):
            raise AssertionError(f"non-deterministic: two calls gave different distances: {_mismatch(a, b)}")

    def p_mismatch() -> None:
        x, y = pair((2, 0))
        try:
            d(x, y[:, :, :-1])
        except (ValueError, TypeError):
            return
        raise AssertionError("images of shapes (2, 3, H, W) and (2, 3, H - 1, W) did not raise ValueError")

    with torch.no_grad():
        ck.run("output", examples, p_output)
        ck.run("identity", examples, p_identity)
        ck.run("batch_independent", examples, p_batch_independent)
        ck.run("deterministic", examples, p_deterministic, max_examples=min(max_examples, 5))
        ck.once("mismatch", p_mismatch)
    ck.run("gradients", examples, p_gradients, max_examples=min(max_examples, 5))
    return ck.report


# ----------------------------------------------------------------------------- backbones
def check_backbone(make: Any, *, patch_dim: int, txt_in_dim: int, txt_out_dim: int, max_examples: int = 8,
                   atol: float = 1e-4) -> dict[str, int]:
    """Check a backbone (a :class:`flowmo.blocks.Backbone` or a zero-argument factory) built
    with the wiring ``patch_dim``, ``txt_in_dim``, ``txt_out_dim``, on batches of 1 .. 3
    samples, 1 .. 4 latent tokens and patch grids of 1 .. 3 x 1 .. 3, with t = None and (for
    a backbone whose ``time_conditioning`` is True) t in [0, 1] (0 and 1 included).

    The checks stay within what the backbone declares (:class:`flowmo.blocks.Backbone`):
    only the heads in its ``outputs`` are asked for (e.g. an encoder built with
    ``MMDiT(..., time_conditioning=False, outputs=("txt",))``), and t only when it has
    ``time_conditioning``.

    Properties:

    - ``attributes``: ``outputs`` is a non-empty tuple of distinct heads from ("img", "txt"),
      ``time_conditioning`` a bool.
    - ``output``: (B, N, patch_dim) for "img" and (B, T, txt_out_dim) for "txt", in the
      parameters' dtype, finite; a head not asked for is None, and (with two heads) asking
      for one head alone leaves it unchanged.
    - ``deterministic``: eval mode, two calls give the same outputs.
    - ``batch_independent``: each sample's outputs are those it gets alone (within ``atol``).
    - ``cross_stream``: the image output depends on the latent tokens and the latent output on
      the image tokens (FlowMo's decoder reads the code, its encoder writes it), for the
      declared heads.
    - ``gradients``: train mode, the summed outputs give finite gradients to both inputs and,
      with t given (or for a backbone without time conditioning), to every parameter.
    - ``compile_units``: a non-empty tuple of submodules (or the backbone itself).

    Returns ``{property: examples run}``. Restores the module's train/eval mode.
    """
    from .blocks.base import Backbone

    ck = _Checker("check_backbone", max_examples)
    st = ck.st
    for name, v in (("patch_dim", patch_dim), ("txt_in_dim", txt_in_dim), ("txt_out_dim", txt_out_dim)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    net = _instance(make, Backbone, "check_backbone")
    params = list(net.parameters())
    device = params[0].device if params else torch.device("cpu")
    dtype = params[0].dtype if params else torch.float32
    was_training = net.training
    heads, timed = net.outputs, net.time_conditioning
    if (not isinstance(heads, tuple) or not heads or len(set(heads)) != len(heads)
            or any(h not in ("img", "txt") for h in heads)):
        ck.fail("attributes", f"outputs must be a non-empty tuple of distinct heads from ('img', 'txt'), got {heads!r}")
    if not isinstance(timed, bool):
        ck.fail("attributes", f"time_conditioning must be a bool, got {timed!r}")
    ck.report["attributes"] = 1
    t_kinds = ("none", "random", "zero", "one") if timed else ("none",)
    examples = st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),
                         st.sampled_from(t_kinds), st.integers(0, 2**32 - 1))
    names = ("img_out", "txt_out")
    declared = [k for k, h in enumerate(("img", "txt")) if h in heads]  # the outputs to check

    def inputs(ex):
        b, t_len, rows, cols, t_kind, seed = ex
        g = _seeded(seed)
        img = torch.randn(b, rows * cols, patch_dim, generator=g)
        txt = torch.randn(b, t_len, txt_in_dim, generator=g)
        t = {"none": None, "random": torch.rand(b, generator=g), "zero": torch.zeros(b), "one": torch.ones(b)}[t_kind]
        move = (lambda x: None if x is None else x.to(device=device, dtype=dtype))
        return move(img), move(txt), move(t), (rows, cols)

    def run(img, txt, t, grid, outputs=heads):
        out = net(img, txt, t, grid, outputs=outputs)
        if not isinstance(out, tuple) or len(out) != 2:
            raise AssertionError(f"forward must return a pair (img_out, txt_out), got {type(out).__name__}")
        return out

    def p_output(ex) -> None:
        net.eval()
        img, txt, t, grid = inputs(ex)
        out = run(img, txt, t, grid)
        shapes = ((img.shape[0], img.shape[1], patch_dim), (txt.shape[0], txt.shape[1], txt_out_dim))
        for k in range(2):
            x = out[k]
            if k not in declared:
                if x is not None:
                    raise AssertionError(f"{names[k]} must be None: the head is not in outputs {heads!r}")
                continue
            if not isinstance(x, Tensor) or tuple(x.shape) != shapes[k]:
                raise AssertionError(f"{names[k]} has shape {_shape(x)}; expected {shapes[k]}")
            if x.dtype != dtype:
                raise AssertionError(f"{names[k]} has dtype {x.dtype}; expected the parameters' {dtype}")
            if not bool(torch.isfinite(x).all()):
                raise AssertionError(f"{names[k]} is not finite")
        if len(declared) == 2:
            only_img = run(img, txt, t, grid, outputs=("img",))
            only_txt = run(img, txt, t, grid, outputs=("txt",))
            if only_img[1] is not None or only_txt[0] is not None:
                raise AssertionError("a head left out of `outputs` must be returned as None")
            if not torch.allclose(only_img[0], out[0], atol=atol, rtol=0) or not torch.allclose(
                    only_txt[1], out[1], atol=atol, rtol=0):
                raise AssertionError("asking for one head changes its output")

    def p_deterministic(ex) -> None:
        net.eval()
        img, txt, t, grid = inputs(ex)
        a, b = run(img, txt, t, grid), run(img, txt, t, grid)
        for k in declared:
            if not torch.equal(a[k], b[k]):
                raise AssertionError(f"non-deterministic: two eval-mode calls gave different "
                                     f"{names[k]}: {_mismatch(a[k], b[k])}")

    def p_batch_independent(ex) -> None:
        net.eval()
        img, txt, t, grid = inputs(ex)
        together = run(img, txt, t, grid)
        for i in range(img.shape[0]):
            alone = run(img[i:i + 1], txt[i:i + 1], None if t is None else t[i:i + 1], grid)
            for k in declared:
                if not torch.allclose(together[k][i:i + 1], alone[k], atol=atol, rtol=0):
                    raise AssertionError(f"sample {i}'s {names[k]} depends on the rest of the batch "
                                         f"(max difference {float((together[k][i:i + 1] - alone[k]).abs().max()):.3g})")

    def p_cross_stream(ex) -> None:
        net.eval()
        img, txt, t, grid = inputs(ex)
        io, to = run(img, txt, t, grid)
        io2, _ = run(img, txt + 1.0, t, grid)
        _, to2 = run(img + 1.0, txt, t, grid)
        if 0 in declared and torch.equal(io, io2):
            raise AssertionError("the image output does not depend on the latent tokens (a decoder must read the code)")
        if 1 in declared and torch.equal(to, to2):
            raise AssertionError("the latent output does not depend on the image tokens (an encoder must see the image)")

    def p_gradients(ex) -> None:
        net.train()
        net.zero_grad(set_to_none=True)
        img, txt, t, grid = inputs(ex)
        img, txt = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
        out = run(img, txt, t, grid)
        torch.stack([out[k].float().sum() for k in declared]).sum().backward()
        for what, x in (("img", img), ("txt", txt)):
            if x.grad is None or not bool(torch.isfinite(x.grad).all()):
                raise AssertionError(f"no finite gradient reached the {what} input")
        if t is not None or not timed:
            missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
            if missing:
                given = "with t given" if t is not None else "(a backbone without time conditioning)"
                raise AssertionError(f"{given}, parameters get no gradient: {missing[:5]}")
            bad = [n for n, p in net.named_parameters() if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if bad:
                raise AssertionError(f"non-finite gradients of {bad[:5]}")
        net.zero_grad(set_to_none=True)

    def p_compile_units() -> None:
        units = net.compile_units()
        if not isinstance(units, tuple) or not units or not all(isinstance(u, torch.nn.Module) for u in units):
            raise AssertionError(f"compile_units() must return a non-empty tuple of modules, got {units!r:.100}")

    try:
        ck.once("compile_units", p_compile_units)
        with torch.no_grad():
            ck.run("deterministic", examples, p_deterministic, max_examples=min(max_examples, 4))
            ck.run("output", examples, p_output)
            ck.run("batch_independent", examples, p_batch_independent, max_examples=min(max_examples, 4))
            ck.run("cross_stream", examples, p_cross_stream, max_examples=min(max_examples, 4))
        ck.run("gradients", examples, p_gradients, max_examples=min(max_examples, 4))
    finally:
        net.train(was_training)
    return ck.report


# ----------------------------------------------------------------------------- any registered component
def check_component(spec: Any, *, max_examples: Optional[int] = None, options: Optional[dict[str, Any]] = None,
                    **wiring: Any) -> dict[str, int]:
    """Build the component a spec describes with its registry (``REGISTRY.build(spec, **wiring)``)
    and run the kit's check for its kind.

    Args:
        spec: a component spec (e.g. ``QuantizerSpec.model_validate({"name": "my_vq"})`` or a
            registered spec class's instance).
        max_examples: passed on (default: each check's own).
        options: keyword options of the kind's check, separate from the wiring, e.g.
            ``{"order": 2}`` for a second-order solver (:func:`check_solver`),
            ``{"forward_idempotent": False}`` (:func:`check_quantizer`), ``{"atol": 1e-3}``
            (:func:`check_backbone`). An option the check does not take raises TypeError
            listing those it takes.
        **wiring: the kind's wiring arguments (``channels`` for a quantizer; ``patch_dim``,
            ``txt_in_dim``, ``txt_out_dim`` for a backbone; none for the other kinds).

    For a quantizer, flow loss or post-training objective the spec's declared loss terms
    (``spec.loss_terms()``, see :class:`flowmo.quantizers.Quantizer`) are checked too
    (property ``declared_loss_terms``): they must be declared (not None) and name exactly the
    terms the component returns (a quantizer in training mode).

    Returns the check's report (``{property: examples run}``).
    """
    from .registry import REGISTRIES
    from .spec import ComponentSpec

    if not isinstance(spec, ComponentSpec) or type(spec).registry is None:
        raise TypeError(f"spec must be a component spec (e.g. a QuantizerSpec), got {type(spec).__name__}")
    registry = type(spec).registry
    kind = next((k for k, r in REGISTRIES.items() if r is registry), None)
    if kind is None:
        raise ValueError(f"the {registry.kind} registry has no check in flowmo.testing")
    check = {"quantizer": check_quantizer, "backbone": check_backbone, "time_sampler": check_time_sampler,
             "flow_loss": check_flow_loss, "time_grid": check_time_grid, "solver": check_solver,
             "posttrain": check_posttrain, "perceptual": check_distance}[kind]
    options = _check_options(check, options, set(registry.wiring))
    extra = dict(options) if max_examples is None else {**options, "max_examples": max_examples}
    obj = registry.build(spec, **wiring)
    if kind == "quantizer":
        report = check_quantizer(obj, wiring["channels"], **extra)
    elif kind == "backbone":
        report = check_backbone(obj, **wiring, **extra)
    else:
        report = check(obj, **extra)
    if kind in ("quantizer", "flow_loss", "posttrain"):
        _check_declared_terms(kind, spec, obj, wiring)
        report["declared_loss_terms"] = 1
    return report


def _check_options(check: Callable[..., Any], options: Any, wiring: set[str]) -> dict[str, Any]:
    """``options`` checked against the keyword-only options ``check`` takes (TypeError otherwise)."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise TypeError(f"options must be a dict of the check's keyword options, got {type(options).__name__} "
                        f"{options!r}")
    params = inspect.signature(check).parameters
    taken = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
             and n not in wiring and n != "max_examples"]
    if "max_examples" in options:
        raise TypeError("options: pass max_examples to check_component itself, not in options")
    bad = [k for k in options if k not in taken]
    if bad:
        raise TypeError(f"options: {check.__name__} takes no option {', '.join(map(repr, bad))}; it takes: "
                        f"{', '.join(taken) or 'none'} (the wiring arguments go to check_component as keywords)")
    return dict(options)


def _check_declared_terms(kind: str, spec: Any, obj: Any, wiring: dict[str, Any]) -> None:
    """The ``declared_loss_terms`` property of :func:`check_component`."""
    ck = _Checker("check_component", 1)
    what = {"quantizer": "quantizer", "flow_loss": "flow loss", "posttrain": "post-training objective"}[kind]
    how = {"quantizer": "flowmo.quantizers.Quantizer.loss_terms", "flow_loss": "flowmo.losses.FlowLoss.loss_terms",
           "posttrain": "flowmo.losses.PosttrainObjective.loss_terms"}[kind]

    def body() -> None:
        declared = spec.loss_terms()
        if declared is None:
            raise AssertionError(f"the {what} {spec.name!r} does not declare its loss terms: give its class a "
                                 f"classmethod loss_terms(cls, spec) (see {how}), or override its explicit spec "
                                 "class's loss_terms()")
        names = sorted(str(t[0]) for t in declared)
        g = _seeded(0)
        if kind == "quantizer":
            params = list(obj.parameters()) + list(obj.buffers())
            device = params[0].device if params else torch.device("cpu")
            was_training = obj.training
            obj.train()
            try:
                with torch.no_grad():
                    got = obj(torch.randn(2, 3, wiring["channels"], generator=g).to(device)).losses
            finally:
                obj.train(was_training)
        else:
            x, cond = _loss_inputs(0, 2, 8, (4, 6))
            dec = _ToyDecoder(x.shape, cond.shape, what)
            if kind == "flow_loss":
                got = obj(dec, x, cond, torch.rand(2, generator=g), torch.randn(x.shape, generator=g),
                          dropout=True, generator=g)
            else:
                got = obj(dec, x, cond, generator=g)
        if not isinstance(got, dict):
            raise AssertionError(f"the {what} returned {type(got).__name__} terms, not a dict")
        if sorted(got) != names:
            raise AssertionError(f"the {what} {spec.name!r} returns the terms {sorted(got)!r} but its spec declares "
                                 f"{names!r}: declare exactly the terms it returns (a classmethod "
                                 f"loss_terms(cls, spec) on its class, see {how})")

    ck.once("declared_loss_terms", body)
