"""Multi-axis rotary position embeddings (RoPE).

Each token has one position per axis; axis a with dim d_a contributes d_a / 2 frequencies
theta^(-2k/d_a). The angles (position x frequency, computed in float64, cast to float32)
rotate consecutive pairs (x[2k], x[2k+1]) of queries and keys.

:class:`RopeTable` caches the rotation tables per (positions key, device): a backbone
computes them once per input shape and device and reuses them in every block and step.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor

from ._checks import check_grid, check_positive_int, check_positive_real, check_table, shape_of

__all__ = ["rope_angles", "rope_freqs", "apply_rope", "RopeTable", "flowmo_positions", "check_axes_dim"]


def check_axes_dim(axes_dim: Any, name: str = "axes_dim") -> tuple[int, ...]:
    """``axes_dim`` as a tuple of positive even ints (each RoPE frequency rotates one channel pair).

    Raises:
        TypeError: not a sequence of ints.
        ValueError: empty, or an entry that is not positive and even.
    """
    if isinstance(axes_dim, (str, bytes)) or not isinstance(axes_dim, Sequence) or len(axes_dim) == 0:
        raise TypeError(f"{name} must be a non-empty sequence of positive even ints, got {axes_dim!r}")
    dims = tuple(check_positive_int(d, f"{name}[{a}]") for a, d in enumerate(axes_dim))
    odd = next((a for a, d in enumerate(dims) if d % 2), None)
    if odd is not None:
        raise ValueError(f"every entry of {name} must be even (rotated in pairs): {name}[{odd}] = {dims[odd]} is odd")
    return dims


def rope_angles(positions: Tensor, axes_dim: Sequence[int], theta: float = 10000.0) -> Tensor:
    """The RoPE angles of every token: position x frequency, axis by axis.

    Args:
        positions: (N, n_axes), one row per token, integer or float positions (FlowMo's come
            from :func:`flowmo_positions`: latent tokens first, then the image tokens).
        axes_dim: channels of the head dim given to each axis, ``len(axes_dim) == n_axes``,
            each positive and even; ``sum(axes_dim)`` is the head dim the table is for.
        theta: the RoPE base (> 0).

    Returns:
        float32 (N, sum(axes_dim) / 2): for axis a, the d_a / 2 frequencies
        theta^(-2k/d_a), k < d_a / 2, times the token's position on that axis, concatenated in
        axis order (computed in float64, then cast; the release's convention, RoFormer eq. 15).

    Raises:
        TypeError / ValueError: ``positions`` not a 2-D tensor with one column per axis, an
            odd or non-positive ``axes_dim`` entry, ``theta`` not > 0.
    """
    dims = check_axes_dim(axes_dim)
    theta = check_positive_real(theta, "theta", "finite and > 0")
    if not isinstance(positions, Tensor) or positions.is_complex() or positions.shape[1:] != (len(dims),):
        raise ValueError(f"positions must have shape (N, n_axes) = (N, {len(dims)}), real, got {shape_of(positions)}")
    pos = positions.to(torch.float64)
    parts = []
    for a, d in enumerate(dims):
        omega = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d)
        parts.append(pos[:, a, None] * omega[None])
    return torch.cat(parts, dim=-1).to(torch.float32)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate pairs (x[2k], x[2k+1]) of every token's channels by that token's angles.

    Args:
        x: queries or keys (..., N, D), D even (FlowMo: (B, H, N, head_dim) over the
            [latent, image] tokens).
        freqs: float32 (N, D/2, 2), the (cos, sin) of the angles from :func:`rope_freqs`; row i
            is token i of ``x``, so the table must cover every token (latent and image).

    Returns:
        (x0 cos - x1 sin, x0 sin + x1 cos) for each pair, shape of ``x``, dtype of ``x`` (the
        rotation is done in float32).

    Eager mode does it as one complex product (one pass over x); under ``torch.compile`` the
    real form is used, since inductor generates no code for complex tensors.

    Any layout works (a transposed or sliced table or x is made contiguous), and an x with
    no tokens (N = 0) or an empty batch gives an empty result of x's shape.

    Raises:
        ValueError: ``freqs`` not float32 (N, D/2, 2) for ``x`` (..., N, D), or on another
            device than ``x``.
    """
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise TypeError(f"x must be a torch.Tensor (..., N, D), got {shape_of(x)}")
    check_table(freqs, "freqs", x.shape[-2], x.shape[-1], None,
                f"x (..., N, D) = {tuple(x.shape)} has head dim D = {x.shape[-1]}", x.device)
    return _rotate(x, freqs)


def _rotate(x: Tensor, freqs: Tensor) -> Tensor:
    """:func:`apply_rope` of arguments already checked."""
    half = x.shape[-1] // 2  # not -1: an x without tokens (N = 0 or B = 0) has no size to infer
    if torch.compiler.is_compiling():
        x0, x1 = x.float().unflatten(-1, (half, 2)).unbind(-1)
        cos, sin = freqs.unbind(-1)
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)
    # view_as_complex needs the pairs adjacent in memory: contiguous() is free when they are
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], half, 2).contiguous())
    return torch.view_as_real(xc * torch.view_as_complex(freqs.contiguous())).flatten(-2).to(x.dtype)


