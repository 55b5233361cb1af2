"""The figures of the offline generation demo on Fashion-MNIST (``scripts/fashion_demo.sh``).

No ImageNet network weights exist offline, so generated images are measured with a small
classifier the library trains on Fashion-MNIST's training split
(:mod:`examples.fashion.classifier`):

* its accuracy on the 10,000 test images (the ceiling for the next figure);
* the conditional accuracy of generated images: how often it assigns an image the class it was
  generated for (target: at least 80% of the test accuracy);
* the Fréchet distance in its feature space (FID's formula, this network's 128-d features)
  between held-out real test images and (a) generated images, (b) the tokenizer's
  reconstructions of other test images, (c) images decoded from uniformly random tokens, and
  (d) other real test images (the floor: two samples of the same distribution).

Real images are padded from 28x28 to the tokenizer's size as the demo's class folders were
written (:func:`examples.fashion.data.write_class_folders`, ``fit="pad"``), as RGB; images
are measured in grey (the classifier's luma of RGB). These figures are this dataset's and this
network's, not comparable to ImageNet's Inception-based gFID / IS.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

__all__ = ["fashion_report", "padded", "main"]


def padded(images: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, 28, 28) -> float32 (N, 3, size, size) in [-1, 1], centred on black (the demo's
    class folders' geometry). ValueError when ``size`` is below the images' side."""
    n, h, w = images.shape
    if size < max(h, w):
        raise ValueError(f"size ({size}) must be at least the images' side ({max(h, w)})")
    top, left = (size - h) // 2, (size - w) // 2
    canvas = np.zeros((n, size, size), np.uint8)
    canvas[:, top:top + h, left:left + w] = images
    x = torch.from_numpy(canvas).float() / 127.5 - 1
    return x[:, None].expand(n, 3, size, size).contiguous()


def _decode_tokens(tokenizer: Any, layout: Any, sequences: torch.Tensor, seed: int, ids: Sequence[int],
                   batch_size: int) -> torch.Tensor:
    from flowmo.samplers.noise import image_noise
    from flowmo.generators.pipeline import sequences_to_code

    s = tokenizer.spec.image_size
    out = []
    with torch.no_grad():
        for a in range(0, sequences.shape[0], batch_size):
            code = sequences_to_code(tokenizer, layout, sequences[a:a + batch_size])
            noise = image_noise(seed, list(ids[a:a + batch_size]), (3, s, s), device=tokenizer.device,
                                dtype=tokenizer.dtype)
            out.append(tokenizer.decode(code, noise=noise).images.clamp(-1, 1).float().cpu())
    return torch.cat(out)


