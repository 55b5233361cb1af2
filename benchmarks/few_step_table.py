"""Few-step decoders against the many-step sampler: calls, speed, fidelity, sharpness, features.

    python benchmarks/few_step_table.py --model runs/demo/model \\
        --students runs/few_step/demo_distill_4/model ... --data photos [--out table.json]

Rows: the 31-call sampler (the release's: 25 Euler steps, pow 0.25, CFG 1.5 on its interval),
the model's own default sampler, the best training-free sampler at each call budget (1, 2, 4;
among Euler on the linear, pow 0.5 and pow 0.25 grids, without guidance and with the release's
guidance where it fits the budget; "best" = the smallest Fréchet distance in the classifier's
feature space (FD below), not PSNR, which rewards blur), and each student (a model folder
trained by a few-step objective) with its own recorded preset. Every row decodes the same codes from the same noise (``image_noise(seed, i)``,
the library's one per-image recipe).

Columns:
- calls: decoder evaluations per image (a guided step counts 2);
- s/img and speed-up: seconds per image on this machine (median over rounds, batch 32), and
  the 31-call sampler's time over the row's, median and range over rounds; rows are timed
  interleaved, round by round (the machine's speed drifts);
- PSNR / SSIM to the originals (uint8, the library's metrics);
- sharp: the high-frequency share of the power spectrum (grey, mean removed, frequencies above
  half the Nyquist frequency: :func:`benchmarks.sharpness.high_frequency_share`) of the decoded
  images over the originals' (1 = as sharp as the originals; blur lowers it, leftover noise
  raises it);
- vs 31: PSNR of the row's images against the 31-call sampler's images from the same noise;
- FD: the Fréchet distance between the decoded set's and the originals' features in the
  Fashion-MNIST classifier's feature space (the generation demo's classifier,
  :mod:`examples.fashion.classifier`, trained on Fashion-MNIST padded to 32 x 32; photos are measured in
  grey): the offline stand-in for rFID, which rewards realistic texture, not the mean image;
  feat: the mean per-image Euclidean distance between the features of the decoded image and its
  original (the offline stand-in for LPIPS);
- LPIPS (VGG) where its weight file is found (``$FLOWMO_WEIGHTS_DIR`` or the torch hub cache),
  else the column names the file.

Data: ``--data photos``: the demo's held-out photos (10 fixed crops of chelsea and coffee plus
random crops of them, ``--images`` in all); ``--data fashion``: Fashion-MNIST's test images
(padded to 32 x 32, as the generation demo). The classifier is trained once (17 s) and cached
in ``--classifier`` (default runs/few_step/classifier).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowmo  # noqa: E402
from flowmo.samplers.noise import image_noise  # noqa: E402
from flowmo.metrics.pixel import psnr, ssim  # noqa: E402
from benchmarks.sharpness import high_frequency_share  # noqa: E402
from flowmo.samplers import SAMPLER_PRESETS  # noqa: E402

GRIDS = {"linear": {"name": "linear"}, "pow 0.5": {"name": "pow", "p": 0.5}, "pow 0.25": {"name": "pow", "p": 0.25}}
RELEASE_GUIDANCE = SAMPLER_PRESETS["release"].guidance.model_dump()
BUDGETS = (1, 2, 4)


def load_data(kind: str, n: int, size: int) -> torch.Tensor:
    """(n, 3, size, size) float32 held-out images in [-1, 1]."""
    if kind == "photos":
        from flowmo.data.photos import BuiltinPhotos, held_out_photos

        fixed = held_out_photos(size)
        more = BuiltinPhotos(size, train=False, length=max(n - len(fixed), 1), seed=12345)
        extra = [more[i] for i in range(max(n - len(fixed), 0))]
        extra = [e[0] if isinstance(e, (tuple, list)) else e for e in extra]
        return torch.cat([fixed] + ([torch.stack(extra)] if extra else []))[:n]
    from examples.fashion.data import load_fashion_mnist
    from examples.fashion.report import padded

    x, _ = load_fashion_mnist(None, "test")
    return padded(x[:n], size)


def classifier(folder: Path, size: int):
    """The Fashion-MNIST classifier of the generation demo, trained once and cached."""
    from examples.fashion.classifier import load_classifier, train_classifier

    if (folder / "classifier.json").is_file():
        return load_classifier(folder)
    from examples.fashion.data import CLASS_NAMES, load_fashion_mnist
    from examples.fashion.report import padded

    x, y = load_fashion_mnist(None, "train")
    clf = train_classifier(padded(x, size), torch.from_numpy(y), epochs=2, generator=0,
                           num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES))
    clf.save(folder)
    return clf


def features(clf, images: torch.Tensor) -> torch.Tensor:
    s = clf.image_size
    x = images.clamp(-1, 1)
    if x.shape[-1] != s:
        x = torch.nn.functional.interpolate(x, size=(s, s), mode="area")
    return clf.features(x).double()


def frechet(a: torch.Tensor, b: torch.Tensor) -> float:
    from flowmo.metrics.frechet import frechet_distance

    return frechet_distance(a.mean(0).numpy(), torch.cov(a.T).numpy(), b.mean(0).numpy(), torch.cov(b.T).numpy())


def lpips_fn():
    try:
        from flowmo.losses.perceptual import build_distance
        from flowmo.spec import PerceptualSpec

        return build_distance(PerceptualSpec(name="lpips_vgg")), None
    except (FileNotFoundError, OSError, RuntimeError, ValueError) as e:
        return None, str(e).split("\n")[0][:80]


def training_free(budget: int):
    """(label, sampler dict) for every training-free candidate that fits ``budget`` calls."""
    for gname, grid in GRIDS.items():
        yield f"euler, {gname}, {budget} steps, no cfg", {"steps": budget, "grid": grid, "solver": {"name": "euler"},
                                                          "guidance": {"scale": 1.0, "interval": None}}
        for steps in range(1, budget + 1):
            s = flowmo.SamplerSpec(steps=steps, grid=grid, guidance=RELEASE_GUIDANCE)
            from flowmo.samplers.grids import build_grid

            t = build_grid(s.grid)(steps)
            guided = sum(1 for v in t[:-1].tolist() if s.guidance.interval[0] <= v <= s.guidance.interval[1])
            if guided and steps + guided == budget:
                yield f"euler, {gname}, {steps} steps, cfg 1.5 on interval", s.model_dump()


def decode_all(model, codes, noise, sampler, batch: int = 64):
    out, calls = [], 0
    with torch.no_grad():
        for a in range(0, len(codes), batch):
            r = model.decode(codes[a:a + batch], noise=noise[a:a + batch], sampler=sampler)
            out.append(r.images.float())
            calls = r.decoder_calls
    return torch.cat(out), calls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the model the students were trained from (its folder)")
    p.add_argument("--students", nargs="*", default=[], help="student model folders")
    p.add_argument("--data", choices=("photos", "fashion"), required=True)
    p.add_argument("--images", type=int, default=None, help="held-out images (default: 200 photos, 1000 Fashion)")
    p.add_argument("--seed", type=int, default=0, help="the decoding noise's seed")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds")
    p.add_argument("--classifier", type=Path, default=Path("runs/few_step/classifier"))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    a = p.parse_args(argv)
    if a.rounds < 1 or (a.images is not None and a.images < 2):
        p.error("--rounds must be >= 1 and --images >= 2")
    if a.threads:
        torch.set_num_threads(a.threads)
    n = a.images or (200 if a.data == "photos" else 1000)
    base = flowmo.FlowMo.from_pretrained(a.model)
    size = base.spec.image_size
    x = load_data(a.data, n, size)
    ids = list(range(len(x)))
    noise = image_noise(a.seed, ids, (3, size, size))
    with torch.no_grad():
        codes = torch.cat([base.quantize(base.encode(x[i:i + 64])).values for i in range(0, len(x), 64)])
    clf = classifier(a.classifier, size)
    f_orig = features(clf, x)
    orig_share = float(high_frequency_share(x).mean())
    lp, lp_missing = lpips_fn()

    # (label, model, sampler); the students first checked to make the same tokens as the model
    from flowmo.state_dicts import token_weights_digest

    students = []
    for folder in a.students:
        m = flowmo.FlowMo.from_pretrained(folder)
        if token_weights_digest(m) != token_weights_digest(base):
            raise SystemExit(f"{folder} is not a student of {a.model}: its encoder or quantizer weights differ")
        for name in m.spec.sampler_presets:
            rows_name = Path(folder).parent.name if Path(folder).name == "model" else Path(folder).name
            students.append((f"student {rows_name} ({name})", m, name))
    rows = [("31-call sampler (release)", base, "release"), ("model default", base, None)]
    for budget in BUDGETS:
        best = None
        for label, sampler in training_free(budget):
            y, _ = decode_all(base, codes, noise, sampler)
            d = frechet(features(clf, y), f_orig)
            print(f"  candidate {label}: FD {d:.3f}", file=sys.stderr, flush=True)
            if best is None or d < best[0]:
                best = (d, label, sampler)
        rows.append((f"best training-free, {budget} call{'s' * (budget > 1)}: {best[1]}", base, best[2]))
    rows += students

    results, reference = [], None
    for label, model, sampler in rows:
        y, calls = decode_all(model, codes, noise, sampler)
        if reference is None:
            reference = y
        f = features(clf, y)
        r = {"row": label, "calls": calls,
             "psnr": float(psnr(x, y).mean()), "ssim": float(ssim(x, y).mean()),
             "sharpness": float(high_frequency_share(y).mean()) / orig_share,
             "psnr_vs_31": float(psnr(reference, y).mean()) if y is not reference else float("inf"),
             "feature_distance": float((f - f_orig).norm(dim=1).mean()), "frechet": frechet(f, f_orig)}
        if lp is not None:
            with torch.no_grad():
                r["lpips"] = float(torch.cat([lp(y[i:i + 64], x[i:i + 64]) for i in range(0, len(x), 64)]).mean())
        results.append(r)
        print(f"  {label}: {r}", file=sys.stderr, flush=True)

    # timing, interleaved round by round: seconds per image for a batch of 32
    tb = min(32, len(codes))
    times: list[list[float]] = [[] for _ in rows]
    for _ in range(a.rounds):
        for i, (label, model, sampler) in enumerate(rows):
            with torch.no_grad():
                t0 = time.perf_counter()
                model.decode(codes[:tb], noise=noise[:tb], sampler=sampler)
                times[i].append((time.perf_counter() - t0) / tb)
    for i, r in enumerate(results):
        ratios = [t31 / t for t31, t in zip(times[0], times[i])]
        r["seconds_per_image"] = statistics.median(times[i])
        r["speedup"] = statistics.median(ratios)
        r["speedup_range"] = [min(ratios), max(ratios)]

    print(f"model {a.model}; {len(x)} held-out {a.data} images; noise seed {a.seed}; "
          f"timing: median of {a.rounds} interleaved rounds, batch {tb}, {torch.get_num_threads()} threads\n")
    lp_head = "LPIPS" if lp is not None else f"LPIPS ({lp_missing})"
    print(f"| decoder | calls | s/img | speed-up | PSNR | SSIM | sharp | vs 31 (dB) | FD | feat | {lp_head} |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        vs = "—" if r["psnr_vs_31"] == float("inf") else f"{r['psnr_vs_31']:.2f}"
        lo, hi = r["speedup_range"]
        lpv = f"{r['lpips']:.4f}" if "lpips" in r else "n/a"
        print(f"| {r['row']} | {r['calls']} | {r['seconds_per_image'] * 1e3:.2f} ms | {r['speedup']:.1f}x "
              f"({lo:.1f}-{hi:.1f}) | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['sharpness']:.3f} | {vs} | "
              f"{r['frechet']:.2f} | {r['feature_distance']:.3f} | {lpv} |")
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"model": a.model, "data": a.data, "images": len(x), "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
