"""Checking a state dict against a model's expected keys and shapes, with one clear error; the
digest of a model's weights (:func:`weights_digest`)."""

from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["StateDictMismatchError", "check_state_dict", "check_finite", "weights_digest", "token_weights_digest",
           "makes_the_same_tokens"]


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
    parts = _differences(expected, got)
    if parts:
        raise StateDictMismatchError(f"{source} does not fit the model: " + "; ".join(parts))


def _differences(expected: Mapping[str, Sequence[int]], got: Mapping[str, object]) -> list[str]:
    """How ``got`` (key -> tensor) differs from ``expected`` (key -> shape), in words: its missing
    keys, its unexpected keys and its shape mismatches (each part present only if non-empty)."""
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: expected {tuple(expected[k])}, got {tuple(getattr(got[k], 'shape', ()))}"
              for k in expected if k in got and tuple(getattr(got[k], "shape", ())) != tuple(expected[k])]
    return [f"{len(keys)} {what}: {text}" for what, keys, text in (
        ("missing key(s)", missing, _fmt(missing)), ("unexpected key(s)", unexpected, _fmt(unexpected)),
        ("shape mismatch(es)", shapes, "; ".join(shapes[:8]))) if keys]


def check_finite(state: Mapping[str, object], source: str) -> None:
    """Raise StateDictMismatchError naming the tensors of ``state`` that hold NaN or Inf values
    (a trained model has none; a damaged file may)."""
    import torch

    bad = [k for k, v in state.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise StateDictMismatchError(f"{source} holds non-finite values (NaN or Inf) in {len(bad)} tensor(s): {_fmt(bad)}")


def weights_digest(model: object) -> str:
    """The SHA-256 digest of a model's weights: 64 lowercase hex characters.

    Two tokenizers of the same spec (the same :meth:`flowmo.FlowMoSpec.fingerprint`) but other
    weights (retrained, re-initialised) make other tokens; this digest tells them apart. It is
    recorded by ``flowmo tokenize`` (token sets and token files: ``tokenizer_weights``) and by the
    generators trained on their tokens, and checked before decoding them.

    Args:
        model: a ``torch.nn.Module`` (its ``state_dict()``: parameters and persistent buffers) or a
            mapping name -> tensor (a state dict). Tensors may live on any device; they are copied
            to the CPU one at a time.
    Returns:
        ``hashlib.sha256`` over the entries sorted by name, each fed as the UTF-8 bytes of
        ``f"{name}\\0{dtype}\\0{shape}\\0{nbytes}\\0"`` (``dtype`` as ``str(tensor.dtype)``,
        e.g. ``torch.float32``; ``shape`` as ``",".join`` of the sizes; ``nbytes`` the data's byte
        count) followed by the tensor's data in C order, native (little-endian) byte order.
        So the digest depends on every value, name, dtype and shape, not on the device, the key
        order or ``requires_grad``; the same weights in another dtype (a bfloat16 copy of float32
        weights) are other weights. Non-tensor entries (a module's ``_extra_state``) are skipped.
    Raises:
        TypeError: ``model`` is neither a module nor a mapping.
    """
    import hashlib

    import torch

    state = _state_of(model)
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().to("cpu").contiguous()
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        h.update(f"{name}\0{t.dtype}\0{','.join(map(str, t.shape))}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def token_weights_digest(model: object) -> str:
    """:func:`weights_digest` of the weights that make a tokenizer's tokens: every entry of the
    state dict but the decoder's (``decoder.*``), i.e. the encoder and the quantizer.

    Post-training that freezes the encoder and quantizer (Stage 1B, a few-step decoder) keeps
    this digest, so token files, token sets and generators recorded with it stay valid for the
    fine-tuned model; a retrained or re-initialised encoder changes it. ``flowmo tokenize``
    records it (``tokenizer_weights``). Arguments and errors as :func:`weights_digest`.
    """
    return weights_digest({k: v for k, v in _state_of(model).items() if not k.startswith("decoder.")})


def _state_of(model: object) -> Mapping:
    """``model``'s state dict (a module's ``state_dict()``, a mapping as it is); TypeError otherwise."""
    import torch

    if isinstance(model, torch.nn.Module):
        return model.state_dict()
    if not isinstance(model, Mapping):
        raise TypeError(f"model must be a torch.nn.Module or a state dict (a mapping), got {type(model).__name__}")
    return model


def makes_the_same_tokens(recorded: str, model: object) -> bool:
    """Whether ``model`` makes the tokens a file recorded with the digest ``recorded``: it equals
    the model's :func:`token_weights_digest` (what ``flowmo tokenize`` records), or its whole
    :func:`weights_digest` (what files written before the token digest existed record)."""
    return recorded in (token_weights_digest(model), weights_digest(model))
