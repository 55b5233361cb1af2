"""A 512 x 512 photo through the released FlowMo-Hi (256 px) in tiles, decoded jointly: the
paper's Appendix C.2 setting (FlowMo-Hi generalising to 512 x 512 by diffusing patches and
blending them).

    python -m examples.tiles.hi_512 [--model flowmo_hi] [--overlap 64] [--sampler fast] [--out runs/hi_512]

``--model`` is a released name (downloaded from the Hugging Face Hub on first use), a released
``.pth`` or a model folder. The photo is scikit-image's ``astronaut`` (512 x 512, in the wheel).
Writes ``original.png``, ``joint.png`` (FlowMo.reconstruct_tiled: 3 x 3 tiles of 256 px with the
default overlap of 64 px, one ODE state, the tiles' velocities blended every step) and
``pasted.png`` (the same tiles decoded on their own, pasted edge to edge), and prints PSNR and
SSIM of both. Not run in this project's CI or on its CPU machines: the released weights are not
there (the model load then says which file is needed); on a GPU it takes seconds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="flowmo_hi")
    p.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels (default: image size / 4)")
    p.add_argument("--sampler", default=None, help="a sampler preset (default: the model's)")
    p.add_argument("--out", type=Path, default=Path("runs/hi_512"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)

    from flowmo import FlowMo
    from flowmo.data.grids import save_image_rows
    from flowmo.data.photos import load_photo
    from flowmo.metrics.pixel import psnr, ssim
    from flowmo.samplers.noise import image_noise
    from flowmo.spec.sampling import resolve_preset

    try:
        model = FlowMo.from_pretrained(a.model).to(a.device).eval()
    except (FileNotFoundError, OSError, ValueError) as e:  # e.g. the released weights absent, offline
        print(f"hi_512: cannot load --model {a.model!r}: {e} (download the release's file, e.g. flowmo_hi.pth, "
              "and pass --model path/to/flowmo_hi.pth)", file=sys.stderr)
        return 2
    size = model.spec.image_size
    for flag, check in (("--overlap", lambda: model.tile_grid(size, size, overlap=a.overlap)),  # the model's checks
                        ("--sampler", lambda: a.sampler and resolve_preset(a.sampler, model.spec.sampler_presets))):
        try:
            check()
        except (TypeError, ValueError) as e:
            p.error(f"{flag}: {e}")
    photo = torch.from_numpy(np.array(load_photo("astronaut"))).permute(2, 0, 1).float() / 127.5 - 1
    x = photo[None].to(a.device)  # (1, 3, 512, 512)
    kw = {"sampler": a.sampler} if a.sampler else {}
    noise = image_noise(0, [0], tuple(x.shape[1:]), device=a.device)
    grid = model.tile_grid(x.shape[2], x.shape[3], overlap=a.overlap)
    with torch.no_grad():
        joint = model.reconstruct_tiled(x, overlap=a.overlap, noise=noise, **kw).clamp(-1, 1)
        tiles = grid.crop(x).flatten(0, 1)
        code = model.quantize(model.encode(tiles), losses=False).values
        each = model.decode(code, noise=grid.crop(noise).flatten(0, 1), **kw).images.clamp(-1, 1)
        pasted = grid.paste(each.unflatten(0, (1, grid.count)))
    a.out.mkdir(parents=True, exist_ok=True)
    for name, img in (("original", x), ("joint", joint), ("pasted", pasted)):
        save_image_rows([img.cpu()], a.out / f"{name}.png")
    for name, img in (("joint", joint), ("pasted", pasted)):
        print(f"{name}: {grid.rows} x {grid.cols} tiles of {grid.tile} px (overlap {grid.overlap}): "
              f"PSNR {psnr(x, img).item():.2f} dB, SSIM {ssim(x, img).item():.3f}")
    print(f"wrote {a.out}/original.png, joint.png, pasted.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
