"""Patch and time embeddings."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["patchify", "unpatchify", "timestep_embedding", "TimeEmbedding"]


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """(B, C, gh*p, gw*p) -> (B, gh*gw, p*p*C), channels last inside a patch (the release's layout)."""
    b, c, h, w = images.shape
    p = patch_size
    x = images.reshape(b, c, h // p, p, w // p, p)  # b c gh ph gw pw
    x = x.permute(0, 2, 4, 3, 5, 1)  # b gh gw ph pw c
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(tokens: Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`: (B, gh*gw, p*p*C) -> (B, C, gh*p, gw*p)."""
    b = tokens.shape[0]
    gh, gw = grid
    p = patch_size
    x = tokens.reshape(b, gh, gw, p, p, channels)  # b gh gw ph pw c
    x = x.permute(0, 5, 1, 3, 2, 4)  # b c gh ph gw pw
    return x.reshape(b, channels, gh * p, gw * p)


def timestep_embedding(t: Tensor, dim: int = 256, time_factor: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of ``time_factor * t``: [cos(all), sin(all)], frequencies max_period^(-k/half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (time_factor * t).float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """t -> sinusoidal(256) -> Linear -> SiLU -> Linear (keys ``in_layer``, ``out_layer``)."""

    def __init__(self, hidden: int, freq_dim: int = 256, time_factor: float = 1000.0):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_factor = time_factor
        self.in_layer = nn.Linear(freq_dim, hidden)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, t: Tensor) -> Tensor:
        emb = timestep_embedding(t, self.freq_dim, self.time_factor).to(self.in_layer.weight.dtype)
        return self.out_layer(self.silu(self.in_layer(emb)))
