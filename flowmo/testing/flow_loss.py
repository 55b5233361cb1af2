"""The check for the flow-loss kind: :func:`check_flow_loss`."""

from __future__ import annotations

from typing import Any, Optional

import torch

from .checker import _Checker, _instance, _seeded
from .loss_harness import _backward, _check_terms, _check_velocity_grads, _loss_inputs, _same_terms, _ToyDecoder


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
    - ``drawn_dropout``: where the loss draws its dropout beforehand (``draw_dropout`` does not
      return None), ``dropout=<its draw>`` gives the terms of ``dropout=True`` with a generator
      in the same state (what a compiled training step relies on).

    Returns ``{property: examples run}``.
    """
    from ..losses.flow import FlowLoss

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

    def p_drawn_dropout(ex) -> None:
        batch, seed, t_kind, _ = ex
        drawn = fn.draw_dropout(batch, _seeded(seed))
        if drawn is None:
            return
        a, _ = run((batch, seed, t_kind, True))
        x, cond = _loss_inputs(seed, batch, image_size, code_shape)
        g = _seeded(seed + 1)
        t = {"random": torch.rand(batch, generator=g), "zero": torch.zeros(batch), "one": torch.ones(batch)}[t_kind]
        noise = torch.randn(x.shape, generator=g)
        b = fn(_ToyDecoder(x.shape, cond.shape, "flow loss"), x, cond, t, noise, dropout=drawn, generator=None)
        _same_terms(a, _check_terms(b, "the flow loss"), "dropout=True and dropout=draw_dropout(...) of the same generator")

    ck.run("terms", examples, p_terms)
    ck.run("gradients", examples, p_gradients)
    ck.run("deterministic", examples, p_deterministic)
    ck.run("drawn_dropout", examples, p_drawn_dropout)
    return ck.report