def rope_freqs(angles: Tensor) -> Tensor:
    """Angles (N, D/2) (radians, e.g. from :func:`rope_angles`) -> float32 (N, D/2, 2) of
    (cos, sin), contiguous (so a complex view of it is free); the ``freqs`` of :func:`apply_rope`.

    Raises:
        ValueError: ``angles`` is not a 2-D real tensor.
    """
    if not isinstance(angles, Tensor) or angles.ndim != 2 or angles.is_complex():
        raise ValueError(f"angles must be a real (N, D/2) tensor, got {shape_of(angles)}")
    angles = angles.float()
    return torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1).contiguous()


def flowmo_positions(code_length: int, grid: tuple[int, int], device: Optional[torch.device] = None) -> Tensor:
    """FlowMo's 3-axis token positions, in the order the blocks attend over: [latent, image].

    Args:
        code_length: T, the number of latent tokens (>= 0).
        grid: (rows, cols) of the image patches (image height / patch size, width / patch size):
            the grid :func:`~flowmo.blocks.patchify` cut (nothing here can check it against
            the image).
        device: where to build the positions.

    Returns:
        int64 (T + rows * cols, 3): latent token i -> (i, i, i) for i < T, then image patch
        (r, c) -> (0, r, c) in row-major order (the order :func:`~flowmo.blocks.patchify`
        gives), as in the release.

    Raises:
        TypeError / ValueError: ``code_length`` not an int >= 0, ``grid`` not two positive ints.
    """
    code_length = check_positive_int(code_length, "code_length", minimum=0)
    gh, gw = check_grid(grid)
    i = torch.arange(code_length, device=device)
    latent = torch.stack((i, i, i), dim=-1)
    rr, cc = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    image = torch.stack((torch.zeros_like(rr), rr, cc), dim=-1).reshape(-1, 3)
    return torch.cat((latent, image), dim=0)


class RopeTable:
    """Caches RoPE tables (N, D/2, 2) by a hashable key and device; counts how many it built.

    Args:
        axes_dim: head-dim channels per position axis (positive, even; sum = head dim).
        theta: the RoPE base (> 0).
        max_entries: tables kept; the oldest is dropped beyond it.

    ``get(key, device, make_positions)`` returns the cached table for ``(key, device)``, or
    builds it from ``make_positions(cpu_device)`` -> positions (N, len(axes_dim)) (float64
    angles on the CPU, then float32 on ``device``).
    """

    def __init__(self, axes_dim: Sequence[int], theta: float = 10000.0, max_entries: int = 16):
        self.axes_dim = check_axes_dim(axes_dim)
        self.theta = check_positive_real(theta, "theta", "finite and > 0")
        self.max_entries = check_positive_int(max_entries, "max_entries")
        self.builds = 0
        self._cache: dict[tuple[Hashable, str], Tensor] = {}

    def get(self, key: Hashable, device: torch.device, make_positions: Callable[[torch.device], Tensor]) -> Tensor:
        """The float32 table (N, sum(axes_dim) / 2, 2) for ``key`` on ``device`` (see the class)."""
        ck = (key, str(device))
        hit = self._cache.get(ck)
        if hit is None:
            # float64 on the CPU (not every device has float64), then float32 on ``device``; outside
            # inference mode, so that a table first built under torch.inference_mode serves training too
            with torch.inference_mode(False):
                angles = rope_angles(make_positions(torch.device("cpu")), self.axes_dim, self.theta)
                hit = rope_freqs(angles).to(device)
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            self._cache[ck] = hit
            self.builds += 1
        return hit

    def clear(self) -> None:
        """Drop every cached table."""
        self._cache.clear()
