"""Tiles: an image larger than a model's image size as overlapping tiles of that size, and the
blend that decodes them jointly (the paper's FlowMo-Hi at 512 px "diffuses patches and blends
them": Sargent et al. 2025, Appendix C.2; the weights here are this library's choice).

Geometry (:func:`tile_grid`): along an axis of L pixels, tiles of side S (the model's image
size) with a requested overlap o (0 <= o < S): one tile when L == S, else
n = ceil((L - o) / (S - o)) tiles at offsets round(i (L - S) / (n - 1)), i = 0 .. n - 1. The
first starts at 0 and the last ends at L; neighbours overlap by at least o pixels (more where
the spacing rounds down). Tiles are ordered row-major: row i, column j is tile i * cols + j.

Blend (:meth:`TileGrid.weights`): tile k's window is w(y, x) = h(y) h(x) with
h(u) = sin^2(pi (u + 0.5) / S) (a Hann window, positive at every pixel); a pixel's weight for
tile k is w_k / sum_j w_j over the tiles covering it. The weights are a partition of unity: they
sum to 1 at every pixel, a pixel covered by one tile takes that tile's value, and across an
overlap the tiles cross-fade. :meth:`TileGrid.paste` is the hard alternative: every pixel from
the tile whose centre is nearest (per axis), switching at :meth:`TileGrid.seams`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["TileGrid", "TiledTokens", "tile_grid", "TiledDecoder"]


def _offsets(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    if length == tile:
        return (0,)
    n = math.ceil((length - overlap) / (tile - overlap))
    return tuple(round(i * (length - tile) / (n - 1)) for i in range(n))


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise (ValueError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError)(
            f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    return int(value)


def tile_grid(height: int, width: int, tile: int, overlap: int) -> "TileGrid":
    """The grid of ``tile`` x ``tile`` tiles covering a ``height`` x ``width`` image with at least
    ``overlap`` pixels shared by neighbours (module docstring). TypeError / ValueError naming the
    argument: ints, ``tile`` >= 1, 0 <= ``overlap`` < ``tile``, and ``height`` and ``width`` at
    least ``tile`` (a smaller image has no tile that fits in it: resize it up first)."""
    tile = _int(tile, "tile", 1)
    overlap = _int(overlap, "overlap", 0)
    if overlap >= tile:
        raise ValueError(f"overlap must be below the tile size ({tile}), got {overlap}")
    for name, n in (("height", height), ("width", width)):
        n = _int(n, name, 1)
        if n < tile:
            raise ValueError(f"{name} ({n}) must be at least the model's image size ({tile}): tiles of {tile} x "
                             f"{tile} pixels cannot cover a smaller image (resize it up first)")
    return TileGrid(int(height), int(width), tile, overlap, _offsets(height, tile, overlap),
                    _offsets(width, tile, overlap))


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image size lie (build with :func:`tile_grid`): ``ys`` / ``xs`` the
    tiles' top / left offsets, ``rows`` x ``cols`` tiles, ``count`` in all, row-major."""

    height: int
    width: int
    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def rows(self) -> int:
        return len(self.ys)

    @property
    def cols(self) -> int:
        return len(self.xs)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def positions(self) -> list[tuple[int, int]]:
        """(top, left) of every tile, row-major."""
        return [(y, x) for y in self.ys for x in self.xs]

    def to_dict(self) -> dict:
        """JSON-ready: height, width, tile, overlap, ys, xs."""
        return {"height": self.height, "width": self.width, "tile": self.tile, "overlap": self.overlap,
                "ys": list(self.ys), "xs": list(self.xs)}

    @classmethod
    def from_dict(cls, d: Any, name: str = "grid") -> "TileGrid":
        """The grid :meth:`to_dict` wrote. ValueError naming ``name`` when ``d`` is not one (its
        offsets must be the ones :func:`tile_grid` gives for its sizes)."""
        keys = ("height", "width", "tile", "overlap", "ys", "xs")
        if not isinstance(d, dict) or set(d) != set(keys):
            raise ValueError(f"{name} must be a dict with keys {', '.join(keys)}, got {d!r:.120}")
        try:
            grid = tile_grid(d["height"], d["width"], d["tile"], d["overlap"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None
        if list(grid.ys) != d["ys"] or list(grid.xs) != d["xs"]:
            raise ValueError(f"{name}'s offsets ys={d['ys']!r:.60}, xs={d['xs']!r:.60} are not the tile grid of its "
                             f"sizes (ys={list(grid.ys)}, xs={list(grid.xs)})")
        return grid

    def check_image(self, x: Tensor, name: str) -> None:
        """ValueError naming ``name`` unless ``x`` is (B, C, height, width)."""
        if x.ndim != 4 or tuple(x.shape[2:]) != (self.height, self.width):
            raise ValueError(f"{name} must be (B, C, {self.height}, {self.width}) (the tile grid's image), got "
                             f"{tuple(x.shape)}")

    # -- tiles <-> images
    def crop(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> the tiles (B, N, C, S, S), row-major."""
        s = self.tile
        return torch.stack([images[..., y:y + s, x:x + s] for y, x in self.positions()], dim=1)

    def weights(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The blend's per-tile weights (N, 1, S, S): a partition of unity (module docstring)."""
        s = self.tile
        h = torch.sin(math.pi * (torch.arange(s, dtype=torch.float64) + 0.5) / s) ** 2
        w = h[:, None] * h[None, :]
        total = torch.zeros(self.height, self.width, dtype=torch.float64)
        for y, x in self.positions():
            total[y:y + s, x:x + s] += w
        out = torch.stack([w / total[y:y + s, x:x + s] for y, x in self.positions()])
        return out[:, None].to(device=device, dtype=dtype)

    def blend(self, tiles: Tensor, weights: Optional[Tensor] = None) -> Tensor:
        """Tiles (B, N, C, S, S) -> the image (B, C, H, W), each pixel the weighted sum of the
        tiles covering it (``weights``: :meth:`weights`, made here when None), computed in the
        tiles' dtype promoted to at least float32."""
        work = torch.promote_types(tiles.dtype, torch.float32)
        w = self.weights(device=tiles.device, dtype=work) if weights is None else weights.to(work)
        s = self.tile
        out = tiles.new_zeros(tiles.shape[0], tiles.shape[2], self.height, self.width, dtype=work)
        for k, (y, x) in enumerate(self.positions()):
            out[..., y:y + s, x:x + s] += tiles[:, k].to(work) * w[k]
        return out

    def seams(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Where :meth:`paste` switches tiles: the first row (column) of each tile after the first,
        the middle of its overlap with the previous one."""
        s = self.tile
        mid = lambda p: tuple((a + b + s) // 2 for a, b in zip(p, p[1:]))
        return mid(self.ys), mid(self.xs)

    def paste(self, tiles: Tensor) -> Tensor:
        """Tiles (B, N, C, S, S) -> the image (B, C, H, W), each pixel from the tile whose centre
        is nearest along each axis (no blending: the tiles' edges meet at :meth:`seams`)."""
        rows, cols = self.seams()
        ry = (0, *rows, self.height)
        rx = (0, *cols, self.width)
        out = tiles.new_empty(tiles.shape[0], tiles.shape[2], self.height, self.width)
        for i, y in enumerate(self.ys):
            for j, x in enumerate(self.xs):
                a, b, c, d = ry[i], ry[i + 1], rx[j], rx[j + 1]
                out[..., a:b, c:d] = tiles[:, i * self.cols + j, :, a - y:b - y, c - x:d - x]
        return out


@dataclass(frozen=True)
class TiledTokens:
    """An image's tokens, tile by tile (:meth:`flowmo.FlowMo.tokenize_tiled`): ``tokens`` int64
    (B, rows, cols, T), tile (i, j) of ``grid`` at ``tokens[:, i, j]``."""

    tokens: Tensor
    grid: TileGrid


class TiledDecoder:
    """The joint decode's velocity: ``decoder(x_t, t, cond)`` of one tile lifted to the whole
    image. Called as ``(x (B, C, H, W), t (B,), cond (B, N, T, C' ))``: every tile's crop of
    ``x`` goes through ``decoder`` in one batch of B * N tiles, each with its own conditioning
    ``cond[:, k]``, and the tiles' velocities are blended (:meth:`TileGrid.blend`) into one
    velocity (B, C, H, W). So the sampler integrates one state for the whole image, the tiles
    share it where they overlap, and every solver, time grid and guidance works unchanged.
    ``tile_batch``: at most this many tiles per decoder call (None: all at once), to bound the
    memory of a large image; the result is the same."""

    def __init__(self, decoder: Any, grid: TileGrid, weights: Tensor, tile_batch: Optional[int] = None):
        self.decoder, self.grid, self.weights, self.tile_batch = decoder, grid, weights, tile_batch

    def __call__(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        b, n = x.shape[0], self.grid.count
        tiles, tt, cc = self.grid.crop(x).flatten(0, 1), t.repeat_interleave(n), cond.flatten(0, 1)
        k = tiles.shape[0] if self.tile_batch is None else self.tile_batch
        v = torch.cat([self.decoder(tiles[a:a + k], tt[a:a + k], cc[a:a + k]) for a in range(0, tiles.shape[0], k)])
        return self.grid.blend(v.unflatten(0, (b, n)), self.weights).to(v.dtype)
