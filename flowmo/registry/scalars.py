"""Strict scalar field types of the specs (:data:`SpecInt`, :data:`SpecFloat`, :data:`SpecBool`) and
the ranges of the spec fields.

pydantic's lax mode turns True into 1, "3" / " 4 " / "1_000" into ints, "no" / "off" / 0 into
False and "1e-3" / True into floats. A config override like ``freeze_encoder_at=false`` would then
silently mean 0. The field types below refuse booleans and strings where a number is expected
and accept only real booleans where a boolean is expected. Integer fields accept ints (numpy ints
too) and floats with an integral value (1.0, 1e5: what YAML gives for ``1e5``); 1.5 is refused.
Float fields accept ints and floats. User component specs may use them too.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Callable

from pydantic import BeforeValidator


def _is_bool_scalar(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ in ("bool_", "bool") and type(v).__module__ == "numpy"


def is_bool(v: Any) -> bool:
    """A boolean: python's, numpy's, or an array / tensor of booleans (``torch.tensor(True)``)."""
    return _is_bool_scalar(v) or _is_array(v) and str(v.dtype) in ("torch.bool", "bool")


def _is_array(v: Any) -> bool:
    """A torch tensor or numpy array (duck-typed: ``dtype``, ``shape`` and ``item``)."""
    return not isinstance(v, (int, float, str, bytes)) and all(hasattr(v, a) for a in ("dtype", "shape", "item"))


def _bool_hint(v: Any) -> str:
    return f"got the boolean {v!r} (a boolean is not a number: write a number, or null where the field accepts none)"


def _is_quoted_number(v: Any) -> bool:
    """A string (or bytes) holding a finite number, e.g. ``"3"`` or ``"1e-3"`` (a number written in quotes)."""
    try:
        return math.isfinite(float(v.decode() if isinstance(v, bytes) else v))
    except (ValueError, UnicodeDecodeError):
        return False


def _refuse_bool_and_str(v: Any, expected: str) -> Any:
    if is_bool(v):
        raise ValueError(f"expected {expected}, {_bool_hint(v)}")
    if isinstance(v, (str, bytes)):
        hint = " (write the number without quotes)" if _is_quoted_number(v) else ""
        raise ValueError(f"expected {expected}, got the string {v!r}{hint}")
    if _is_array(v):  # a 0-d tensor / array holds one number; anything larger is not a number
        if tuple(v.shape) != ():
            raise ValueError(f"expected {expected}, got a {type(v).__name__} of shape {tuple(v.shape)}")
        return _refuse_bool_and_str(v.item(), expected)
    return v


def _strict_int(v: Any) -> Any:
    return _refuse_bool_and_str(v, "an integer")


def _strict_float(v: Any) -> Any:
    return _refuse_bool_and_str(v, "a number")


def _strict_bool(v: Any) -> Any:
    if _is_bool_scalar(v):
        return bool(v)
    raise ValueError(f"expected true or false, got {type(v).__name__} {v!r}")


def strict_literal(values: tuple) -> Callable[[Any], Any]:
    """A before-validator for a Literal of numbers: a boolean is not 1 / 0 (unless listed), and a
    string is not a number (unless strings are listed). A spec derived from a factory's arguments
    uses it for ``Literal[...]`` annotations holding ints (see :mod:`flowmo.registry.derive`)."""
    expected = "an integer" if all(isinstance(v, int) for v in values if not isinstance(v, (str, type(None)))) \
        else "a number"

    def check(v: Any) -> Any:
        listed = (is_bool(v) and any(isinstance(x, bool) and x == bool(v) for x in values)
                  or isinstance(v, (str, bytes)) and any(isinstance(x, str) for x in values))
        return v if listed or not (is_bool(v) or isinstance(v, (str, bytes))) else _refuse_bool_and_str(v, expected)

    return check


SpecInt = Annotated[int, BeforeValidator(_strict_int)]
"""An int field refusing booleans and strings (see the note above)."""
SpecFloat = Annotated[float, BeforeValidator(_strict_float)]
"""A float field refusing booleans and strings (ints are accepted)."""
SpecBool = Annotated[bool, BeforeValidator(_strict_bool)]
"""A bool field accepting only true/false (not 0/1, "no", "off", ...)."""

# Upper bounds of size fields: far beyond any real model, low enough that a typo (2**63) is
# refused at validation instead of overflowing torch's int64 shapes or exhausting memory.
MAX_IMAGE_SIZE = 2**16
"""Largest image_size / patch_size (pixels per side)."""
MAX_TOKENS = 2**16
"""Largest code_length and code_channels."""
MAX_WIDTH = 2**16
"""Largest backbone width (and heads)."""
MAX_DEPTH = 1024
"""Most blocks in a backbone."""
MAX_MLP_RATIO = 64.0
"""Largest backbone mlp_ratio."""
MAX_SAMPLER_STEPS = 2**16
"""Most sampler (ODE) steps of one decode."""
MAX_CHAIN_STEPS = 1024
"""Most Euler steps in the mode-seeking chain (each keeps its activations for the backward)."""

# Ranges of fields whose extreme values give NaN or a degenerate model/grid (the release's values
# are well inside: time_factor 1000, rope_theta 10000, attn_scale 8 / head_dim, pow p 0.25).
MAX_TIME_FACTOR = 1e6
"""Largest time_factor: t * time_factor * frequency must stay far from float32 overflow (cos(inf) = NaN)."""
ROPE_THETA_RANGE = (1.0, 1e9)
"""rope_theta range: >= 1 keeps every RoPE frequency theta ** (-2k / d) <= 1 radian per position
(a tiny theta overflows the angles to inf and the rotation to NaN)."""
MAX_ATTN_SCALE = 100.0
"""Largest numeric attn_scale (the release's 'mup' is 8 / head_dim; 'standard' is head_dim ** -0.5)."""
POW_P_RANGE = (0.05, 20.0)
"""pow grid exponent range: outside it (k / n) ** (1 / p) underflows to 0 or rounds to 1 for
neighbouring steps, so the grid is no longer strictly decreasing at large step counts."""
SHIFT_RANGE = (1e-3, 1e3)
"""shifted grid ``shift`` range."""