def fashion_report(tokenizer_dir: Path, generator_dir: Path, *, out: Optional[Path] = None,
                   data_folder: Optional[Path] = None, per_class: int = 100, reference: int = 1000,
                   steps: Optional[int] = None, cfg_scale: float = 2.0, temperature: float = 1.0,
                   seed: int = 0, classifier_epochs: int = 2, classifier_images: Optional[int] = None,
                   batch_size: int = 100, log=print) -> dict:
    """Compute the demo's figures (module docstring) and return them as a dict (also written to
    ``out/report.json`` with a grid of generated images, one row per class, when ``out`` is given).

    Args:
        tokenizer_dir / generator_dir: the trained tokenizer and generator folders.
        data_folder: the folder of Fashion-MNIST's IDX files (default: the usual lookup).
        per_class: generated images per class (>= 2); the reconstruction and random-token sets
            have as many images in all, so the Fréchet figures compare sets of equal sizes.
        reference: held-out real test images the sets are compared with (test images
            0 .. reference-1; the reconstructions use the next per_class * classes, the
            real-vs-real floor the ones after those).
        steps, cfg_scale, temperature: the generator's sampling settings.
        seed: token draws and decoding noise; the classifier's training seed.
        classifier_epochs / classifier_images: the classifier's training (default: 2 epochs over
            all 60,000 training images; fewer only for quick checks).
    Raises:
        ValueError: bad counts; FileNotFoundError: data or folders absent (naming them).
    """
    from examples.fashion.data import CLASS_NAMES, load_fashion_mnist
    from flowmo.folders.generator_folder import load_generator
    from flowmo.generators.pipeline import check_tokenizer, generate_images
    from flowmo.model import FlowMo
    from examples.fashion.classifier import classifier_frechet, conditional_accuracy, train_classifier

    t_start = time.perf_counter()
    tokenizer = FlowMo.from_pretrained(tokenizer_dir).eval()
    generator = load_generator(generator_dir)
    layout = check_tokenizer(generator, tokenizer)
    size = tokenizer.spec.image_size
    classes = generator.num_classes
    n = per_class * classes
    train_x, train_y = load_fashion_mnist(data_folder, "train")
    test_x, test_y = load_fashion_mnist(data_folder, "test")
    if per_class < 2 or reference < 2 or reference + 2 * n > len(test_y):
        raise ValueError(f"per_class ({per_class}) and reference ({reference}) must be >= 2 and fit the "
                         f"{len(test_y)} test images: reference + 2 * per_class * classes <= {len(test_y)}")

    if classifier_images is not None:
        train_x, train_y = train_x[:classifier_images], train_y[:classifier_images]
    log(f"training the measuring classifier on {len(train_y)} training images ...")
    clf = train_classifier(padded(train_x, size), torch.from_numpy(train_y), epochs=classifier_epochs,
                           generator=seed, num_classes=len(CLASS_NAMES), class_names=list(CLASS_NAMES))
    test = padded(test_x, size)
    test_labels = torch.from_numpy(test_y)
    real = test[:reference]
    test_accuracy = clf.accuracy(test, test_labels)

    log(f"generating {per_class} images per class ...")
    labels = torch.arange(classes).repeat_interleave(per_class)
    gen = generate_images(generator, tokenizer, labels, steps=steps, cfg_scale=cfg_scale, temperature=temperature,
                          seed=seed, batch_size=batch_size)
    generated = gen.images.float().cpu()

    log("reconstructing held-out test images and decoding random tokens ...")
    others = test[reference:reference + n]
    with torch.no_grad():
        indices = torch.cat([tokenizer.tokenize(others[a:a + batch_size].to(tokenizer.device, tokenizer.dtype),
                                                groups=layout.kind == "group") for a in range(0, n, batch_size)])
    ids = range(reference, reference + n)
    recon = _decode_tokens(tokenizer, layout, layout.to_sequence(indices), seed, ids, batch_size)
    g = torch.Generator().manual_seed(seed)
    random_seq = torch.randint(0, layout.vocab_size, (n, layout.seq_len), generator=g)
    random_images = _decode_tokens(tokenizer, layout, random_seq, seed, ids, batch_size)
    floor_set = test[reference + n: reference + 2 * n]  # real images never measured above

    report = {
        "classifier": {"test_accuracy": test_accuracy, "epochs": classifier_epochs, "train_images": len(train_y),
                       "train_seconds": (clf.training_record or {}).get("seconds")},
        "generated": {"images": n, "conditional_accuracy": conditional_accuracy(clf, generated, labels),
                      "frechet_to_real": classifier_frechet(clf, generated, real),
                      "steps": gen.steps, "forward_passes": gen.forward_passes, "batch_size": batch_size,
                      "nfe_per_image": gen.nfe, "decoder_calls_per_image": gen.decoder_calls,
                      "cfg_scale": cfg_scale, "temperature": temperature},
        "reconstructions": {"images": n, "accuracy": clf.accuracy(recon, test_labels[reference:reference + n]),
                            "frechet_to_real": classifier_frechet(clf, recon, real)},
        "random_tokens": {"images": n, "frechet_to_real": classifier_frechet(clf, random_images, real)},
        "real_vs_real": {"images": floor_set.shape[0], "frechet_to_real": classifier_frechet(clf, floor_set, real)},
        "reference_images": reference,
        "bits_per_image": layout.seq_len * float(np.log2(layout.vocab_size)),
        "layout": json.loads(layout.to_json()),
        "seed": seed,
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    report["generated"]["relative_accuracy"] = report["generated"]["conditional_accuracy"] / test_accuracy
    if out is not None:
        from flowmo.data.files import atomic_write_text
        from flowmo.data.grids import save_image_rows

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        cols = min(per_class, 10)
        rows = [generated[c * per_class: c * per_class + cols] for c in range(classes)]
        save_image_rows(rows, out / "generated.png", scale=2)
        save_image_rows([others[:cols], recon[:cols], random_images[:cols]], out / "reconstructions.png", scale=2)
        atomic_write_text(out / "report.json", json.dumps(report, indent=2) + "\n")
    return report


def format_report(r: dict) -> str:
    """The report as the table the demo prints."""
    g, c = r["generated"], r["classifier"]
    lines = [
        f"measuring classifier: test accuracy {c['test_accuracy']:.3f}",
        f"generated ({g['images']} images, {g['steps']} steps, cfg {g['cfg_scale']}): assigned their class "
        f"{g['conditional_accuracy']:.3f} = {g['relative_accuracy']:.2f} x the test accuracy (target >= 0.80)",
        "Frechet distance to held-out real test images (classifier features; lower is closer):",
        f"  real test images (floor)      {r['real_vs_real']['frechet_to_real']:8.2f}",
        f"  tokenizer reconstructions     {r['reconstructions']['frechet_to_real']:8.2f}"
        f"   (classifier accuracy {r['reconstructions']['accuracy']:.3f})",
        f"  generated                     {g['frechet_to_real']:8.2f}",
        f"  uniformly random tokens       {r['random_tokens']['frechet_to_real']:8.2f}",
        f"({r['bits_per_image']:.0f} bits per image; these are Fashion-MNIST figures, not comparable to ImageNet's)",
    ]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.fashion.report",
                                description="The Fashion-MNIST generation demo's figures (see the module docstring).")
    p.add_argument("--run", required=True, type=Path, help="the demo's run folder (tokenizer/model, generator/model)")
    p.add_argument("--data", type=Path, default=None, help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--per-class", type=int, default=100)
    p.add_argument("--cfg", type=float, default=2.0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    run = args.run
    r = fashion_report(run / "tokenizer" / "model", run / "generator" / "model", out=run / "report",
                       data_folder=args.data, per_class=args.per_class, steps=args.steps, cfg_scale=args.cfg,
                       temperature=args.temperature, seed=args.seed)
    print(format_report(r))
    print(f"written: {run / 'report' / 'report.json'}, generated.png, reconstructions.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
