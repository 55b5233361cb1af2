"""The check for the perceptual-distance kind: :func:`check_distance`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .checker import _Checker, _instance, _mismatch, _seeded


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
    from ..losses.perceptual import PerceptualDistance

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
