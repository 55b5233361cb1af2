"""The check for the post-training-objective kind: :func:`check_posttrain`."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from .checker import _Checker, _instance, _seeded
from .loss_harness import _backward, _check_terms, _check_velocity_grads, _loss_inputs, _same_terms, _ToyDecoder


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
    - for an objective with ``needs_teacher`` (a bool): it is given ``teacher=``, a second
      stand-in decoder, and ``gradients`` also checks that no gradient reaches the teacher
      (it is frozen in training) and that the terms depend on it.
    - ``preset``: ``sampler_preset()`` returns None or ``(name, SamplerSpec)`` with a name a
      model's ``sampler_presets`` accepts (not a global preset's name).
    - with a teacher, ``gradients`` also checks that the objective leaves the teacher's weights
      as they were.

    Returns ``{property: examples run}``.
    """
    from ..losses.posttrain import PosttrainObjective

    ck = _Checker("check_posttrain", max_examples)
    st = ck.st
    obj = _instance(objective, PosttrainObjective, "check_posttrain")
    if not isinstance(obj.checkpoints_decoder, bool):
        ck.fail("attributes", f"checkpoints_decoder must be a bool, got {obj.checkpoints_decoder!r}")
    if not isinstance(obj.needs_teacher, bool):
        ck.fail("attributes", f"needs_teacher must be a bool, got {obj.needs_teacher!r}")
    _check_preset(ck, obj)
    examples = st.tuples(st.integers(1, 3), st.integers(0, 2**32 - 1))

    def run(ex, noise: Optional[Tensor] = None, teacher_abc=(0.1, 0.4, -0.3)):
        batch, seed = ex
        x, cond = _loss_inputs(seed, batch, image_size, code_shape)
        dec = _ToyDecoder(x.shape, cond.shape, "post-training objective")
        kw = {}
        if obj.needs_teacher:
            kw["teacher"] = run.teacher = _ToyDecoder(x.shape, cond.shape, "post-training objective's teacher",
                                                      any_batch=True, abc=teacher_abc)
        terms = obj(dec, x, cond, noise=noise, generator=_seeded(seed), **kw)
        return _check_terms(terms, "the post-training objective"), dec, x

    def p_terms(ex) -> None:
        _, dec, _ = run(ex)
        if dec.calls == 0:
            raise AssertionError("the post-training objective never called the velocity")

    def p_gradients(ex) -> None:
        terms, dec, _ = run(ex)
        _backward(terms, "the post-training objective")
        _check_velocity_grads(dec, "the post-training objective")
        if obj.needs_teacher:
            if not all(torch.equal(p.detach(), torch.tensor(v)) for p, v in zip(run.teacher.parameters(),
                                                                                  (0.1, 0.4, -0.3))):
                raise AssertionError("the post-training objective changed the teacher's weights (the teacher is "
                                     "frozen: it must only be called)")
            if any(p.grad is not None and bool(p.grad.any()) for p in run.teacher.parameters()):
                raise AssertionError("the post-training objective sends gradients into the teacher (it must run "
                                     "the teacher without autograd: the teacher is frozen)")
            if run.teacher.calls == 0:
                raise AssertionError("the post-training objective needs_teacher but never called the teacher")
            other, _, _ = run(ex, teacher_abc=(-0.2, 0.1, 0.6))
            if all(torch.equal(terms[k].detach(), other[k].detach()) for k in terms if k in other):
                raise AssertionError("two different teachers gave the same terms: the teacher is not used")

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


def _check_preset(ck, obj) -> None:
    """``sampler_preset()`` returns None or (a preset name FlowMoSpec accepts, a SamplerSpec)."""
    from ..losses.posttrain import check_sampler_preset

    try:
        check_sampler_preset(obj.sampler_preset())
    except (TypeError, ValueError) as e:
        ck.fail("preset", str(e))
