"""The encoder forward, the decoder forward and the quantizer (with its losses) compile as one
graph each: torch.compile(fullgraph=True) succeeds, torch._dynamo.explain finds no graph break,
and the compiled outputs equal eager's within float tolerance (1e-5).

The public methods check their inputs' values first (a host sync, outside the graph); what is
compiled is the work after those checks: ``model._encode`` (images -> code),
``model.decoder_velocity`` (x_t, t, cond -> v) and ``model.quantize`` (code -> values, indices,
losses). The graph-break checks use the ``aot_eager`` backend (dynamo's tracing plus AOT
autograd, seconds on the CPU); one test runs inductor (C++ code generation with gcc), on the
quantizer, the smallest graph: the Stage 1A loss compiles its entropy terms with it (the
blocks under inductor: tests/test_performance_paths.py, ``FlowMo.compile``).
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo

import flowmo

TOL = 1e-5


@pytest.fixture(scope="module")
def model() -> flowmo.FlowMo:
    torch.manual_seed(0)
    return flowmo.FlowMo(flowmo.get_preset("tiny"))


def _inputs(model: flowmo.FlowMo, b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(b, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        code = model._encode(images)
    return {"images": images, "code": code, "cond": model.conditioning(model.quantize(code).values),
            "x_t": torch.randn(b, 3, 32, 32, generator=g), "t": torch.rand(b, generator=g)}


PATHS = {  # name -> (the function of the model, its arguments from _inputs)
    "encoder": (lambda m: m._encode, ("images",)),
    "decoder": (lambda m: m.decoder_velocity, ("x_t", "t", "cond")),
    "quantizer": (lambda m: m.quantize, ("code",)),
    "quantizer-inference": (lambda m: lambda code: m.quantize(code, losses=False), ("code",)),
}


def _flat(out) -> list[torch.Tensor]:
    """A tensor, or a QuantizerOutput's values, indices and losses, as a list."""
    if isinstance(out, torch.Tensor):
        return [out]
    return [out.values, out.indices, *(out.losses[k] for k in sorted(out.losses))]


def _assert_close(got, expected, what: str) -> None:
    for a, b in zip(_flat(got), _flat(expected), strict=True):
        a, b = a.detach(), b.detach()
        if a.is_floating_point():
            err = float((a - b).abs().max()) if a.numel() else 0.0
            assert err <= TOL * max(1.0, float(b.abs().max())), f"{what}: compiled differs from eager by {err:.3g}"
        else:
            assert torch.equal(a, b), f"{what}: compiled indices differ from eager's"


@pytest.mark.parametrize("path", sorted(PATHS))
def test_the_forward_has_no_graph_break(model, path):
    """(In training mode, fullgraph=True below fails on any break.)"""
    fn, names = PATHS[path]
    model.eval()
    args = [_inputs(model, 2)[n] for n in names]
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn(model))(*args)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, (
        f"{path}: {explained.graph_count} graphs, breaks: "
        f"{sorted({b.reason.splitlines()[0] for b in explained.break_reasons})}")


@pytest.mark.parametrize("path", sorted(PATHS))
def test_fullgraph_compile_equals_eager_in_training_with_gradients_and_another_batch(model, path):
    """Trained through (autograd on; the quantizer's losses backpropagate) and called with a
    second batch size (a recompile with a dynamic batch, still one graph)."""
    fn, names = PATHS[path]
    model.train()
    torch._dynamo.reset()
    compiled = torch.compile(fn(model), fullgraph=True, backend="aot_eager")
    for b in (2, 3):
        inputs = _inputs(model, b, seed=b)
        args = [inputs[n].requires_grad_() if inputs[n].is_floating_point() else inputs[n] for n in names]
        got, expected = compiled(*args), fn(model)(*args)
        _assert_close(got, expected, f"{path}, batch {b}")
        total = _flat(got)[0].sum() + (got.loss if path == "quantizer" else 0)
        grads = torch.autograd.grad(total, args[0])
        assert torch.isfinite(grads[0]).all()


@pytest.mark.parametrize("path", sorted(PATHS))
def test_fullgraph_compile_equals_eager_for_inference(model, path):
    fn, names = PATHS[path]
    model.eval()
    args = [_inputs(model, 2)[n] for n in names]
    torch._dynamo.reset()
    with torch.no_grad():
        _assert_close(torch.compile(fn(model), fullgraph=True, backend="aot_eager")(*args), fn(model)(*args), path)


def test_the_quantizer_with_its_losses_compiles_with_inductor(model):
    model.train()
    code = _inputs(model, 2)["code"].requires_grad_()
    torch._dynamo.reset()
    compiled = torch.compile(model.quantize, fullgraph=True, backend="inductor")
    got, expected = compiled(code), model.quantize(code)
    _assert_close(got, expected, "quantizer (inductor)")
    assert sorted(got.losses) == ["commitment", "entropy"]
    (g,) = torch.autograd.grad(got.loss, code)
    (e,) = torch.autograd.grad(expected.loss, code)
    torch.testing.assert_close(g, e, rtol=TOL, atol=TOL)
