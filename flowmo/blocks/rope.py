"""Multi-axis rotary position embeddings (RoPE).

Each token has one position per axis; axis a with dim d_a contributes d_a / 2 frequencies
theta^(-2k/d_a). The angles (position x frequency, computed in float64, cast to float32)
rotate consecutive pairs (x[2k], x[2k+1]) of queries and keys.

:class:`RopeTable` caches the rotation tables per (positions key, device): a backbone
computes them once per input shape and device and reuses them in every block and step.
"""

from __future__ import annotations

from typing import Hashable

import torch
from torch import Tensor

__all__ = ["rope_angles", "rope_freqs", "apply_rope", "RopeTable", "flowmo_positions"]


def rope_angles(positions: Tensor, axes_dim: tuple[int, ...], theta: float = 10000.0) -> Tensor:
    """positions (N, n_axes) -> angles (N, sum(axes_dim) / 2), float32 (computed in float64)."""
    if positions.shape[-1] != len(axes_dim):
        raise ValueError(f"positions has {positions.shape[-1]} axes but axes_dim has {len(axes_dim)}")
    pos = positions.to(torch.float64)
    parts = []
    for a, d in enumerate(axes_dim):
        omega = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64, device=pos.device) / d)
        parts.append(pos[:, a, None] * omega[None])
    return torch.cat(parts, dim=-1).to(torch.float32)


def apply_rope(x: Tensor, freqs: Tensor) -> Tensor:
    """Rotate pairs (x[2k], x[2k+1]) of x (..., N, D) by the angles whose cosines and sines
    ``freqs`` holds as (N, D/2, 2): (x0 cos - x1 sin, x0 sin + x1 cos).

    Eager mode does it as one complex product (one pass over x); under ``torch.compile`` the
    real form is used, since inductor generates no code for complex tensors. The rotation is
    done in float32 and the result cast back to x's dtype.
    """
    if freqs.shape[-1] != 2 or freqs.shape[-2] * 2 != x.shape[-1] or freqs.dtype != torch.float32:
        raise ValueError(f"freqs must be float32 (N, {x.shape[-1] // 2}, 2) for x (..., N, {x.shape[-1]}), "
                         f"got {freqs.dtype} {tuple(freqs.shape)}")
    if torch.compiler.is_compiling():
        x0, x1 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
        cos, sin = freqs.unbind(-1)
        return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2).to(x.dtype)
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * torch.view_as_complex(freqs)).flatten(-2).to(x.dtype)


def rope_freqs(angles: Tensor) -> Tensor:
    """Angles (N, D/2) -> float32 (N, D/2, 2) of (cos, sin), contiguous (a complex view is free)."""
    return torch.stack((torch.cos(angles), torch.sin(angles)), dim=-1).contiguous()


def flowmo_positions(code_length: int, grid: tuple[int, int], device: torch.device | None = None) -> Tensor:
    """FlowMo's 3-axis positions, latent tokens first: latent i -> (i, i, i); image (r, c) -> (0, r, c)."""
    gh, gw = grid
    i = torch.arange(code_length, device=device)
    latent = torch.stack((i, i, i), dim=-1)
    rr, cc = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    image = torch.stack((torch.zeros_like(rr), rr, cc), dim=-1).reshape(-1, 3)
    return torch.cat((latent, image), dim=0)


class RopeTable:
    """Caches rotation tables (N, D/2, 2) by a hashable key and device; counts how many it built."""

    def __init__(self, axes_dim: tuple[int, ...], theta: float = 10000.0, max_entries: int = 16):
        self.axes_dim = tuple(axes_dim)
        self.theta = theta
        self.max_entries = max_entries
        self.builds = 0
        self._cache: dict[tuple[Hashable, str], Tensor] = {}

    def get(self, key: Hashable, device: torch.device, make_positions) -> Tensor:
        ck = (key, str(device))
        hit = self._cache.get(ck)
        if hit is None:
            # float64 on the CPU (not every device has float64), then float32 on ``device``
            angles = rope_angles(make_positions(torch.device("cpu")), self.axes_dim, self.theta)
            hit = rope_freqs(angles).to(device)
            if len(self._cache) >= self.max_entries:
                self._cache.pop(next(iter(self._cache)))
            self._cache[ck] = hit
            self.builds += 1
        return hit

    def clear(self) -> None:
        self._cache.clear()
