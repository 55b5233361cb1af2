"""Autoregressive sampling with and without the key/value cache, interleaved round by round.

    python benchmarks/ar_cache.py                       # 256 and 512 tokens, 3 and 2 rounds
    python benchmarks/ar_cache.py --lengths 256 --rounds 5

For each sequence length an :class:`~flowmo.generators.AutoregressiveGenerator` (width 256,
4 layers, 4 heads, vocabulary 512: a FlowMo-Lo group layout's 9-bit sub-tokens, 10 classes) is
sampled at batch 4, one thread (``torch.set_num_threads(1)``), alternately uncached
(``use_cache=False``: every step reruns the whole prefix) and cached (the default), both from the
same seed; each round gives one ratio uncached / cached. Prints a markdown table: the median
times, the median speed-up and its range over rounds, and whether the two paths drew the same
tokens. Compare the ratios of one run: the machines here are shared, absolute times drift.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from flowmo.generators import AutoregressiveGenerator


def timed_tokens(gen: AutoregressiveGenerator, labels: torch.Tensor, use_cache: bool, seed: int,
                 options: dict) -> tuple[float, torch.Tensor]:
    """(seconds, tokens) of one ``generate`` call."""
    rng = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    out = gen.generate(labels, generator=rng, use_cache=use_cache, **options)
    return time.perf_counter() - start, out.tokens


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 512], help="sequence lengths (tokens)")
    p.add_argument("--rounds", type=int, nargs="+", default=[3, 2],
                   help="rounds per length (one value for all, or one per length)")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--cfg", type=float, default=1.0, help="cfg_scale (!= 1: the guided pair, 2B rows)")
    p.add_argument("--top-k", type=int, default=None)
    a = p.parse_args()
    rounds = a.rounds * len(a.lengths) if len(a.rounds) == 1 else a.rounds
    if len(rounds) != len(a.lengths):
        p.error(f"--rounds must give one value or one per length ({len(a.lengths)}), got {len(a.rounds)}")
    torch.set_num_threads(1)
    options = dict(cfg_scale=a.cfg, top_k=a.top_k, temperature=1.0)
    labels = torch.arange(a.batch) % a.classes
    rows = []
    began = time.perf_counter()
    for length, n in zip(a.lengths, rounds):
        torch.manual_seed(0)
        gen = AutoregressiveGenerator(vocab_size=a.vocab, seq_len=length, num_classes=a.classes, width=a.width,
                                      depth=a.depth, heads=a.heads).eval()
        timed_tokens(gen, labels, True, 0, options)  # warm-up (allocator, RoPE table)
        plain, cached, ratios, same = [], [], [], True
        for r in range(n):
            t_plain, tok_plain = timed_tokens(gen, labels, False, r, options)
            t_cached, tok_cached = timed_tokens(gen, labels, True, r, options)
            plain.append(t_plain)
            cached.append(t_cached)
            ratios.append(t_plain / t_cached)
            same = same and torch.equal(tok_plain, tok_cached)
        rows.append((length, n, statistics.median(plain), statistics.median(cached), ratios, same))
    guided = f", cfg {a.cfg:g} (2B rows)" if a.cfg != 1.0 else ""
    print(f"width {a.width}, {a.depth} layers, {a.heads} heads, vocabulary {a.vocab}, batch {a.batch}{guided}, "
          f"1 thread, torch {torch.__version__}; {time.perf_counter() - began:.0f} s\n")
    print("| tokens | rounds | uncached (s, median) | cached (s, median) | speed-up, median | range | same tokens |")
    print("|---|---|---|---|---|---|---|")
    for length, n, t_plain, t_cached, ratios, same in rows:
        print(f"| {length} | {n} | {t_plain:.2f} | {t_cached:.2f} | {statistics.median(ratios):.1f}x "
              f"| {min(ratios):.1f}x - {max(ratios):.1f}x | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
