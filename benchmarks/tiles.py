"""Images larger than the model: the joint tiled decode against its alternatives (issue 26).

    python benchmarks/tiles.py --model runs/demo/model                 # the demo's model (32 px)
    python benchmarks/tiles.py --model runs/demo/model --sampler fast  # 8 steps, CFG 1.5

Held-out photos (the demo never trains on them: ``chelsea`` and ``coffee``), five crops each of
the target's aspect ratio (the largest centred one, then half-size ones on the four quadrant
centres, as :func:`flowmo.data.photos.held_out_photos` crops squares), resized to each size
(W x H, bicubic, antialiased). Each image is reconstructed four ways, from the same noise
(:func:`flowmo.samplers.noise.image_noise`, seed 0, the image's index):

- ``joint``: :meth:`FlowMo.reconstruct_tiled` (tiles of the model's size, ``--overlap``, one ODE
  state for the whole image, velocities blended at every step);
- ``independent, blended``: the same tiles decoded on their own, blended once at the end
  (``joint=False``);
- ``independent, pasted``: the same tiles decoded on their own, each pixel from the tile whose
  centre is nearest (:meth:`TileGrid.paste`: hard edges at the seams);
- ``down-up``: the image resized to the model's size, reconstructed, resized back.

Figures: PSNR / SSIM against the originals (means over images), and the seam index: the mean
absolute difference between neighbouring pixels across the seams (the rows and columns where the
paste switches tiles), relative to the originals' there, divided by the same ratio for all other
neighbouring pixels; 1 means a seam looks like the rest of the image, above 1 an edge is left.
The patch-edge index is the same ratio at the edges of the decoder's patches inside the tiles
(each tile's own patch grid, seams left out): a model whose patches show (the demo's 8 x 8 grid)
has edges there too, and a seam no stronger than those adds nothing of its own.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flowmo import FlowMo  # noqa: E402
from flowmo.data.images import image_to_tensor  # noqa: E402
from flowmo.data.photos import DEFAULT_HOLDOUT, available_photos, load_photo  # noqa: E402
from flowmo.metrics.pixel import psnr, ssim  # noqa: E402
from flowmo.samplers.noise import image_noise  # noqa: E402
from flowmo.spec.sampling import resolve_preset  # noqa: E402

BICUBIC = Image.Resampling.BICUBIC


def crops(width: int, height: int) -> torch.Tensor:
    """The held-out photos' five crops of aspect width:height, resized: (N, 3, height, width)."""
    out = []
    for name in available_photos(DEFAULT_HOLDOUT):
        photo = Image.fromarray(np.array(load_photo(name)))
        w, h = photo.size
        cw, ch = (w, w * height / width) if w * height / width <= h else (h * width / height, h)
        boxes = [((w - cw) / 2, (h - ch) / 2, cw, ch)]
        for fy, fx in ((0.25, 0.25), (0.25, 0.75), (0.75, 0.25), (0.75, 0.75)):
            boxes.append((fx * w - cw / 4, fy * h - ch / 4, cw / 2, ch / 2))
        for x, y, bw, bh in boxes:
            out.append(image_to_tensor(photo.resize((width, height), BICUBIC, box=(x, y, x + bw, y + bh))))
    return torch.stack(out)


def resize(x: torch.Tensor, width: int, height: int) -> torch.Tensor:
    return torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True,
                                           align_corners=False).clamp(-1, 1)


def seam_index(recon: torch.Tensor, orig: torch.Tensor, seams: tuple) -> float:
    """(mean |step| across seams / the originals') / (the same elsewhere); module docstring."""
    rows, cols = seams
    if not rows and not cols:
        return float("nan")  # one tile: no seam
    dy = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs()  # step between row r-1 and r at index r-1
    dx = lambda x: (x[..., :, 1:] - x[..., :, :-1]).abs()
    ratios = []
    for at_seam in (True, False):
        num = den = 0.0
        for d, lines, axis in ((dy, rows, -2), (dx, cols, -1)):
            a, b = d(recon.double()), d(orig.double())
            mask = torch.zeros(a.shape[axis], dtype=torch.bool)
            mask[[s - 1 for s in lines]] = True
            pick = mask if at_seam else ~mask
            num += a.index_select(axis, pick.nonzero()[:, 0]).sum().item()
            den += b.index_select(axis, pick.nonzero()[:, 0]).sum().item()
        ratios.append(num / den)
    return ratios[0] / ratios[1]


