"""The check for the quantizer kind: :func:`check_quantizer`, its examples and properties (the
quantizer's calls and their validation are in :mod:`flowmo.testing.quantizer_probe`)."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor

from ..quantizers.base import Quantizer
from .checker import _Checker, _mismatch, _same, _seeded
from .quantizer_probe import _QuantizerProbe
from .quantizer_stochastic import check_continuous, check_stochastic

LARGE = (8, 16)
"""(samples, tokens) of the largest drawn inputs; every property of drawn inputs also runs on one
input of this size first (paths a quantizer takes only for larger batches are checked too)."""


def check_quantizer(make: Union[Any, Callable[[], Any]], channels: int, *, max_examples: int = 25,
                    forward_idempotent: Optional[bool] = None) -> dict[str, int]:
    """Check a :class:`flowmo.quantizers.Quantizer` (an instance, or a zero-argument factory).

    Properties (each run on ``max_examples`` drawn examples; inputs (B, T, E), E the
    quantizer's ``input_channels`` (``channels`` but for e.g. ``kl``), of several magnitudes,
    with exact zeros and codewords among them, B in [1, 8] and T in [1, 16]; every property of
    such inputs also runs first on one of the largest size, :data:`LARGE` = 8 samples x 16
    tokens, so that paths taken only for larger batches are checked however few examples are
    drawn). A stochastic quantizer (``stochastic``: ``kl``) gets, in every training-mode call
    below, ``noise`` drawn by its ``draw_noise`` from a fixed seed, so that its calls are
    reproducible; its sampling is checked by the properties of
    :func:`~flowmo.testing.quantizer_stochastic.check_stochastic`. A continuous quantizer
    (``discrete`` False: ``kl``, ``identity``) skips the index properties (``indices_roundtrip``,
    ``codes_roundtrip``, ``idempotent``, the index parts of the others) and passes those of
    :func:`~flowmo.testing.quantizer_stochastic.check_continuous` instead.

    - ``output``: ``forward`` returns a QuantizerOutput; values (B, T, C) with the input's
      dtype, finite; indices (B, T) int64 in [0, codebook_size) (None: continuous).
    - ``batch_independent``: in eval mode each sample's values and indices are those it gets
      alone (a quantizer that normalises over the batch fails). Checked, on as many examples,
      before the properties below, which a batch-dependent quantizer may fail too (``idempotent``
      would then name the wrong cause).
    - ``indices_roundtrip``: codes_to_indices(indices_to_codes(i)) == i exactly, for indices
      drawn over the whole range (codebook sizes up to 2**62).
    - ``codes_roundtrip``: codes_to_indices(values) == indices and
      indices_to_codes(indices) == values exactly (the values are codewords).
    - ``idempotent``: quantizing the values again gives the same values and indices. The
      values are always re-quantized through the codebook (codes_to_indices then
      indices_to_codes); with ``forward_idempotent`` also through ``forward`` (when its input
      width E is the code's C). Its default
      (None) is the quantizer's own declaration, :attr:`Quantizer.forward_idempotent` (False
      for quantizers whose forward bounds its input by a map that is not the identity on the
      codewords, like FSQ's tanh, so that forward(values) may land on another codeword).
    - ``gradients``: straight-through: values.sum().backward() gives finite, not all-zero
      gradients on the input, of the input's shape.
    - ``parameter_gradients`` (when the quantizer has parameters with ``requires_grad``): in
      train mode, ``loss`` plus a random weighting of the values, backpropagated, gives every
      such parameter a finite, not all-zero gradient (a codebook detached from its own loss,
      which would never train, fails).
    - ``losses``: in train() and eval() mode, ``losses`` (and ``stats``) are dicts of named,
      finite, scalar tensors and ``loss`` is a finite scalar; both modes give the same terms
      with the same values (a term that reads ``self.training`` would silently vanish from a
      fine-tuning loop that forgot ``.train()``: a loaded model is in eval mode).
    - ``inference``: :meth:`Quantizer.quantize` (what tokenize and reconstruct call), under
      ``no_grad``, gives exactly forward's values and indices (same dtypes and shapes), in either
      mode (a stochastic quantizer: eval-mode forward's, in either mode), and leaves its input
      unchanged.
    - ``deterministic``: the same input gives the same values, indices and losses (a failure
      says "non-deterministic" and where the two calls differ).
    - ``bfloat16``: a bfloat16 input gives bfloat16 values and the indices of the float32
      version of the same (bfloat16-representable) input; its values are those codewords
      to bfloat16 precision (a continuous quantizer: the float32 version's values).
    - ``all_zero``: tokens whose channels are all exactly 0 (the whole batch, or some tokens
      among others) give finite codewords and valid indices (codes round-trip) in eval mode,
      and finite losses in training mode (e.g. no 0 / 0 from normalising a zero vector).
    - ``extreme``: inputs of huge magnitude (1e4 up to half the float32 maximum, mixed with
      ordinary values) give finite codewords and valid indices (codes round-trip) in eval mode
      (e.g. no overflow of squared distances into inf / NaN), and finite losses in training
      mode (e.g. no overflow of a squared commitment error).
    - ``input_unchanged``: forward does not modify its input in place (eval and train mode).
    - ``empty``: inputs without tokens ((0, T, C), (B, 0, C)) either raise ValueError /
      TypeError or give empty values and indices of the right shapes and finite losses (not
      the NaN of a mean over nothing), in both modes.
    - ``groups`` (when ``has_groups``): group_indices_to_codes(codes_to_group_indices(values))
      == values.
    - ``state``: an eval-mode ``forward`` and ``quantize`` (in either mode) change no parameter
      or buffer; a training-mode ``forward`` changes only the state the quantizer declares in
      :attr:`Quantizer.updated_state` (an EMA codebook). This holds for every call the kit
      makes: each starts from the state the quantizer was built with (a training-mode call's
      updates are undone before the next call), so the properties above hold for a given state.
    - ``state_roundtrip``: after a few training-mode calls (which update a stateful
      quantizer's state), the state dict, written and read with safetensors, is the same bitwise,
      and a fresh instance (``make()`` again, or a copy of the quantizer as given) that loads it
      gives the same values, indices and losses in eval and training mode, and the same state
      bitwise after a further training-mode call (so the state dict holds all the state that
      updates depend on: a resumed run continues as an uninterrupted one).

    Also checked first (property ``attributes``): ``channels`` equals ``channels``,
    ``input_channels`` is a positive int, ``discrete``, ``stochastic`` and ``has_groups`` are
    bools; a discrete quantizer's ``codebook_size`` is a python int in [1, 2**63] and its
    ``bits_per_token`` a finite number in (0, log2(codebook_size)] (or 0 for a codebook of
    one); a continuous one's ``codebook_size`` and ``bits_per_token`` are None and
    ``has_groups`` False.

    The class's declarations (``loss_terms``, ``check_channels``) are checked by
    :func:`flowmo.testing.check_component`, which runs this too: use it for a registered quantizer.

    Returns ``{property: examples run}``. Restores the module's train/eval mode and its state
    (parameters and buffers as given).
    """
    ck = _Checker("check_quantizer", max_examples)
    st = ck.st
    probe = _QuantizerProbe(ck, make, channels)
    q, C, E, cs, device = probe.q, probe.C, probe.E, probe.cs, probe.device
    discrete, stochastic = probe.discrete, probe.stochastic
    quantize, codewords, to_indices = probe.quantize, probe.codewords, probe.to_indices
    check_output, check_terms = probe.check_output, probe.check_terms
    check_roundtrip, check_codes = probe.check_roundtrip, probe.check_codes
    if forward_idempotent is None:
        forward_idempotent = q.forward_idempotent
    was_training = q.training

    # --- strategies
    index_lists = None if not discrete else st.integers(1, 3).flatmap(
        lambda b: st.integers(1, 4).flatmap(
            lambda t: st.tuples(st.just((b, t)), st.lists(st.integers(0, cs - 1), min_size=b * t, max_size=b * t))))

    sizes = st.tuples(st.integers(1, LARGE[0]), st.integers(1, LARGE[1]))

    def make_input(b: int, t: int, seed: int, scale: float) -> Tensor:
        return torch.randn(b, t, E, generator=_seeded(seed), dtype=torch.float64) * scale

    with_codewords = discrete and E == C  # codewords are inputs only where forward takes the code's width

    @st.composite
    def inputs(draw, scales=(1e-3, 0.1, 1.0, 3.0, 30.0, 1e3), specials=("none", "zeros", "codewords")):
        b, t = draw(sizes)
        g = _seeded(draw(st.integers(0, 2**32 - 1)))
        scale = draw(st.sampled_from(scales))
        z = torch.randn(b, t, E, generator=g, dtype=torch.float64) * scale
        special = draw(st.sampled_from(specials))
        if special == "zeros":  # exact +0 and -0 entries among the others
            mask = torch.rand(b, t, E, generator=g) < 0.5
            sign = torch.rand(b, t, E, generator=g) < 0.5
            z = torch.where(mask, torch.where(sign, 0.0, -0.0).to(z.dtype), z)
        elif special == "codewords" and with_codewords:  # inputs that are codewords already
            idx = torch.randint(0, min(cs, 2**62), (b, t), generator=g)
            z = codewords(idx.to(device)).double().cpu()
        return z.float().to(device)

    large = [make_input(*LARGE, 0, 1.0).float().to(device)]  # the explicit example of every inputs() property

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
        check_roundtrip(quantize(z))

    def p_idempotent(z: Tensor) -> None:
        q.eval()
        out = quantize(z)
        v = out.values.detach()
        again = codewords(to_indices(v))
        if not torch.equal(again.to(v.dtype), v):
            raise AssertionError(f"re-quantizing values through the codebook moved them: {_mismatch(again, v)}")
        if forward_idempotent and E == C:  # forward takes E channels: values (C) are its inputs only when E == C
            out2 = quantize(v.clone(), "forward(values)")
            for what, a, b in (("indices", out2.indices, out.indices), ("values", out2.values.detach(), v)):
                if not torch.equal(a, b):  # batch dependence, which would also show here, was checked before
                    raise AssertionError(
                        f"forward(values) gives other {what}: {_mismatch(a, b)} (if forward is not a projection, "
                        "because it first bounds its input by a map that is not the identity on the codewords as "
                        "FSQ's tanh does, declare forward_idempotent = False on the quantizer class)")

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

    learnable = [(n, p) for n, p in q.named_parameters() if p.requires_grad]

    def p_parameter_gradients(z: Tensor) -> None:
        q.train()
        q.zero_grad(set_to_none=True)
        try:
            out = quantize(z.clone().requires_grad_(True))
            weights = torch.rand(out.values.shape, generator=_seeded(z.numel())).to(out.values.device)
            (out.loss + (out.values.float() * weights).sum()).backward()
            for n, p in learnable:
                if p.grad is None:
                    raise AssertionError(f"the parameter {n!r} gets no gradient from the quantizer's loss or values "
                                         "(detached?): it never trains; compute its loss terms from it, or set "
                                         "requires_grad=False (or register a buffer) if it is updated otherwise")
                if not bool(torch.isfinite(p.grad).all()):
                    raise AssertionError(f"the parameter {n!r} gets a non-finite gradient")
                if not bool((p.grad != 0).any()):
                    raise AssertionError(f"the parameter {n!r} gets an all-zero gradient from the quantizer's loss "
                                         "and values: it never trains")
        finally:
            q.zero_grad(set_to_none=True)

    def p_losses(z: Tensor) -> None:
        outs = {}
        for mode in ("train", "eval"):
            q.train(mode == "train")
            out = outs[mode] = quantize(z)
            check_output(out, z)
            check_terms(out.losses, f"losses ({mode} mode)")
            check_terms(out.stats, f"stats ({mode} mode)")
            total = out.loss
            if not isinstance(total, Tensor) or total.ndim != 0 or not torch.isfinite(total):
                raise AssertionError(f"the loss ({mode} mode) must be a finite scalar, got {total!r}")
        for what in ("losses", "stats"):
            tr, ev = getattr(outs["train"], what), getattr(outs["eval"], what)
            if set(tr) != set(ev) or any(not _same(tr[k], ev[k]) for k in tr):
                shown = ({k: float(v.detach()) for k, v in tr.items()}, {k: float(v.detach()) for k, v in ev.items()})
                raise AssertionError(
                    f"the {what} depend on the module's mode: train mode gives {shown[0]}, eval mode {shown[1]}; "
                    "a term must not read self.training (a loaded model is in eval mode, and a fine-tuning loop "
                    "that forgot .train() would silently train without it)")

    own_quantize = type(q).quantize is not Quantizer.quantize

    def p_inference(z: Tensor) -> None:
        for mode in ("eval", "train"):
            q.train(mode == "train" and not stochastic)  # a stochastic quantizer infers as in eval mode
            full = quantize(z)
            q.train(mode == "train")
            before = z.clone()
            with torch.no_grad():  # as tokenize calls it
                fast = probe.call(q.quantize, z, what="quantize", forward=False)
            if not isinstance(fast, probe.output_type):
                raise AssertionError(f"quantize returned {type(fast).__name__}, not a QuantizerOutput")
            if own_quantize and not torch.equal(z, before):  # the default is forward: input_unchanged's
                raise AssertionError("quantize modified its input in place")
            if not discrete and fast.indices is not None:
                raise AssertionError(f"quantize ({mode} mode) of a continuous quantizer must give indices None")
            for what in ("indices", "values") if discrete else ("values",):
                a, b = getattr(full, what), getattr(fast, what)
                if a.dtype != b.dtype or a.shape != b.shape:
                    raise AssertionError(f"quantize ({mode} mode) gives {what} of dtype {b.dtype} and shape "
                                         f"{tuple(b.shape)} where forward gives {a.dtype} {tuple(a.shape)}")
                if not torch.equal(a, b):
                    ref = "eval-mode forward (a stochastic quantizer infers without sampling)" if stochastic else "forward"
                    raise AssertionError(f"quantize ({mode} mode) gives other {what} than {ref}, which tokenize "
                                         f"and the loss would then disagree on: {_mismatch(a, b)}; override quantize "
                                         "to return those outputs in either mode")

    def p_deterministic(z: Tensor) -> None:
        for mode in ("eval", "train"):
            q.train(mode == "train")
            a, b = quantize(z.clone()), quantize(z.clone())
            where = f"non-deterministic: two {mode}-mode calls on the same input gave different"
            hint = "" if stochastic else ("; a quantizer that samples declares stochastic = True and draw_noise, and "
                                          "samples from forward's noise argument")
            if discrete and not torch.equal(a.indices, b.indices):
                raise AssertionError(f"{where} indices: {_mismatch(a.indices, b.indices)}{hint}")
            if not torch.equal(a.values, b.values):
                raise AssertionError(f"{where} values: {_mismatch(a.values, b.values)}{hint}")
            if set(a.losses) != set(b.losses) or any(not _same(a.losses[k], b.losses[k]) for k in a.losses):
                raise AssertionError(f"{where} losses: {a.losses} vs {b.losses}")

    def p_all_zero(ex) -> None:
        (b, t), seed, whole = ex
        z = torch.randn(b, t, E, generator=_seeded(seed)).to(device)
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
        check_terms(out.losses, f"losses on {what} (train mode)")
        if not torch.isfinite(out.loss):
            raise AssertionError(f"the loss on {what} (train mode) is {float(out.loss)!r}")

    def p_extreme(ex) -> None:
        (b, t), seed, magnitude = ex
        g = _seeded(seed)
        z = torch.randn(b, t, E, generator=g, dtype=torch.float64)
        huge = torch.rand(b, t, E, generator=g) < 0.5
        z = torch.where(huge, torch.sign(z) * magnitude, z).float().to(device)
        q.eval()
        check_codes(quantize(z), z, f"inputs of magnitude {magnitude:.3g}")
        q.train()
        out = quantize(z)
        check_output(out, z)
        check_terms(out.losses, f"losses on inputs of magnitude {magnitude:.3g} (train mode)")
        if not isinstance(out.loss, Tensor) or not bool(torch.isfinite(out.loss)):
            raise AssertionError(f"the loss on inputs of magnitude {magnitude:.3g} (train mode) is {out.loss!r}")

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
            pairs = [("values", together.values[i:i + 1].detach(), alone.values.detach())]
            if discrete:
                pairs.insert(0, ("indices", together.indices[i:i + 1], alone.indices))
            for what, a, b in pairs:
                if not torch.equal(a, b):
                    raise AssertionError(f"sample {i}'s {what} depend on the rest of the batch (eval mode: each "
                                         f"token is quantized on its own): {_mismatch(a, b)}")

    def p_empty() -> None:
        for shape in ((0, 2, E), (2, 0, E), (0, 0, E)):
            z = torch.zeros(shape, device=device)
            for mode in ("eval", "train"):
                q.train(mode == "train")
                try:
                    try:
                        out = quantize(z)
                    except (ValueError, TypeError):
                        continue  # refused with a clear error: fine
                    check_output(out, z)
                    check_terms(out.losses, f"losses ({mode} mode)")
                    if not isinstance(out.loss, Tensor) or not bool(torch.isfinite(out.loss)):
                        raise AssertionError(f"the loss ({mode} mode) is {out.loss!r}")
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
        if not discrete:  # the code itself: the float32 version's, to bfloat16 precision
            vb, vf = ob.values.detach().float(), of.values.detach().float()
            if not torch.allclose(vb, vf, rtol=2**-7, atol=1e-6):
                raise AssertionError(f"bfloat16 values differ from the float32 version's: {_mismatch(vb, vf)}")
            return
        if not torch.equal(ob.indices, of.indices):
            raise AssertionError("bfloat16 input gives other indices than the same values in float32: "
                                 f"{_mismatch(ob.indices, of.indices)}")
        codes = codewords(ob.indices).float()
        vb = ob.values.detach().float()
        if not torch.allclose(vb, codes, rtol=2**-7, atol=1e-6):
            raise AssertionError(f"bfloat16 values are not the codewords of their indices: {_mismatch(vb, codes)}")

    def p_state(z: Tensor) -> None:
        for mode in ("eval", "train"):
            q.train(mode == "train")
            quantize(z)
            with torch.no_grad():
                probe.call(q.quantize, z, what="quantize", forward=False)

    def p_state_roundtrip(seed: int) -> None:
        from safetensors.torch import load as st_load
        from safetensors.torch import save as st_save

        g = _seeded(seed)
        q.train()
        probe.restore()
        for i in range(3):  # the state evolves (each call checked for what it may change)
            z = torch.randn(2, 5, probe.E, generator=g).to(device)
            probe.call(q, z, what=f"training-mode forward {i + 1} of 3", forward=True, restore=False)
        state = {k: v.detach().to("cpu").contiguous().clone() for k, v in q.state_dict().items()}
        read = st_load(st_save(state))
        if set(read) != set(state):
            raise AssertionError(f"the state dict's keys change through safetensors: {sorted(state)} -> {sorted(read)}")
        for k, v in state.items():
            if read[k].dtype != v.dtype or read[k].shape != v.shape or not torch.equal(read[k], v):
                raise AssertionError(f"the state dict's entry {k!r} changes through safetensors")
        other = probe.fresh()
        other.load_state_dict({k: v.to(device) for k, v in read.items()})
        other.to(device)
        z = torch.randn(2, 5, probe.E, generator=g).to(device)
        for mode in ("eval", "train"):
            q.train(mode == "train")
            other.train(mode == "train")
            # a stochastic quantizer gets the same draws in both (training mode samples)
            kw = {"noise": probe.noise(2, 5, seed)} if probe.stochastic and mode == "train" else {}
            a, b = q(z.clone(), **kw), other(z.clone(), **kw)
            where = f"after loading the saved state into a fresh instance, {mode}-mode forward gives other"
            for what in (("indices", "values") if probe.discrete else ("values",)):
                if not torch.equal(getattr(a, what).detach(), getattr(b, what).detach()):
                    raise AssertionError(f"{where} {what}: {_mismatch(getattr(a, what).detach(), getattr(b, what).detach())}")
            if set(a.losses) != set(b.losses) or any(not _same(a.losses[k], b.losses[k]) for k in a.losses):
                raise AssertionError(f"{where} losses: {a.losses} vs {b.losses}")
        mine = {**dict(q.named_parameters()), **dict(q.named_buffers())}
        theirs = {**dict(other.named_parameters()), **dict(other.named_buffers())}
        for k, v in mine.items():
            if k not in theirs or not torch.equal(v.detach(), theirs[k].detach().to(v.device)):
                raise AssertionError(f"after a training-mode forward, the fresh instance that loaded the saved state "
                                     f"has another {k!r}: state that updates depend on is missing from the state dict")
        probe.restore()

    try:
        few = min(max_examples, 10)
        ck.run("output", inputs(), p_output, examples=large)
        ck.run("deterministic", inputs(), p_deterministic, examples=large)
        ck.run("inference", inputs(), p_inference, examples=large)
        ck.run("batch_independent", inputs(), p_batch_independent, examples=large)
        if discrete:
            ck.run("indices_roundtrip", index_lists, p_indices_roundtrip)
            ck.run("codes_roundtrip", inputs(), p_codes_roundtrip, examples=large)
            ck.run("idempotent", inputs(), p_idempotent, examples=large)
        else:
            check_continuous(ck, probe, inputs(), large)
        ck.run("gradients", inputs(scales=(0.1, 0.5, 1.0), specials=("none",)), p_gradients, examples=large)
        if learnable:
            ck.run("parameter_gradients", inputs(scales=(0.1, 0.5, 1.0), specials=("none",)), p_parameter_gradients,
                   max_examples=few, examples=large)
        ck.run("losses", inputs(), p_losses, examples=large)
        ck.run("bfloat16", inputs(), p_bfloat16, examples=large)
        ck.run("all_zero", st.tuples(sizes, st.integers(0, 2**32 - 1), st.booleans()), p_all_zero,
               max_examples=few, examples=[(LARGE, 0, False)])
        magnitudes = st.sampled_from((1e4, 1e8, 1e15, 1e30, float(torch.finfo(torch.float32).max) / 2))
        ck.run("extreme", st.tuples(sizes, st.integers(0, 2**32 - 1), magnitudes), p_extreme,
               examples=[(LARGE, 0, 1e30)])
        ck.run("input_unchanged", inputs(), p_input_unchanged, max_examples=few, examples=large)
        ck.once("empty", p_empty)
        if q.has_groups:
            ck.run("groups", inputs(), p_groups, examples=large)
        check_stochastic(ck, probe, inputs(scales=(0.1, 1.0, 3.0), specials=("none",)), large, few)
        # every call above was checked for the state it changed already: these two add quantize's
        # calls in training mode and the round trip, on a few examples
        ck.run("state", inputs(), p_state, max_examples=min(max_examples, 3), examples=large)
        ck.run("state_roundtrip", st.integers(0, 2**32 - 1), p_state_roundtrip, max_examples=min(max_examples, 2))
    finally:
        probe.restore()
        q.train(was_training)
    return ck.report
