"""The bottlenecks compared on the CPU demo and on Fashion-MNIST: LFQ, FSQ, BSQ and VQ at equal
bits per image, and the continuous kl and identity at equal channels (issue 25; the paper's
Table 3 direction: continuous beats discrete at equal channels).

    python benchmarks/bottlenecks.py                       # the demo's budget (configs/demo.yaml)
    python benchmarks/bottlenecks.py --steps 600 --set train.compile=false
    python benchmarks/bottlenecks.py --only kl lfq
    python benchmarks/bottlenecks.py --dataset fashion     # configs/fashion_tokenizer.yaml

Each variant trains the dataset's config with its quantizer override (and ``--set`` overrides
for all) in a fresh ``flowmo train`` process, one after another. Prints a markdown table.

``--dataset demo``: the final held-out figures of the EMA weights (``eval/ema/psnr``,
``eval/ema/ssim`` in ``metrics.jsonl``: the 10 held-out crops, 1 Euler step, the run's
evaluation noise). Equal bits: the demo's LFQ is 16 tokens x 36 bits = 576 bits per image; FSQ
16 x 12 channels of 8 levels (36 bits); BSQ 16 x 36 channels; VQ 36 tokens of a 65536-code
codebook (16 bits, EMA updates, l2-normalised codes, dead codes replaced: a larger codebook per
token would be a search over 2^36 codes). Continuous: 16 tokens x 36 channels, kl (a diagonal
Gaussian, the encoder 72 wide; at the release's kl_weight 1 and at 0.001: ``kl_small``) and
identity.

``--dataset fashion``: the Fashion-MNIST demo's tokenizer (2,000 training images per class,
written once under the run folder from Debian's ``dataset-fashion-mnist`` or
``$FLOWMO_FASHION_MNIST``), each variant's exported EMA model reconstructing 1,000 test images
(test images 1000-1999, 1 Euler step, :func:`flowmo.samplers.noise.image_noise` seed 0): PSNR
and SSIM against the padded originals, and the Fréchet distance in the feature space of
:mod:`examples.fashion.classifier` (trained once, 2 epochs on the 60,000 training images) to
test images 0-999; the floor is real test images 2000-2999 against the same. Equal bits: 16
tokens x 12 bits = 192 bits per image (LFQ and BSQ 12 channels, FSQ 4 channels of 8 levels, VQ
a 4096-code codebook per token); continuous: 16 tokens x 12 channels (kl at weights 1 and
0.001, identity).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # examples.fashion
QUIET = ["train.log.tensorboard=false", "train.log.progress=false"]

#: name -> (what it is, the overrides), per dataset
DEMO: dict[str, tuple[str, list[str]]] = {
    "lfq": ("LFQ, 16 tokens x 36 bits (the demo)", []),
    "fsq": ("FSQ, 16 tokens x 12 channels of 8 levels (36 bits)",
            ["model.code_channels=12", "model.quantizer={name: fsq, levels: [8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8, 8]}"]),
    "bsq": ("BSQ, 16 tokens x 36 bits", ["model.quantizer={name: bsq}"]),
    "vq": ("VQ, 36 tokens of 65536 codes (16 bits), EMA, l2-normalised",
           ["model.code_length=36",
            "model.quantizer={name: vq, codebook_size: 65536, ema: true, l2_normalize: true, dead_code_threshold: 1.0}"]),
    "kl": ("kl (continuous), 16 tokens x 36 channels", ["model.quantizer={name: kl}"]),
    "kl_small": ("kl (continuous), 16 tokens x 36 channels, kl_weight 0.001",
                 ["model.quantizer={name: kl, kl_weight: 0.001}"]),
    "identity": ("identity (continuous), 16 tokens x 36 channels", ["model.quantizer={name: identity}"]),
}
FASHION: dict[str, tuple[str, list[str]]] = {
    "lfq": ("LFQ, 16 tokens x 12 bits (the Fashion demo)", []),
    "fsq": ("FSQ, 16 tokens x 4 channels of 8 levels (12 bits)",
            ["model.code_channels=4", "model.quantizer={name: fsq, levels: [8, 8, 8, 8]}"]),
    "bsq": ("BSQ, 16 tokens x 12 bits", ["model.quantizer={name: bsq, group_bits: 6}"]),
    "vq": ("VQ, 16 tokens of 4096 codes (12 bits), EMA, l2-normalised",
           ["model.quantizer={name: vq, codebook_size: 4096, ema: true, l2_normalize: true, dead_code_threshold: 1.0}"]),
    "kl": ("kl (continuous), 16 tokens x 12 channels", ["model.quantizer={name: kl}"]),
    "kl_small": ("kl (continuous), 16 tokens x 12 channels, kl_weight 0.001",
                 ["model.quantizer={name: kl, kl_weight: 0.001}"]),
    "identity": ("identity (continuous), 16 tokens x 12 channels", ["model.quantizer={name: identity}"]),
}
DATASETS = {"demo": ("demo.yaml", DEMO), "fashion": ("fashion_tokenizer.yaml", FASHION)}


def train(config: str, overrides: list[str], out: Path, *, export: bool) -> float:
    """Train one variant in a fresh process; the seconds it took. A variant whose run under
    ``--keep`` finished before (its ``bench.json``) is not trained again: its seconds are read."""
    done_file = out / "bench.json"
    if done_file.exists():
        return json.loads(done_file.read_text())["seconds"]
    cmd = [sys.executable, "-m", "flowmo", "train", "--config", str(REPO / "configs" / config), "--out", str(out)]
    if export:
        cmd += ["--export", str(out / "model")]
    for o in [*QUIET, *overrides]:
        cmd += ["--set", o]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{out.name}: flowmo train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    seconds = time.perf_counter() - t0
    done_file.write_text(json.dumps({"seconds": seconds}) + "\n")
    return seconds


def demo_figures(out: Path) -> dict:
    """The run's final held-out EMA figures from its metrics.jsonl."""
    last: dict = {}
    for line in (out / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "eval/ema/psnr" in rec:
            last = rec
    if not last:
        raise SystemExit(f"{out.name}: the run logged no held-out EMA figures (eval/ema/psnr): keep train.eval and "
                         "train.ema enabled")
    return {"psnr": last["eval/ema/psnr"], "ssim": last["eval/ema/ssim"]}


class Fashion:
    """Fashion-MNIST's training folders, test images and measuring classifier, made once."""

    RECON = slice(1000, 2000)
    REFERENCE = slice(0, 1000)
    FLOOR = slice(2000, 3000)

    def __init__(self, root: Path, data: Path | None):
        from examples.fashion.classifier import load_classifier, train_classifier
        from examples.fashion.data import CLASS_NAMES, load_fashion_mnist, write_class_folders
        from examples.fashion.report import padded

        self.images = root / "images"
        train_x, train_y = load_fashion_mnist(data, "train")
        if not (self.images / "done").exists():
            print(f"writing 2,000 training images per class to {self.images} ...", file=sys.stderr, flush=True)
            write_class_folders(self.images, train_x, train_y, size=32, limit_per_class=2000)
            (self.images / "done").write_text("")
        test_x, _ = load_fashion_mnist(data, "test")
        self.test = padded(test_x[:3000], 32)
        if (root / "classifier" / "classifier.json").exists():
            self.classifier = load_classifier(root / "classifier")
        else:
            print("training the measuring classifier (2 epochs, 60,000 images; kept with --keep) ...", file=sys.stderr,
                  flush=True)
            self.classifier = train_classifier(padded(train_x, 32), torch.from_numpy(train_y), epochs=2, generator=0,
                                               class_names=list(CLASS_NAMES))
            self.classifier.save(root / "classifier", extra=self.classifier.training_record)
        self.floor = self.frechet(self.test[self.FLOOR])

    def frechet(self, images: torch.Tensor) -> float:
        from examples.fashion.classifier import classifier_frechet

        return classifier_frechet(self.classifier, images, self.test[self.REFERENCE])

    def figures(self, out: Path) -> dict:
        """The exported model's reconstructions of test images 1000-1999: PSNR, SSIM, Fréchet."""
        from flowmo import FlowMo

        return self.measure(FlowMo.from_pretrained(out / "model").eval())

    def measure(self, model, num_tokens: int | None = None) -> dict:
        """``model``'s reconstructions of test images 1000-1999 (from its first ``num_tokens``
        tokens, the rest absent, when given): PSNR, SSIM, Fréchet."""
        from flowmo.metrics.pixel import psnr, ssim
        from flowmo.samplers.noise import image_noise

        originals = self.test[self.RECON]
        ids = range(self.RECON.start, self.RECON.stop)
        recon = torch.cat([
            model.reconstruct(originals[a:a + 100], noise=image_noise(0, list(ids[a:a + 100]), (3, 32, 32)),
                              num_tokens=num_tokens).clamp(-1, 1)
            for a in range(0, len(ids), 100)])
        return {"psnr": psnr(originals, recon).mean().item(), "ssim": ssim(originals, recon).mean().item(),
                "frechet": self.frechet(recon)}


def bits_per_image(config: dict) -> str:
    import flowmo

    spec = flowmo.FlowMoSpec.model_validate(config["model"])
    bits = spec.bits_per_token
    return "continuous" if bits is None else f"{bits * spec.code_length:.0f}"


def comparison_parser(doc: str, datasets: list[str], variants: list[str]) -> argparse.ArgumentParser:
    """The arguments a comparison script shares (this one and benchmarks/nested.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=sorted(datasets), default="demo")
    p.add_argument("--only", nargs="+", choices=variants, default=list(variants))
    p.add_argument("--steps", type=int, default=None, help="train.steps for every variant (default: the config's)")
    p.add_argument("--set", action="append", default=[], help="an override for every variant (repeatable)")
    p.add_argument("--keep", type=Path, default=None,
                   help="keep the runs under this folder; a variant whose run there finished is measured again, not "
                        "retrained (so an interrupted comparison continues; other --set or --steps need another "
                        "folder: a finished run is reused as it is)")
    p.add_argument("--data", type=Path, default=None, help="Fashion-MNIST's IDX folder (default: the usual lookup)")
    return p


def comparison_setup(p: argparse.ArgumentParser, a: argparse.Namespace, prefix: str) -> tuple[list[str], Path]:
    """Check and normalise the shared arguments (``--only`` each variant once, ``--data``
    absolute); the overrides for every variant and the runs' folder (a new temporary one,
    named with ``prefix``, without ``--keep``)."""
    if a.steps is not None and a.steps < 1:
        p.error(f"--steps must be a positive number of steps, got {a.steps}")
    a.only = list(dict.fromkeys(a.only))
    a.data = a.data.resolve() if a.data else None
    overrides = list(a.set) + ([f"train.steps={a.steps}"] if a.steps else [])
    return overrides, (a.keep or Path(tempfile.mkdtemp(prefix=prefix))).resolve()  # the runs' cwd is REPO


def main(argv=None) -> None:
    p = comparison_parser(__doc__, list(DATASETS), sorted(DEMO))
    a = p.parse_args(argv)
    overrides, root = comparison_setup(p, a, "flowmo-bottlenecks-")
    config, variants = DATASETS[a.dataset]
    fashion = Fashion(root, a.data) if a.dataset == "fashion" else None
    extra = [f"train.data.folder={fashion.images}"] if fashion else []
    rows = []
    for name in a.only:
        out = root / name
        seconds = train(config, [*variants[name][1], *extra, *overrides], out, export=fashion is not None)
        r = fashion.figures(out) if fashion else demo_figures(out)
        r["seconds"] = seconds
        r["config"] = json.loads((out / "config.json").read_text())
        rows.append((name, r))
        print(f"{name}: {r['psnr']:.2f} dB, SSIM {r['ssim']:.3f} ({seconds:.0f} s)", file=sys.stderr, flush=True)
    print(f"configs/{config}, overrides for all: {' '.join(overrides) or 'none'}; 1 Euler step, EMA weights")
    if fashion:
        print(f"1,000 reconstructed test images; classifier-space Frechet distance to 1,000 other test images "
              f"(real test images: {fashion.floor:.2f})\n")
        print("| bottleneck | bits per image | PSNR (dB) | SSIM | Fréchet (classifier) | train s |")
        print("|---|---|---|---|---|---|")
    else:
        print("held-out crops\n")
        print("| bottleneck | bits per image | held-out PSNR (dB) | SSIM | train + eval s |")
        print("|---|---|---|---|---|")
    for name, r in rows:
        fd = f" {r['frechet']:.2f} |" if fashion else ""
        print(f"| {variants[name][0]} | {bits_per_image(r['config'])} | {r['psnr']:.2f} | {r['ssim']:.3f} |{fd} "
              f"{r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
