"""The joint decode of an image larger than the model: the sampler's velocity for the whole image,
its tiles' velocities blended (the tile geometry and the blend: :mod:`flowmo.data.tiles`)."""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from ..data.tiles import TileGrid

__all__ = ["TiledDecoder"]


class TiledDecoder:
    """The joint decode's velocity: ``decoder(x_t, t, cond)`` of one tile lifted to the whole
    image. Called as ``(x (B, C, H, W), t (B,), cond (B, N, T, C'))``: every tile's crop of
    ``x`` goes through ``decoder`` with its own conditioning ``cond[:, k]``, and the tiles'
    velocities are blended (:meth:`TileGrid.blend`) into one velocity (B, C, H, W). So the
    sampler integrates one state for the whole image, the tiles share it where they overlap,
    and every solver, time grid and guidance works unchanged. ``weights``: the grid's
    (:meth:`TileGrid.window`, :meth:`TileGrid.coverage`). ``tile_batch``: at most this many tiles
    per decoder call (None: all B * N at once), each batch cropped and blended on its own, so
    the memory is that of ``tile_batch`` tiles and the image; the result is the same."""

    def __init__(self, decoder: Any, grid: TileGrid, weights: tuple[Tensor, Tensor], tile_batch: Optional[int] = None):
        self.decoder, self.grid, self.weights, self.tile_batch = decoder, grid, weights, tile_batch

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        b, n, s = x.shape[0], self.grid.count, self.grid.tile
        positions = self.grid.positions()
        tt, cc = t.repeat_interleave(n), cond.flatten(0, 1)  # pair j = (image j // n, tile j % n)
        k = b * n if self.tile_batch is None else self.tile_batch
        out = None
        for a in range(0, b * n, k):
            e = min(a + k, b * n)
            crops = torch.stack([x[j // n, :, y:y + s, c:c + s] for j in range(a, e) for y, c in (positions[j % n],)])
            v = self.decoder(crops, tt[a:e], cc[a:e])
            if out is None:
                out = x.new_zeros(x.shape, dtype=torch.promote_types(v.dtype, torch.float32))
            for j, vj in zip(range(a, e), v):
                self.grid.blend(vj[None, None], self.weights, out=out[j // n:j // n + 1], start=j % n)
        return out.to(v.dtype)
