"""Speed and memory of FlowMo on this machine, as ratios to its own measured limits.

    python benchmarks/bench.py                    # small and medium presets on the CPU
    python benchmarks/bench.py --presets medium --batch 4 --compile --device cuda
    python benchmarks/bench.py --only-step --compile  # the Stage 1A step against the matmul rate, eager and compiled

Prints a markdown table. Every speed is measured in this run next to the dense-matmul
FLOP/s of the same device and dtype: each "of matmul" figure is the median over rounds of
(achieved FLOP/s) / (matmul FLOP/s timed just before and after, within seconds), so it is
comparable between (noisy, shared) machines. Peak memory of each training step is measured
in a fresh subprocess after a warm-up step (CPU: growth of the resident set; CUDA:
max_memory_allocated), with the bytes autograd keeps for backward.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowmo  # noqa: E402
from benchmarks.flops import attention_flops, decoder_flops, encoder_flops  # noqa: E402


def _timed(fn, sync) -> float:
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def best_time(fn, reps: int, sync) -> float:
    """The fastest of ``reps`` timings after one warm-up call."""
    fn()
    sync()
    return min(_timed(fn, sync) for _ in range(reps))


def matmul_size(device) -> int:
    """The reference matmul's n: 8192 to reach a GPU's peak; 2048 on CPUs (about 0.1 s each there)."""
    return 8192 if torch.device(device).type == "cuda" else 2048


class Matmul:
    """The reference: a dense n x n x n matmul of one dtype on one device (output preallocated)."""

    def __init__(self, device, dtype, n: int | None = None):
        n = matmul_size(device) if n is None else n
        self.a = torch.randn(n, n, device=device, dtype=dtype)
        self.b = torch.randn(n, n, device=device, dtype=dtype)
        self.c = torch.empty(n, n, device=device, dtype=dtype)
        self.flops = 2 * n**3
        self.sync = _sync(torch.device(device))

    def __call__(self):
        torch.mm(self.a, self.b, out=self.c)

    def rate(self, reps: int = 5) -> float:
        return self.flops / best_time(self, reps, self.sync)


def ratio_to_matmul(fn, flops: float, ref: Matmul, rounds: int) -> dict:
    """Time ``fn`` in ``rounds`` rounds, each between two timings of the reference matmul.

    On a shared machine the matmul rate drifts by tens of percent within minutes; a ratio taken
    within one round (seconds) cancels that drift. Returns the median and range of the per-round
    ratios and the best time of ``fn``.
    """
    fn()
    ref()
    ref.sync()
    ratios, best = [], float("inf")
    for _ in range(rounds):
        before = min(_timed(ref, ref.sync) for _ in range(2))
        t = _timed(fn, ref.sync)
        after = _timed(ref, ref.sync)
        ratios.append((flops / t) / (ref.flops / min(before, after)))
        best = min(best, t)
    ratios.sort()
    return {"median": statistics.median(ratios), "low": ratios[0], "high": ratios[-1], "best_s": best}


def _fmt_ratio(r: dict) -> str:
    return f"{r['median']:.0%} (rounds {r['low']:.0%}-{r['high']:.0%})"


def _sync(device):
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def child_step(preset: str, stage: str, batch: int, device: str) -> dict:
    """One training step of a stage in this (fresh) process: time, peak memory and the bytes
    autograd keeps for backward. A Stage 1A step first warms up allocator and kernels."""
    dev = torch.device(device)
    spec = flowmo.get_preset(preset)
    if stage == "1b":
        spec = spec.replace(posttrain={"name": "mode_seeking", "k": 8, "checkpoint": True})
    torch.manual_seed(0)
    model = flowmo.build(spec).to(dev).train()
    s = spec.image_size
    x = torch.rand(batch, 3, s, s, device=dev) * 2 - 1
    g = torch.Generator(dev).manual_seed(0)
    sync = _sync(dev)

    def step(objective, saved=None):
        hooks = torch.autograd.graph.saved_tensors_hooks(saved, lambda t: t) if saved else contextlib.nullcontext()
        with hooks:
            out = model(x, objective=objective, generator=g)
        out.total.backward()
        for p in model.parameters():
            p.grad = None

    step("flow")  # warm-up
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _reset_peak_rss()
    counter = SavedBytes()
    t0 = time.perf_counter()
    step("posttrain" if stage == "1b" else "flow", counter)
    sync()
    t = time.perf_counter() - t0
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else _peak_rss()) - base
    return {"seconds": t, "peak_bytes": peak, "saved_bytes": counter.total}


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _reset_peak_rss() -> int:
    """Reset the resident-set high-water mark (Linux: write 5 to /proc/self/clear_refs) and
    return the current resident set; falls back to ru_maxrss where that is unavailable."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmRSS")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _peak_rss() -> int:
    try:
        return _status_kib("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class SavedBytes:
    """A pack hook for ``saved_tensors_hooks`` that adds up the bytes of the distinct storages
    autograd keeps for backward (what gradient checkpointing reduces: tensors inside a
    checkpointed region are not kept)."""

    def __init__(self):
        self.seen: set[int] = set()
        self.total = 0

    def __call__(self, t):
        st = t.untyped_storage()
        if st.data_ptr() not in self.seen:
            self.seen.add(st.data_ptr())
            self.total += st.nbytes()
        return t


def run_child(preset, stage, batch, device) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{preset}:{stage}:{batch}:{device}"]
    # large blocks via mmap and no trimming threshold: freed memory leaves the resident set,
    # so its high-water mark tracks the peak of live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def decoder_parts(spec, batch: int, device: torch.device):
    """The decoder's two kinds of heavy kernel alone, at its shapes: the MLP's first linear over
    all image tokens, and the joint attention. Shows where a decoder's "of matmul" comes from."""
    import torch.nn.functional as F

    w, h = spec.decoder.width, spec.decoder.heads
    n_img, n = spec.grid_size**2, spec.grid_size**2 + spec.code_length
    hidden = int(w * spec.decoder.mlp_ratio)
    x = torch.randn(batch * n_img, w, device=device)
    weight = torch.randn(hidden, w, device=device)
    bias = torch.randn(hidden, device=device)
    yield (f"MLP linear {batch * n_img}x{w}->{hidden}", lambda: F.linear(x, weight, bias),
           2 * batch * n_img * w * hidden)
    q, k, v = (torch.randn(batch, h, n, w // h, device=device) for _ in range(3))
    yield (f"attention {batch}x{h} heads x {n} tokens", lambda: F.scaled_dot_product_attention(q, k, v),
           attention_flops(spec.decoder, spec) // spec.decoder.depth * batch)


def bench_preset(name: str, batch: int, device: torch.device, do_compile: bool, rounds: int, train: bool = True):
    """Yields table rows as they are measured."""
    spec = flowmo.get_preset(name)
    torch.manual_seed(0)
    model = flowmo.build(spec).to(device).eval()
    s = spec.image_size
    x = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    t = torch.rand(batch, device=device)
    cond = torch.randn(batch, spec.code_length, spec.code_channels + 1, device=device)
    sync = _sync(device)
    ref32 = Matmul(device, torch.float32)
    fl = decoder_flops(spec) * batch
    with torch.no_grad():
        enc = ratio_to_matmul(lambda: model.encode(x), encoder_flops(spec) * batch, ref32, rounds)
        yield (name, "encode", f"{batch / enc['best_s']:.1f} images/s", _fmt_ratio(enc))
        dec = ratio_to_matmul(lambda: model.decoder_velocity(x, t, cond), fl, ref32, rounds)
        yield (name, "decoder call, float32", f"{batch / dec['best_s']:.1f} images x calls/s",
               f"{_fmt_ratio(dec)}; {fl / dec['best_s'] / 1e9:.0f} GFLOP/s")
        parts = []
        for part, fn, pfl in decoder_parts(spec, batch, device):
            r = ratio_to_matmul(fn, pfl, ref32, rounds)
            parts.append(r["median"])
            note = _fmt_ratio(r)
            if len(parts) == 2:
                # the decoder's ratio if all its matmul FLOPs ran at the linear's rate, its attention
                # FLOPs at the attention kernel's, and everything else (norms, GELU, RoPE...) were free
                att = attention_flops(spec.decoder, spec) * batch / fl
                note += f"; kernels-only ceiling for the decoder call: {1 / ((1 - att) / parts[0] + att / parts[1]):.0%}"
            yield (name, f"  decoder part: {part}", f"{r['best_s'] * 1e3:.1f} ms", note)
        ref16 = Matmul(device, torch.bfloat16)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            d16 = ratio_to_matmul(lambda: model.decoder_velocity(x, t, cond), fl, ref16, max(2, rounds // 2))
        del ref16
        yield (name, "decoder call, bf16 autocast", f"{batch / d16['best_s']:.1f} images x calls/s",
               f"{_fmt_ratio(d16)} of bf16 matmul; {dec['best_s'] / d16['best_s']:.2f}x float32")
        if do_compile:
            compiled = flowmo.build(spec).to(device).eval()
            compiled.load_state_dict(model.state_dict())
            compiled.compile()
            ctime = _timed(lambda: compiled.decoder_velocity(x, t, cond), sync)
            dc = ratio_to_matmul(lambda: compiled.decoder_velocity(x, t, cond), fl, ref32, rounds)
            yield (name, "decoder call, compiled", f"{batch / dc['best_s']:.1f} images x calls/s",
                   f"{_fmt_ratio(dc)}; {dec['best_s'] / dc['best_s']:.2f}x eager (compile {ctime:.0f} s)")
            del compiled
        # the latency of one image through the default sampler (the paper's "seconds to decode")
        code = model.quantize(model.encode(x[:1])).values
        g = torch.Generator(device).manual_seed(0)
        model.decoder_velocity(x[:1], t[:1], cond[:1])  # warm-up at batch 1
        t0 = time.perf_counter()
        out = model.decode(code, generator=g)
        sync()
        rec = time.perf_counter() - t0
        yield (name, f"reconstruction of one image ({out.decoder_calls} decoder calls)", f"{rec:.3f} s", "")
    if not train:
        return
    yield from train_step_rows(name, spec, batch, device, do_compile, rounds)
    a = run_child(name, "1a", batch, str(device))
    b = run_child(name, "1b", batch, str(device))
    mib = lambda v: f"{v / 2**20:.0f} MiB"
    yield ((name, "Stage 1A step", f"{a['seconds']:.2f} s",
                 f"peak +{mib(a['peak_bytes'])}; saved for backward {mib(a['saved_bytes'])}"))
    yield ((name, "Stage 1B step (K=8, checkpointed)", f"{b['seconds']:.2f} s",
                 f"peak +{mib(b['peak_bytes'])} ({b['peak_bytes'] / max(a['peak_bytes'], 1):.2f}x 1A); "
                 f"saved {mib(b['saved_bytes'])} ({b['saved_bytes'] / max(a['saved_bytes'], 1):.2f}x 1A)"))


def train_step(spec, batch: int, device: torch.device, *, compiled: bool, bf16: bool):
    """A Stage 1A optimizer step as the trainer takes it (draws first, the loss with
    ``check_values=False``, backward, fused Adam), optionally with ``train.compile``'s
    compilation (the loss as one graph) and bf16 autocast; returns ``step()``."""
    torch.manual_seed(0)
    model = flowmo.build(spec).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
    s = spec.image_size
    x = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    g = torch.Generator(device).manual_seed(0)
    loss = torch.compile(model, fullgraph=True) if compiled else model

    def step():
        opt.zero_grad(set_to_none=True)
        draws = model.loss_draws(x, g)
        with torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            out = loss(x, check_values=False, **draws)
        out.total.backward()
        opt.step()

    return step


def train_step_rows(name: str, spec, batch: int, device: torch.device, do_compile: bool, rounds: int):
    """The Stage 1A step as a fraction of the matmul rate of its dtype: eager float32 and bf16
    autocast, and with ``do_compile`` both compiled (``train.compile``; compile time in the note).
    FLOPs: encoder and decoder forward, backward counted as twice the forward."""
    fl = 3 * (encoder_flops(spec) + decoder_flops(spec)) * batch
    sync = _sync(device)
    for compiled in ([False, True] if do_compile else [False]):
        for bf16 in (False, True):
            ref = Matmul(device, torch.bfloat16 if bf16 else torch.float32)
            step = train_step(spec, batch, device, compiled=compiled, bf16=bf16)
            first = _timed(step, sync)
            r = ratio_to_matmul(step, fl, ref, max(2, rounds // 2))
            what = f"Stage 1A step, {'bf16 autocast' if bf16 else 'float32'}{', compiled' if compiled else ''}"
            yield (name, what, f"{r['best_s']:.2f} s ({batch / r['best_s']:.1f} images/s)",
                   f"{_fmt_ratio(r)} of {'bf16' if bf16 else 'float32'} matmul; {fl / 1e9:.0f} GFLOP"
                   + (f"; first step (compile) {first:.0f} s" if compiled else ""))
            del step, ref


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "medium"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5, help="timing rounds per ratio (each between two matmuls)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks (slow to compile on CPUs)")
    p.add_argument("--no-train", action="store_true", help="skip the Stage 1A/1B training-step rows")
    p.add_argument("--only-step", action="store_true",
                   help="only the Stage 1A step rows against the matmul rate (float32 and bf16; with --compile also compiled)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        preset, stage, batch, device = a.child.split(":", 3)
        print(json.dumps(child_step(preset, stage, int(batch), device)))
        return
    device = torch.device(a.device)
    start = time.perf_counter()
    n = matmul_size(device)
    rates = lambda: (f"float32 {Matmul(device, torch.float32).rate() / 1e9:.0f} GFLOP/s, "
                     f"bfloat16 {Matmul(device, torch.bfloat16).rate() / 1e9:.0f} GFLOP/s")
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, batch {a.batch}")
    print(f"dense matmul {n}^3 at the start: {rates()}")
    print("'of matmul': achieved FLOP/s (analytic count) / the matmul FLOP/s of the same dtype, median of "
          f"{a.rounds} rounds each timed between two matmuls (range in brackets)\n")
    print("| preset | measurement | result | of matmul FLOP/s / notes |")
    print("|---|---|---|---|")
    for name in a.presets:
        rows = (train_step_rows(name, flowmo.get_preset(name), a.batch, device, a.compile, a.rounds) if a.only_step
                else bench_preset(name, a.batch, device, a.compile, a.rounds, train=not a.no_train))
        for row in rows:
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"\ndense matmul {n}^3 at the end: {rates()}")
    print(f"benchmark wall time: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
