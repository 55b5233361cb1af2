"""The check for the backbone kind: :func:`check_backbone`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checker import _Checker, _instance, _mismatch, _seeded, _shape


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
    from ..blocks.base import Backbone

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