def patch_lines(grid, patch: int) -> tuple:
    """The rows and columns where a tile's own patches meet, in the part of the image the tile
    owns in :meth:`TileGrid.paste` (seams excluded)."""
    out = []
    for offsets, seams, length in ((grid.ys, grid.seams()[0], grid.height), (grid.xs, grid.seams()[1], grid.width)):
        ends = (0, *seams, length)
        out.append(tuple(sorted({p for i, o in enumerate(offsets)
                                 for p in range(o + patch, o + grid.tile, patch) if ends[i] < p < ends[i + 1]})))
    return tuple(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="a model folder (e.g. runs/demo/model)")
    p.add_argument("--sizes", nargs="+", default=["64x64", "96x64", "128x128"], help="W x H sizes")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: image size / 4)")
    p.add_argument("--sampler", default=None, help="a sampler preset (default: the model's own sampler)")
    a = p.parse_args(argv)
    sizes = []
    for s in a.sizes:
        try:
            w, h = (int(v) for v in s.lower().split("x"))
        except ValueError:
            p.error(f"--sizes takes W x H sizes such as 96x64, got {s!r}")
        sizes.append((w, h))
    model = FlowMo.from_pretrained(a.model).eval()
    size = model.spec.image_size
    if any(min(w, h) < size for w, h in sizes):
        p.error(f"--sizes must be at least the model's image size ({size}) in each dimension, got {a.sizes}")
    for flag, check in (("--overlap", lambda: model.tile_grid(size, size, overlap=a.overlap)),  # the model's checks
                        ("--sampler", lambda: a.sampler and resolve_preset(a.sampler, model.spec.sampler_presets))):
        try:
            check()
        except (TypeError, ValueError) as e:
            p.error(f"{flag}: {e}")
    kw = {"sampler": a.sampler} if a.sampler else {}
    print(f"model {a.model} ({size} px), sampler {a.sampler or 'the model'}'s, overlap "
          f"{a.overlap if a.overlap is not None else size // 4} px; held-out photos, 5 crops each\n")
    print("| size (W x H) | tiles (rows x cols) | method | PSNR (dB) | SSIM | seam index | patch-edge index |")
    print("|---|---|---|---|---|---|---|")
    torch.manual_seed(0)
    with torch.no_grad():
        for w, h in sizes:
            x = crops(w, h)
            grid = model.tile_grid(h, w, overlap=a.overlap)
            noise = image_noise(0, range(len(x)), (3, h, w))
            code = model.quantize(model.encode(grid.crop(x).flatten(0, 1)), losses=False).values
            tiles = model.decode(code, noise=grid.crop(noise).flatten(0, 1), **kw).images
            tiles = tiles.clamp(-1, 1).unflatten(0, (len(x), grid.count))
            small = resize(x, size, size)
            edges = patch_lines(grid, model.spec.patch_size)
            rows = {
                "joint": model.reconstruct_tiled(x, overlap=a.overlap, noise=noise, **kw),
                "independent, blended": model.reconstruct_tiled(x, overlap=a.overlap, noise=noise, joint=False, **kw),
                "independent, pasted": grid.paste(tiles),
                "down-up": resize(model.reconstruct(small, noise=image_noise(0, range(len(x)), (3, size, size)),
                                                    **kw).clamp(-1, 1), w, h),
            }
            for name, r in rows.items():
                r = r.clamp(-1, 1)
                print(f"| {w} x {h} | {grid.rows} x {grid.cols} | {name} | {psnr(x, r).mean().item():.2f} | "
                      f"{ssim(x, r).mean().item():.3f} | {seam_index(r, x, grid.seams()):.2f} | "
                      f"{seam_index(r, x, edges):.2f} |", flush=True)


if __name__ == "__main__":
    main()
