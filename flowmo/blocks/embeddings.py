"""Patch and time embeddings."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn

from ._checks import check_grid, check_positive_int, check_positive_real, check_tensor

__all__ = ["patchify", "unpatchify", "timestep_embedding", "TimeEmbedding"]


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping patches, one token per patch.

    Args:
        images: (B, C, H, W), H and W multiples of ``patch_size``.
        patch_size: p, the patch side in pixels (>= 1).

    Returns:
        (B, rows * cols, p * p * C) with grid ``(rows, cols) = (H / p, W / p)``: tokens in
        row-major order over the grid (the order :func:`~flowmo.blocks.flowmo_positions`
        gives image tokens), channels last inside a patch (``b c (gh ph) (gw pw) -> b (gh gw)
        (ph pw c)``, the release's layout).

    Raises:
        TypeError / ValueError: ``images`` not a 4-D tensor, ``patch_size`` not a positive int,
            H or W not a multiple of it.
    """
    p = check_positive_int(patch_size, "patch_size")
    h, w = check_tensor(images, "images", "(B, C, H, W)", 4, floating=False).shape[-2:]
    if h % p or w % p:
        raise ValueError(f"images of size H x W = {h} x {w} do not split into {p} x {p} patches (patch_size = {p})")
    return rearrange(images, "b c (gh ph) (gw pw) -> b (gh gw) (ph pw c)", ph=p, pw=p)


def unpatchify(tokens: Tensor, patch_size: int, grid: tuple[int, int], channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`: put patch tokens back into images.

    Args:
        tokens: (B, rows * cols, p * p * channels), row-major over the grid, channels last
            inside a patch.
        patch_size: p (>= 1).
        grid: (rows, cols) of the patches, i.e. (H / p, W / p) of the image to rebuild. Only
            rows * cols = N is checked (the tokens do not record the image's shape): a grid of
            the right count but another shape, (4, 16) for an 8 x 8 grid, rebuilds a 16 x 64
            image from the wrong patches.
        channels: C, the image channels (3 for RGB).

    Returns:
        (B, C, rows * p, cols * p).

    Raises:
        TypeError / ValueError: ``tokens`` not a 3-D tensor; ``grid`` not two positive ints or
            rows * cols not the number of tokens; the token size not p * p * channels.
    """
    p = check_positive_int(patch_size, "patch_size")
    c = check_positive_int(channels, "channels")
    gh, gw = check_grid(grid)
    check_tensor(tokens, "tokens", "(B, N, p*p*C)", 3, floating=False)
    if tokens.shape[1] != gh * gw:
        raise ValueError(f"grid (rows, cols) = ({gh}, {gw}) has {gh * gw} patches but tokens has {tokens.shape[1]}")
    if tokens.shape[2] != p * p * c:
        raise ValueError(f"tokens must have p * p * channels = {p} * {p} * {c} = {p * p * c} values per token, "
                         f"got {tokens.shape[2]}")
    return rearrange(tokens, "b (gh gw) (ph pw c) -> b c (gh ph) (gw pw)", gh=gh, gw=gw, ph=p, pw=p, c=c)


def timestep_embedding(t: Tensor, dim: int = 256, time_factor: float = 1000.0, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of flow times (the release's, after DiT / Flux).

    Args:
        t: (B,) flow times, t in [0, 1] (t = 0 data, t = 1 noise); values are not checked here.
        dim: embedding size (an odd ``dim`` gets one zero column at the end).
        time_factor: t is multiplied by this first (1000: t in [0, 1] is seen as [0, 1000]).
        max_period: the longest period; the frequencies are max_period^(-k / (dim // 2)).

    Returns:
        float32 (B, dim): [cos(time_factor t f_k) for all k, sin(time_factor t f_k) for all k].

    Raises:
        TypeError / ValueError: ``t`` not a real 1-D tensor, ``dim`` not an int >= 2 (one
            cos/sin pair), ``time_factor`` or ``max_period`` not a finite number > 0.
    """
    _check_times(t)
    dim = check_positive_int(dim, "dim", minimum=2)
    time_factor = check_positive_real(time_factor, "time_factor")
    max_period = check_positive_real(max_period, "max_period")
    return _sinusoids(t, dim, time_factor, max_period)


def _check_times(t: Tensor) -> None:
    """``t`` must be a real 1-D tensor (B,) (its values are not checked)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a torch.Tensor (B,) of times in [0, 1], got {type(t).__name__}")
    if t.ndim != 1 or t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"t must be a real (B,) tensor of times in [0, 1], got {t.dtype} {tuple(t.shape)}")


def _sinusoids(t: Tensor, dim: int, time_factor: float, max_period: float) -> Tensor:
    """:func:`timestep_embedding` of arguments already checked."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (time_factor * t).float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """Flow time -> conditioning vector: sinusoidal(``freq_dim``) -> Linear -> SiLU -> Linear.

    Keys ``in_layer``, ``out_layer`` (the release's ``time_in``).

    Args:
        hidden: the output size (the blocks' width D).
        freq_dim: size of the sinusoidal embedding (256 in the release; >= 2).
        time_factor: t is multiplied by this before the embedding (1000 in the release;
            finite, > 0).
    """

    def __init__(self, hidden: int, freq_dim: int = 256, time_factor: float = 1000.0):
        super().__init__()
        check_positive_int(hidden, "hidden")
        self.freq_dim = check_positive_int(freq_dim, "freq_dim", minimum=2)
        self.time_factor = check_positive_real(time_factor, "time_factor")
        self.in_layer = nn.Linear(freq_dim, hidden)
        self.silu = nn.SiLU()
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, t: Tensor) -> Tensor:
        """t (B,), times in [0, 1] (0 data, 1 noise) -> the conditioning vector (B, hidden), in
        the layer's dtype. Raises ValueError for a ``t`` that is not (B,) (see
        :func:`timestep_embedding`)."""
        _check_times(t)
        emb = _sinusoids(t, self.freq_dim, self.time_factor, 10000.0).to(self.in_layer.weight.dtype)
        return self.out_layer(self.silu(self.in_layer(emb)))
