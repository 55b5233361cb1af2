"""Checking a state dict against a model's expected keys and shapes, with one clear error."""

from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["StateDictMismatchError", "check_state_dict", "check_finite"]


class StateDictMismatchError(ValueError):
    """A weight file does not fit the model: missing, unexpected or mis-shaped tensors."""


def _fmt(keys: Sequence[str], limit: int = 8) -> str:
    keys = sorted(keys)
    more = f" ... and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(expected: Mapping[str, Sequence[int]], got: Mapping[str, object], source: str) -> None:
    """Raise StateDictMismatchError unless ``got`` has exactly the keys and shapes of ``expected``.

    ``expected`` maps key -> shape; ``got`` maps key -> tensor (anything with ``.shape``).
    """
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k}: expected {tuple(expected[k])}, got {tuple(got[k].shape)}"  # type: ignore[attr-defined]
        for k in expected
        if k in got and tuple(getattr(got[k], "shape", ())) != tuple(expected[k])
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_fmt(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_fmt(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:8])}")
        raise StateDictMismatchError(f"{source} does not fit the model: " + "; ".join(parts))


def check_finite(state: Mapping[str, object], source: str) -> None:
    """Raise StateDictMismatchError naming the tensors of ``state`` that hold NaN or Inf values
    (a trained model has none; a damaged file may)."""
    import torch

    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise StateDictMismatchError(f"{source} holds non-finite values (NaN or Inf) in {len(bad)} tensor(s): {_fmt(bad)}")
