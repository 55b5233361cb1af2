"""Ordered, variable-rate tokens measured (issue 27): one FlowMo trained with nested dropout
decoding its first k = 1, 2, 4, 8, 16 tokens against separate fixed-length models trained with k
tokens, at equal training steps; with ``--generators`` (Fashion-MNIST), an autoregressive generator
on ordered vs unordered tokens, generating only the first k.

    python benchmarks/nested.py --steps 1000 --set train.threads=1 --set train.compile=false
    python benchmarks/nested.py --dataset fashion --generators --keep runs/nested-fashion

Variants (each trains the dataset's config with its overrides in a fresh ``flowmo train``
process; ``--keep`` continues a comparison, as in benchmarks/bottlenecks.py):

- ``fixed_k`` (k = 1, 2, 4, 8, 16): ``model.code_length=k``, decoded with all its k tokens;
  ``fixed_16`` also decodes its first k (an unordered model's prefix, the rest absent).
- ``nested``: ``nested_dropout={distribution: pow2}`` (FlexTok's k uniform over 1, 2, 4, 8, 16).
- ``nested_full``: the same with ``full_probability: 0.5`` (half the images keep all 16);
  ``nested_full80``: 0.8.
- ``nested_causal``: ``nested_full`` with an ordered encoder (``encoder.latent_attention: causal``).

Measured: ``--dataset demo``: the 10 held-out photo crops (:func:`flowmo.data.photos.held_out_photos`)
reconstructed by each model's EMA export, 1 Euler step, ``image_noise(0, ...)``: PSNR / SSIM.
``--dataset fashion``: benchmarks/bottlenecks.py's measurement (1,000 test reconstructions:
PSNR / SSIM, and the Fréchet distance in the examples/fashion classifier's features to 1,000
other test images). ``--generators``: each of ``fixed_16`` (unordered) and ``--ordered`` (a nested
variant) tokenizes the 20,000 training images and their mirror images, trains the Fashion demo's
generator config (configs/generators/fashion_maskgit.yaml) as ``autoregressive``, and generates
100 images per class (CFG 2, seed 0) stopping after k tokens: the classifier's accuracy on the
classes asked and the Fréchet distance to the 1,000 reference test images.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # benchmarks.bottlenecks, examples.fashion

from benchmarks.bottlenecks import QUIET, Fashion, comparison_parser, comparison_setup, train  # noqa: E402
from examples.fashion.data import FashionMNISTNotFound  # noqa: E402

KS = (1, 2, 4, 8, 16)
NESTED = "model.nested_dropout={distribution: pow2}"
NESTED_FULL = "model.nested_dropout={distribution: pow2, full_probability: 0.5}"
#: name -> (what it is, the overrides)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    **{f"fixed_{k}": (f"fixed length, {k} token{'s' * (k > 1)}", [f"model.code_length={k}"]) for k in KS},
    "nested": ("nested dropout (k uniform over 1, 2, 4, 8, 16)", [NESTED]),
    "nested_full": ("nested dropout, half the images keep all 16", [NESTED_FULL]),
    "nested_full80": ("nested dropout, 80% of the images keep all 16",
                      ["model.nested_dropout={distribution: pow2, full_probability: 0.8}"]),
    "nested_causal": ("nested dropout, half keep all 16, causal encoder",
                      [NESTED_FULL, "model.encoder={latent_attention: causal}"]),
}
CONFIGS = {"demo": "demo.yaml", "fashion": "fashion_tokenizer.yaml"}
GENERATOR_CONFIG = "configs/generators/fashion_maskgit.yaml"


def load(out: Path):
    from flowmo import FlowMo

    return FlowMo.from_pretrained(out / "model").eval()


def demo_figures(model, k: int) -> dict:
    """PSNR / SSIM of the 10 held-out crops decoded from the first k tokens."""
    from flowmo.data.photos import held_out_photos
    from flowmo.metrics.pixel import psnr, ssim
    from flowmo.samplers.noise import image_noise

    x = held_out_photos(model.spec.image_size)
    noise = image_noise(0, range(len(x)), tuple(x.shape[1:]))
    with torch.no_grad():
        y = model.detokenize(model.tokenize(x), noise=noise, num_tokens=k).clamp(-1, 1)
    return {"psnr": psnr(x, y).mean().item(), "ssim": ssim(x, y).mean().item()}


def run_cli(*argv: str) -> None:
    done = subprocess.run([sys.executable, "-m", "flowmo", *argv], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"flowmo {argv[0]} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def generator_figures(fashion: Fashion, root: Path, tokenizer: str, overrides: list[str], seed: int = 0) -> dict:
    """Tokenize, train the autoregressive generator (once, kept under ``root/ar_<tokenizer>``), and
    measure its images generated from the first k tokens, k in KS: {k: accuracy, Fréchet}."""
    from examples.fashion.classifier import classifier_frechet, conditional_accuracy
    from flowmo.generators import generate_images, load_generator

    work = root / f"ar_{tokenizer}"
    model_dir = root / tokenizer / "model"
    if not (work / "tokens" / "index.json").exists():
        print(f"{tokenizer}: tokenizing the training images ...", file=sys.stderr, flush=True)
        run_cli("tokenize", "--model", str(model_dir), "--classes", "--input", str(fashion.images),
                "--output", str(work / "tokens"), "--hflip", "--overwrite", "-q")
    t0 = time.perf_counter()
    if not (work / "generator" / "config.json").exists():
        print(f"{tokenizer}: training the autoregressive generator ...", file=sys.stderr, flush=True)
        sets = ["generator.name=autoregressive", f"train.tokens={work / 'tokens'}", "train.log.progress=false", *overrides]
        run_cli("train-generator", "--config", GENERATOR_CONFIG, *(x for o in sets for x in ("--set", o)),
                "--out", str(work / "run"), "--resume", "--export", str(work / "generator"), "-q")
    seconds = time.perf_counter() - t0
    tok, gen = load(root / tokenizer), load_generator(work / "generator")
    labels = torch.arange(10).repeat_interleave(100)
    reference = fashion.test[fashion.REFERENCE]
    rows = {}
    for k in KS:
        out = generate_images(gen, tok, labels, cfg_scale=2.0, seed=seed, batch_size=100, num_tokens=k)
        images = out.images.float()
        rows[k] = {"accuracy": conditional_accuracy(fashion.classifier, images, labels),
                   "frechet": classifier_frechet(fashion.classifier, images, reference)}
        print(f"{tokenizer} generator, k={k}: accuracy {rows[k]['accuracy']:.3f}, FD {rows[k]['frechet']:.2f}",
              file=sys.stderr, flush=True)
    return {"rows": rows, "train_seconds": seconds}


def main(argv=None) -> None:
    p = comparison_parser(__doc__, list(CONFIGS), list(VARIANTS))
    p.add_argument("--generators", action="store_true",
                   help="(fashion) also the autoregressive generator on fixed_16's and --ordered's tokens")
    p.add_argument("--generator-set", action="append", default=[],
                   help="an override for both generators' config (repeatable)")
    p.add_argument("--ordered", choices=[v for v in VARIANTS if v.startswith("nested")], default="nested_causal",
                   help="the nested variant whose tokens the ordered generator models (default nested_causal)")
    a = p.parse_args(argv)
    if a.generators and a.dataset != "fashion":
        p.error("--generators measures class accuracy: it needs --dataset fashion")
    owned = ("model", "model.code_length", "model.nested_dropout", "model.encoder.latent_attention")
    for o in a.set:
        key = o.split("=", 1)[0].strip()
        if any(key == k or key.startswith(k + ".") for k in owned[1:]) or key == owned[0]:
            p.error(f"--set {o!r}: the variants set the code length, nested dropout and the encoder's attention "
                    "themselves (and model= would replace the whole model)")
    overrides, root = comparison_setup(p, a, "flowmo-nested-")
    if a.generators:
        a.only += [v for v in ("fixed_16", a.ordered) if v not in a.only]
    config = CONFIGS[a.dataset]
    try:
        fashion = Fashion(root, a.data) if a.dataset == "fashion" else None
    except FashionMNISTNotFound as e:
        raise SystemExit(f"benchmarks/nested.py: {e}") from None
    extra = [f"train.data.folder={fashion.images}"] if fashion else []
    results: dict = {}
    for name in a.only:
        out = root / name
        seconds = train(config, [*VARIANTS[name][1], *extra, *overrides], out, export=True)
        model = load(out)
        t = model.spec.code_length
        ks = [k for k in KS if k <= t] if (model.spec.nested_dropout or name == "fixed_16") else [t]
        figures = {k: (fashion.measure(model, k) if fashion else demo_figures(model, k)) for k in ks}
        results[name] = {"seconds": seconds, "figures": figures}
        print(f"{name}: " + "; ".join(f"k={k} {f['psnr']:.2f} dB" for k, f in figures.items()) + f" ({seconds:.0f} s)",
              file=sys.stderr, flush=True)
    generators = ({v: generator_figures(fashion, root, v, a.generator_set) for v in ("fixed_16", a.ordered)}
                  if a.generators else {})
    record = root / "results.json"  # merged with an earlier comparison's in this folder (--keep)
    before = json.loads(record.read_text()) if record.exists() else {}
    merged = {"results": {**before.get("results", {}), **json.loads(json.dumps(results))},
              "generators": {**before.get("generators", {}), **json.loads(json.dumps(generators))}}
    record.write_text(json.dumps(merged, indent=1) + "\n")

    cols = [n for n in a.only if n != "fixed_16" and not n.startswith("fixed_")] + (
        ["fixed_16"] if "fixed_16" in a.only else [])
    fixed = any(n.startswith("fixed_") for n in a.only)
    print(f"configs/{config}, overrides for all: {' '.join(overrides) or 'none'}; EMA weights, 1 Euler step; "
          + ("1,000 test reconstructions: PSNR / SSIM / classifier-space Frechet distance "
             f"(real test images: {fashion.floor:.2f})" if fashion else "the 10 held-out crops: PSNR / SSIM") + "\n")
    head = (["fixed-length model with k tokens"] if fixed else []) + [
        "fixed 16, first k (unordered)" if n == "fixed_16" else VARIANTS[n][0] for n in cols]
    print("| k | " + " | ".join(head) + " |")
    print("|---" * (len(head) + 1) + "|")

    def cell(name: str, k: int) -> str:
        f = results.get(name, {}).get("figures", {}).get(k)
        if f is None:
            return "-"
        return f"{f['psnr']:.2f} / {f['ssim']:.3f}" + (f" / {f['frechet']:.1f}" if "frechet" in f else "")

    for k in KS:
        print(f"| {k} | " + " | ".join(([cell(f"fixed_{k}", k)] if fixed else []) + [cell(n, k) for n in cols]) + " |")
    print("\ntraining seconds: " + ", ".join(f"{n} {r['seconds']:.0f}" for n, r in results.items()))
    if generators:
        print(f"\nautoregressive generator (configs/generators/fashion_maskgit.yaml as autoregressive), 100 images per "
              "class, CFG 2, stopping after k tokens: class accuracy / Frechet distance\n")
        print(f"| k | unordered (fixed 16) | ordered ({a.ordered}) |")
        print("|---|---|---|")
        for k in KS:
            print(f"| {k} | " + " | ".join(f"{g['rows'][k]['accuracy']:.3f} / {g['rows'][k]['frechet']:.1f}"
                                            for g in generators.values()) + " |")


if __name__ == "__main__":
    main()
