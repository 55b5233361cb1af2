"""Tiles: an image larger than a model's image size as overlapping tiles of that size, and the
blend the joint decode uses (:class:`flowmo.samplers.tiles.TiledDecoder`) (the paper's FlowMo-Hi at 512 px "diffuses patches and blends
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

__all__ = ["TileGrid", "TiledTokens", "tile_grid"]


def _count(length: int, tile: int, overlap: int) -> int:
    """How many tiles cover ``length`` pixels (module docstring)."""
    return 1 if length == tile else math.ceil((length - overlap) / (tile - overlap))


def _offsets(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    n = _count(length, tile, overlap)
    return (0,) if n == 1 else tuple(round(i * (length - tile) / (n - 1)) for i in range(n))


def _int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise (ValueError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError)(
            f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    return int(value)


def _check_sizes(height: Any, width: Any, tile: Any, overlap: Any) -> tuple[int, int, int, int]:
    tile = _int(tile, "tile", 1)
    overlap = _int(overlap, "overlap", 0)
    if overlap >= tile:
        raise ValueError(f"overlap must be below the tile size ({tile}), got {overlap}")
    sizes = []
    for name, n in (("height", height), ("width", width)):
        n = _int(n, name, 1)
        if n < tile:
            raise ValueError(f"{name} ({n}) must be at least the model's image size ({tile}): tiles of {tile} x "
                             f"{tile} pixels cannot cover a smaller image (resize it up first)")
        sizes.append(n)
    return sizes[0], sizes[1], tile, overlap


def tile_grid(height: int, width: int, tile: int, overlap: int) -> "TileGrid":
    """The grid of ``tile`` x ``tile`` tiles covering a ``height`` x ``width`` image with at least
    ``overlap`` pixels shared by neighbours (module docstring). TypeError / ValueError naming the
    argument: ints, ``tile`` >= 1, 0 <= ``overlap`` < ``tile``, and ``height`` and ``width`` at
    least ``tile`` (a smaller image has no tile that fits in it: resize it up first)."""
    h, w, tile, overlap = _check_sizes(height, width, tile, overlap)
    return TileGrid(h, w, tile, overlap, _offsets(h, tile, overlap), _offsets(w, tile, overlap))


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image size lie (build with :func:`tile_grid`): ``ys`` / ``xs`` the
    tiles' top / left offsets, ``rows`` x ``cols`` tiles, ``count`` in all, row-major. A grid
    built by hand must be the one :func:`tile_grid` gives for its sizes (TypeError / ValueError
    otherwise), so that every grid covers its image and tokens made on it decode on it."""

    height: int
    width: int
    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    def __post_init__(self) -> None:
        h, w, tile, overlap = _check_sizes(self.height, self.width, self.tile, self.overlap)
        for name, got, length in (("ys", self.ys, h), ("xs", self.xs, w)):
            n = _count(length, tile, overlap)  # before building the offsets: a huge size fails fast
            if (not isinstance(got, tuple) or len(got) != n or not all(type(v) is int for v in got)
                    or got != _offsets(length, tile, overlap)):
                shown = repr(got) if len(repr(got)) < 80 else repr(got)[:77] + "..."
                raise ValueError(f"{name} {shown} are not the {n} tile offsets of a {h} x {w} image in tiles of {tile} "
                                 f"with overlap {overlap} (build grids with tile_grid)")

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
        if not all(isinstance(d[k], list) for k in ("ys", "xs")):
            raise ValueError(f"{name}: ys and xs must be lists of offsets")
        try:
            return cls(d["height"], d["width"], d["tile"], d["overlap"], tuple(d["ys"]), tuple(d["xs"]))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{name}: {e}") from None

    # -- tiles <-> images
    def crop(self, images: Tensor) -> Tensor:
        """(B, C, H, W) -> the tiles (B, N, C, S, S), row-major."""
        s = self.tile
        return torch.stack([images[..., y:y + s, x:x + s] for y, x in self.positions()], dim=1)

    def window(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """A tile's window h(y) h(x) (S, S), made on ``device``."""
        h = torch.sin(math.pi * (torch.arange(self.tile, device=device, dtype=dtype) + 0.5) / self.tile) ** 2
        return h[:, None] * h[None, :]

    def coverage(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The sum of the windows covering each pixel, (H, W), made on ``device`` (no copy from the
        host: no synchronisation); the weight of tile k at a pixel is its window over this (so a
        pixel of one tile has weight exactly 1)."""
        w, s = self.window(device=device, dtype=dtype), self.tile
        total = torch.zeros(self.height, self.width, device=device, dtype=dtype)
        for y, x in self.positions():
            total[y:y + s, x:x + s] += w
        return total

    def weights(self, *, device: Any = None, dtype: torch.dtype = torch.float32) -> Tensor:
        """The blend's per-tile weights (N, 1, S, S): a partition of unity (module docstring).
        (N S^2 values: the blend itself needs only :meth:`window` and :meth:`coverage`.)"""
        w, cover, s = self.window(device=device, dtype=dtype), self.coverage(device=device, dtype=dtype), self.tile
        return torch.stack([w / cover[y:y + s, x:x + s] for y, x in self.positions()])[:, None]

    def blend(self, tiles: Tensor, weights: Optional[tuple[Tensor, Tensor]] = None, *, out: Optional[Tensor] = None,
              start: int = 0) -> Tensor:
        """Tiles (B, N, C, S, S) -> the image (B, C, H, W), each pixel the weighted sum of the
        tiles covering it, computed in the tiles' dtype promoted to at least float32.
        ``weights``: (:meth:`window`, :meth:`coverage`) in that dtype (made here when None).
        ``out`` / ``start``: add tiles ``start .. start + n - 1`` of the grid into ``out`` (a
        blend made in parts; ``out`` starts at zeros)."""
        work = torch.promote_types(tiles.dtype, torch.float32)
        w, cover = weights if weights is not None else (self.window(device=tiles.device, dtype=work),
                                                      self.coverage(device=tiles.device, dtype=work))
        s = self.tile
        if out is None:
            out = tiles.new_zeros(tiles.shape[0], tiles.shape[2], self.height, self.width, dtype=work)
        positions = self.positions()
        for k in range(tiles.shape[1]):
            y, x = positions[start + k]
            out[..., y:y + s, x:x + s] += tiles[:, k].to(work) * (w / cover[y:y + s, x:x + s])
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
