"""Speed and memory of FlowMo on this machine, as ratios to its own measured limits.

    python benchmarks/bench.py                    # small and medium presets on the CPU
    python benchmarks/bench.py --presets medium --batch 4 --compile --device cuda

Prints a markdown table. Every speed is measured in this run next to the dense-matmul
FLOP/s of the same device and dtype, so the "of matmul" column is comparable between
(noisy, shared) machines. Peak memory of each training step is measured in a fresh
subprocess (CPU: growth of the resident set; CUDA: max_memory_allocated).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowmo  # noqa: E402
from flowmo.flops import decoder_flops, encoder_flops  # noqa: E402


def best_time(fn, reps: int, sync) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def matmul_flops(device, dtype, n: int = 2048, reps: int = 5) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / best_time(lambda: a @ b, reps, _sync(device))


def _sync(device):
    if device.type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def child_step(preset: str, stage: str, batch: int, device: str) -> dict:
    """One training step of a stage in this (fresh) process; returns time and peak memory."""
    dev = torch.device(device)
    spec = flowmo.get_preset(preset)
    if stage == "1b":
        spec = spec.replace(posttrain={"name": "mode_seeking", "k": 8, "checkpoint": True})
    torch.manual_seed(0)
    model = flowmo.build(spec).to(dev).train()
    s = spec.image_size
    x = torch.rand(batch, 3, s, s, device=dev) * 2 - 1
    g = torch.Generator(dev).manual_seed(0)
    objective = "posttrain" if stage == "1b" else "flow"
    sync = _sync(dev)

    def step():
        out = model(x, objective=objective, generator=g)
        out.total.backward()
        for p in model.parameters():
            p.grad = None

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    else:
        base = _reset_peak_rss()
    t = best_time(step, 1, sync)  # one warm-up step, one timed step (Stage 1B steps are long on CPUs)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) - base
    else:
        peak = _peak_rss() - base
    saved = saved_activation_bytes(lambda: model(x, objective=objective, generator=g))  # after the peak
    return {"seconds": t, "peak_bytes": peak, "saved_bytes": saved}


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


def saved_activation_bytes(forward) -> int:
    """Bytes of the distinct storages autograd keeps for backward after ``forward()``
    (what gradient checkpointing reduces; tensors inside checkpointed regions are not kept)."""
    seen: set[int] = set()
    total = 0

    def pack(t):
        nonlocal total
        st = t.untyped_storage()
        if st.data_ptr() not in seen:
            seen.add(st.data_ptr())
            total += st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    del out
    return total


def run_child(preset, stage, batch, device) -> dict:
    cmd = [sys.executable, __file__, "--child", f"{preset}:{stage}:{batch}:{device}"]
    # large blocks via mmap and no trimming threshold: freed memory leaves the resident set,
    # so its high-water mark tracks the peak of live tensors
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_preset(name: str, batch: int, device: torch.device, do_compile: bool, mm32: float, mm16: float):
    """Yields table rows as they are measured."""
    spec = flowmo.get_preset(name)
    torch.manual_seed(0)
    model = flowmo.build(spec).to(device).eval()
    s = spec.image_size
    x = torch.rand(batch, 3, s, s, device=device) * 2 - 1
    t = torch.rand(batch, device=device)
    cond = torch.randn(batch, spec.code_length, spec.code_channels + 1, device=device)
    sync = _sync(device)
    with torch.no_grad():
        enc = best_time(lambda: model.encode(x), 3, sync)
        dec = best_time(lambda: model.decoder_velocity(x, t, cond), 3, sync)
        fl = decoder_flops(spec) * batch
        yield ((name, "encode", f"{batch / enc:.1f} images/s",
                     f"{encoder_flops(spec) * batch / enc / mm32:.0%}"))
        yield ((name, "decoder call, float32", f"{batch / dec:.1f} images x calls/s",
                     f"{fl / dec / mm32:.0%} ({fl / dec / 1e9:.1f} GFLOP/s)"))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            dec16 = best_time(lambda: model.decoder_velocity(x, t, cond), 3, sync)
        yield ((name, "decoder call, bf16 autocast", f"{batch / dec16:.1f} images x calls/s",
                     f"{fl / dec16 / mm16:.0%} of bf16 matmul; {dec / dec16:.2f}x float32"))
        if do_compile:
            compiled = flowmo.build(spec).to(device).eval()
            compiled.load_state_dict(model.state_dict())
            compiled.compile()
            t0 = time.perf_counter()
            compiled.decoder_velocity(x, t, cond)
            sync()
            ctime = time.perf_counter() - t0
            decc = best_time(lambda: compiled.decoder_velocity(x, t, cond), 3, sync)
            yield ((name, "decoder call, compiled", f"{batch / decc:.1f} images x calls/s",
                         f"{fl / decc / mm32:.0%}; {dec / decc:.2f}x eager (compile {ctime:.0f} s)"))
        code = model.quantize(model.encode(x)).values
        g = torch.Generator(device).manual_seed(0)
        t0 = time.perf_counter()  # one decode (the decoder calls were warmed up above)
        out = model.decode(code, generator=g)
        sync()
        rec = time.perf_counter() - t0
        yield ((name, f"reconstruction ({out.decoder_calls} decoder calls)", f"{rec / batch:.3f} s/image", ""))
    a = run_child(name, "1a", batch, str(device))
    b = run_child(name, "1b", batch, str(device))
    mib = lambda v: f"{v / 2**20:.0f} MiB"
    yield ((name, "Stage 1A step", f"{a['seconds']:.2f} s",
                 f"peak +{mib(a['peak_bytes'])}; saved for backward {mib(a['saved_bytes'])}"))
    yield ((name, "Stage 1B step (K=8, checkpointed)", f"{b['seconds']:.2f} s",
                 f"peak +{mib(b['peak_bytes'])} ({b['peak_bytes'] / max(a['peak_bytes'], 1):.2f}x 1A); "
                 f"saved {mib(b['saved_bytes'])} ({b['saved_bytes'] / max(a['saved_bytes'], 1):.2f}x 1A)"))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["small", "medium"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks (slow to compile on CPUs)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        preset, stage, batch, device = a.child.split(":", 3)
        print(json.dumps(child_step(preset, stage, int(batch), device)))
        return
    device = torch.device(a.device)
    mm32 = matmul_flops(device, torch.float32)
    mm16 = matmul_flops(device, torch.bfloat16)
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, batch {a.batch}")
    print(f"dense matmul 2048^3: float32 {mm32 / 1e9:.1f} GFLOP/s, bfloat16 {mm16 / 1e9:.1f} GFLOP/s\n")
    print("| preset | measurement | result | of matmul FLOP/s / notes |")
    print("|---|---|---|---|")
    for name in a.presets:
        for row in bench_preset(name, a.batch, device, a.compile, mm32, mm16):
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"\nmatmul again at the end: float32 {matmul_flops(device, torch.float32) / 1e9:.1f} GFLOP/s")


if __name__ == "__main__":
    main()
