"""FlowMo on one GPU: the Stage 1A training step, decoding, host syncs and a 1-process DDP step.

    python benchmarks/gpu.py --json gpu.json                            # CUDA: flowmo_lo, batch 8
    python benchmarks/gpu.py --device cpu --preset tiny --no-compile    # smoke test (seconds)

Rows (each measured in its own try/except: a failure prints its error in the row's cells and
the script goes on):

- the reference: a dense matmul of the working dtype (bf16 under autocast, the default on CUDA;
  float32 on CPUs, where ``--autocast auto`` does not autocast), 8192^3 on CUDA and 2048^3 on
  CPUs (benchmarks/bench.py's ``Matmul``), its FLOP/s;
- the Stage 1A training step (zero_grad, the loss under autocast, backward, Adam fused where the
  device has it; the parameters no loss reaches frozen first, as the trainer does), eager and
  compiled (as ``train.compile`` does: the draws made first, the loss, forward and backward, one
  ``torch.compile`` graph): time per
  step and the fraction of the reference matmul's FLOP/s it reaches (analytic FLOPs of
  benchmarks/flops.py, backward counted as twice the forward), median and range over rounds,
  each timed between two matmuls (bench.py's ``ratio_to_matmul``); the compile time (the first
  compiled step's wall time); the peak memory of a step (CUDA: max_memory_allocated, weights,
  gradients and Adam state included; CPU: the resident set's high-water mark);
- decoding (no gradients, autocast as above, a fresh eager model in eval mode): images/s with
  the model's default sampler (the release's: 25 Euler steps with guidance, 31 decoder calls)
  and with the ``distillation-4`` preset (the 4-step sampler a distilled decoder records in its
  spec; the weights here are random, which does not change the speed);
- host syncs per training step and per decode call, counted by
  ``flowmo.testing.syncs.count_host_syncs`` (any device; the main number; it also counts reads of
  tensors that live on the host, such as the sampler's time grid) and on CUDA also as the
  warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (real device syncs only);
- a DistributedDataParallel step in a 1-process group (nccl on CUDA, gloo on CPUs, a free
  localhost port) against the plain step, both eager, interleaved round by round: the median
  ratio and its range.

Prints progress, then a markdown table; ``--json PATH`` also writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import socket
import statistics
import sys
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flowmo  # noqa: E402
from benchmarks.bench import (Matmul, _peak_rss, _reset_peak_rss, _sync, _timed,  # noqa: E402
                              matmul_size, ratio_to_matmul)  # noqa: E402
from benchmarks.flops import decoder_flops, encoder_flops  # noqa: E402
from flowmo.losses import Distillation  # noqa: E402
from flowmo.spec import DistillationSpec, FlowMoSpec  # noqa: E402
from flowmo.testing.syncs import count_host_syncs  # noqa: E402
from flowmo.train.config import OptimConfig  # noqa: E402

FEW_STEP = "distillation-4"
ROWS = (
    "dense matmul (reference)",
    "train step, eager",
    "peak memory, eager step",
    "host syncs per train step (eager)",
    "DDP (world 1) step / plain step",
    "compile time (first compiled step)",
    "train step, compiled",
    "peak memory, compiled step",
    "decode, default sampler",
    f"decode, {FEW_STEP}",
    "host syncs per decode, default sampler",
    f"host syncs per decode, {FEW_STEP}",
)
"""Every row the table holds, in order (the compiled ones say "skipped" under --no-compile)."""


# ----------------------------------------------------------------------------- the training step
def make_train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, *, compile: bool,
                    autocast_dtype: Optional[torch.dtype]) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """One Stage 1A optimizer step as a function ``step(images, generator) -> loss``, built as
    flowmo's trainer builds its step (``Trainer._micro_loss`` with ``train.compile``).

    ``model`` is a :class:`flowmo.FlowMo` in training mode, or a DistributedDataParallel
    wrapping one (its forward is the loss). Every draw is made first
    (:meth:`flowmo.FlowMo.loss_draws`), so the loss takes no generator and, with ``compile``,
    ``torch.compile`` traces it as one graph (``fullgraph=True`` without DDP, whose buckets split
    it); ``autocast_dtype`` (e.g. torch.bfloat16) runs the loss under ``torch.autocast`` of the
    model's device type, None without autocast. The step: zero_grad (to None), the loss with
    ``check_values=False``, backward, optimizer.step(). ``images`` (B, 3, S, S) in [-1, 1] on the
    model's device; returns the detached float32 loss (a 0-dim tensor, not read: the step itself
    adds no host sync).
    """
    flowmo_model = getattr(model, "module", model)
    ddp = flowmo_model is not model
    loss_fn = torch.compile(model, fullgraph=not ddp) if compile else model
    device_type = next(model.parameters()).device.type

    def cast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    def step(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        draws = flowmo_model.loss_draws(images, generator)
        with cast():
            loss = loss_fn(images, check_values=False, **draws).total
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def freeze_unused(model: flowmo.FlowMo) -> list[str]:
    """Freeze (requires_grad False) the parameters a Stage 1A loss gives no gradient or an exactly
    zero one, found by one backward on random images without CFG dropout, as flowmo's trainer does
    before it wraps the model in DDP (the encoder's time and modulation layers, the heads whose
    output is unused, ...): DDP then needs no unused-parameter search. Returns their names."""
    s, device = model.spec.image_size, model.device
    g = torch.Generator(device).manual_seed(3)
    x = torch.rand(2, 3, s, s, generator=g, device=device) * 2 - 1
    model.train()
    model(x, generator=g, cfg_dropout=False).total.backward()
    unused = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]
    for n, p in model.named_parameters():
        p.grad = None
        if n in unused:
            p.requires_grad_(False)
    return unused


def make_optimizer(model: torch.nn.Module) -> tuple[torch.optim.Optimizer, str]:
    """Adam with the trainer's default hyper-parameters (:class:`~flowmo.train.config.OptimConfig`),
    fused where this torch and device have the fused kernel, else foreach; and which it is."""
    o = OptimConfig()
    params = [p for p in model.parameters() if p.requires_grad]
    kw = dict(lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    try:
        return torch.optim.Adam(params, fused=True, **kw), "fused"
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(params, foreach=True, **kw), "foreach"


def train_flops(spec: FlowMoSpec, batch: int) -> int:
    """FLOPs of one Stage 1A step: encoder and decoder forward (one decoder call per image; no
    perceptual network in the presets) and their backward, counted as twice the forward."""
    return 3 * (encoder_flops(spec) + decoder_flops(spec)) * batch


def benchmark_spec(preset: str) -> FlowMoSpec:
    """The preset's spec with the few-step preset recorded as a distilled decoder records it
    (``sampler_presets``: the 4 unguided Euler steps the distillation objective trains for)."""
    spec = flowmo.get_preset(preset)
    name, sampler = Distillation(DistillationSpec(k=4)).sampler_preset()
    return FlowMoSpec.model_validate({**spec.model_dump(), "sampler_presets": {name: sampler.model_dump()}})


# ----------------------------------------------------------------------------- helpers
def autocast_dtype(mode: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of ``--autocast``: "bf16" bfloat16, "none" None (float32), "auto"
    bfloat16 on CUDA and None elsewhere (the rule of flowmo's ``train.autocast: auto``)."""
    return torch.bfloat16 if mode == "bf16" or (mode == "auto" and device.type == "cuda") else None


def _dtype_name(dtype: torch.dtype) -> str:
    return {torch.bfloat16: "bf16", torch.float32: "float32"}.get(dtype, str(dtype))


def _fmt_rate(flops_per_s: float) -> str:
    return f"{flops_per_s / 1e12:.1f} TFLOP/s" if flops_per_s >= 1e12 else f"{flops_per_s / 1e9:.0f} GFLOP/s"


def _fmt_bytes(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if abs(n) >= 2**30 else f"{n / 2**20:.0f} MiB"


def _fmt_time(s: float) -> str:
    return f"{s:.2f} s" if s >= 1 else f"{s * 1e3:.1f} ms"


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_syncs(fn: Callable[[], Any], device: torch.device) -> dict:
    """Host syncs of one call of ``fn``: ``count`` by :func:`count_host_syncs` (with its
    ``report``), and on CUDA ``cuda_warnings``, the "synchronizing CUDA operation" warnings
    under ``torch.cuda.set_sync_debug_mode("warn")`` (None elsewhere)."""
    cuda = device.type == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with count_host_syncs() as syncs:
                fn()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    cuda_count = sum("synchroniz" in str(w.message).lower() for w in caught) if cuda else None
    if cuda:
        torch.cuda.synchronize(device)
    return {"count": syncs.count, "cuda_warnings": cuda_count, "report": syncs.report()}


def _sync_cells(s: dict) -> tuple[str, str]:
    sites = "; ".join(s["report"].splitlines()[1:4])
    cuda = "" if s["cuda_warnings"] is None else f"CUDA sync-debug warnings: {s['cuda_warnings']}; "
    return str(s["count"]), f"{cuda}sites: {sites or 'none'}"


@dataclass
class Row:
    """One table row: ``result`` and ``notes`` as printed, ``data`` the numbers behind them,
    ``status`` "ok", "error" or "skipped"."""

    name: str
    result: str
    notes: str = ""
    status: str = "ok"
    data: dict = field(default_factory=dict)


class Table:
    """Rows in measuring order; :meth:`measure` runs one row's measurement defensively.
    ``on_row(table)`` is called after each row (the JSON file is rewritten: a run stopped
    half-way keeps the rows it measured)."""

    def __init__(self, on_row: Optional[Callable[["Table"], None]] = None) -> None:
        self.rows: list[Row] = []
        self.start = time.perf_counter()
        self.on_row = on_row or (lambda table: None)

    def _log(self, text: str) -> None:
        print(f"[{time.perf_counter() - self.start:6.1f} s] {text}", flush=True)

    def measure(self, name: str, fn: Callable[[], tuple[str, str, dict]]) -> Row:
        """Run ``fn`` -> (result, notes, data) as row ``name``; an exception becomes an error row."""
        self._log(f"{name} ...")
        try:
            result, notes, data = fn()
            row = Row(name, result, notes, "ok", data)
        except Exception as e:  # noqa: BLE001: every failure becomes a row, the run goes on
            traceback.print_exc()
            msg = " ".join(str(e).split())[:300]
            row = Row(name, "error", f"{type(e).__name__}: {msg}", "error", {})
        if row.status == "error":
            _free_memory()  # after the except block: the exception's frames no longer hold tensors
        self._log(f"  -> {row.result}; {row.notes}")
        self.rows.append(row)
        self.on_row(self)
        return row

    def skip(self, name: str, why: str) -> Row:
        row = Row(name, "skipped", why, "skipped", {})
        self._log(f"{name}: skipped ({why})")
        self.rows.append(row)
        self.on_row(self)
        return row

    def markdown(self) -> str:
        cell = lambda s: s.replace("|", "\\|").replace("\n", " ")
        lines = ["| measurement | result | notes |", "|---|---|---|"]
        lines += [f"| {cell(r.name)} | {cell(r.result)} | {cell(r.notes)} |" for r in self.rows]
        return "\n".join(lines)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- the measurements
class Bench:
    """The model, optimizer and data of one run, built when a row first needs them."""

    def __init__(self, args: argparse.Namespace, device: torch.device):
        self.args = args
        self.device = device
        self.spec = benchmark_spec(args.preset)
        self.dtype = autocast_dtype(args.autocast, device)
        self.ref_dtype = self.dtype or torch.float32
        self.sync = _sync(device)
        self.cuda = device.type == "cuda"
        self._ref: Optional[Matmul] = None
        self._train: Optional[dict] = None
        self._decode: Optional[dict] = None
        self.eager_step_s: Optional[float] = None
        self.warm: set = set()  # what ran once already (warm-ups skipped)

    @property
    def ref(self) -> Matmul:
        if self._ref is None:
            self._ref = Matmul(self.device, self.ref_dtype)
        return self._ref

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @property
    def precision(self) -> str:
        return "float32" if self.dtype is None else f"{_dtype_name(self.dtype)} autocast"

    def ratio(self, r: dict) -> str:
        return f"{r['median']:.1%} of {_dtype_name(self.ref_dtype)} matmul (rounds {r['low']:.1%}-{r['high']:.1%})"

    def training(self) -> dict:
        if self._train is None:
            torch.manual_seed(0)
            model = flowmo.build(self.spec).to(self.device).train()
            frozen = freeze_unused(model)
            optimizer, kind = make_optimizer(model)
            s, b = self.spec.image_size, self.args.batch
            g = torch.Generator(self.device).manual_seed(1)
            x = torch.rand(b, 3, s, s, generator=g, device=self.device) * 2 - 1
            self._train = {"model": model, "optimizer": optimizer, "adam": kind, "x": x, "frozen": len(frozen),
                           "g": torch.Generator(self.device).manual_seed(0),
                           "flops": train_flops(self.spec, b) * self.args.steps}
        return self._train

    def drop_training(self) -> None:
        self._train = None
        _free_memory()

    def steps(self, step) -> Callable[[], None]:
        t = self.training()
        return lambda: [step(t["x"], t["g"]) for _ in range(self.args.steps)]

    def peak_memory(self, fn: Callable[[], Any]) -> tuple[str, str, dict]:
        """Peak memory of one call of ``fn`` (already warmed up)."""
        if self.cuda:
            self.sync()
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            self.sync()
            peak = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            return (_fmt_bytes(peak), f"torch.cuda.max_memory_allocated (reserved {_fmt_bytes(reserved)}); "
                    "weights, gradients, Adam state and activations", {"peak_bytes": peak, "reserved_bytes": reserved})
        try:
            base = _reset_peak_rss()
            fn()
            peak = _peak_rss()
        except (OSError, KeyError) as e:
            return "n/a", f"resident set not readable here ({e})", {}
        return (f"{_fmt_bytes(peak)} resident", f"the process's peak resident set during one step, "
                f"{(peak - base) / 2**20:+.1f} MiB over the step's start (freed memory stays with the allocator)",
                {"peak_rss_bytes": peak, "rss_growth_bytes": peak - base})

    # -- rows
    def matmul(self) -> tuple[str, str, dict]:
        rate = self.ref.rate()
        n = matmul_size(self.device)
        name = _dtype_name(self.ref_dtype)
        return _fmt_rate(rate), f"{n}^3 {name} torch.mm, best of 5; the reference of every '% of {name} matmul'", {
            "n": n, "dtype": name, "flops_per_s": rate}

    def train_rows(self, table: Table, compiled: bool) -> None:
        """The step's rows: (compiled: the compile time), the speed, the peak memory."""
        label = "compiled" if compiled else "eager"
        built: dict = {}

        def build() -> Callable:
            t = self.training()
            return make_train_step(t["model"], t["optimizer"], compile=compiled, autocast_dtype=self.dtype)

        def compile_row():
            step, t = build(), self.training()
            first = _timed(lambda: step(t["x"], t["g"]), self.sync)
            second = _timed(lambda: step(t["x"], t["g"]), self.sync)
            built["step"] = step  # only a step that ran: a failed compile is not retried by the rows below
            return _fmt_time(first), f"wall time of the first compiled step (the second: {_fmt_time(second)})", {
                "first_step_s": first, "second_step_s": second}

        def step() -> Callable:
            if "step" not in built:
                raise RuntimeError(f"the {label} step was not built (see the row above)")
            return built["step"]

        def speed():
            t = self.training()
            if not compiled:
                built["step"] = build()
                built["step"](t["x"], t["g"])  # warm-up: Adam's state, kernels, the allocator's pools
                self.warm.add("train")
            r = ratio_to_matmul(self.steps(step()), t["flops"], self.ref, self.args.rounds)
            per_step = r["best_s"] / self.args.steps
            vs = ""
            if not compiled:
                self.eager_step_s = per_step
            elif self.eager_step_s is not None:
                vs = f"; {self.eager_step_s / per_step:.2f}x eager's speed"
            return (f"{_fmt_time(per_step)} per step ({self.args.batch / per_step:.1f} images/s)",
                    f"{self.ratio(r)}{vs}; Adam {t['adam']} ({t['frozen']} unused tensors frozen), {self.precision}, "
                    f"batch {self.args.batch}",
                    {**r, "step_s": per_step, "images_per_s": self.args.batch / per_step,
                     "step_flops": t["flops"] / self.args.steps, "adam": t["adam"]})

        def memory():
            t = self.training()
            return self.peak_memory(lambda: step()(t["x"], t["g"]))

        if compiled:
            table.measure("compile time (first compiled step)", compile_row)
        table.measure(f"train step, {label}", speed)
        table.measure(f"peak memory, {label} step", memory)

    def train_syncs(self) -> tuple[str, str, dict]:
        t = self.training()
        step = make_train_step(t["model"], t["optimizer"], compile=False, autocast_dtype=self.dtype)
        if "train" not in self.warm:
            step(t["x"], t["g"])
            self.sync()
        s = count_syncs(lambda: step(t["x"], t["g"]), self.device)
        return (*_sync_cells(s), s)

    def ddp(self) -> tuple[str, str, dict]:
        """DDP in a 1-process group against the plain step (both eager), interleaved by round."""
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel as DDP

        t = self.training()
        backend = "nccl" if self.cuda else "gloo"
        own_group = not dist.is_initialized()
        saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT")}
        if own_group:
            os.environ["MASTER_ADDR"] = "127.0.0.1"
            os.environ["MASTER_PORT"] = str(free_port())
            dist.init_process_group(backend, init_method="env://", rank=0, world_size=1)
        try:
            ids = [self.device.index] if self.cuda else None
            with warnings.catch_warnings():  # newer torch deprecates the name; the trainer's setting
                warnings.simplefilter("ignore", FutureWarning)
                wrapped = DDP(t["model"], device_ids=ids, broadcast_buffers=False)
            plain = make_train_step(t["model"], t["optimizer"], compile=False, autocast_dtype=self.dtype)
            ddp = make_train_step(wrapped, t["optimizer"], compile=False, autocast_dtype=self.dtype)
            run_plain, run_ddp = self.steps(plain), self.steps(ddp)
            run_ddp()
            run_plain()
            self.sync()
            ratios, best_plain, best_ddp = [], float("inf"), float("inf")
            for i in range(self.args.rounds):
                if i % 2:
                    d, p = _timed(run_ddp, self.sync), _timed(run_plain, self.sync)
                else:
                    p, d = _timed(run_plain, self.sync), _timed(run_ddp, self.sync)
                ratios.append(d / p)
                best_plain, best_ddp = min(best_plain, p), min(best_ddp, d)
        finally:
            wrapped = ddp = run_ddp = None  # the reducer (and its gradient hooks) goes before the group
            gc.collect()
            if own_group:
                dist.destroy_process_group()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
        n = self.args.steps
        med = statistics.median(ratios)
        return (f"{med:.3f}x",
                f"median of {len(ratios)} interleaved rounds (range {min(ratios):.3f}-{max(ratios):.3f}); "
                f"{backend}; eager steps: DDP {_fmt_time(best_ddp / n)}, plain {_fmt_time(best_plain / n)}",
                {"median": med, "low": min(ratios), "high": max(ratios), "backend": backend,
                 "ddp_step_s": best_ddp / n, "plain_step_s": best_plain / n})

    def decoding(self) -> dict:
        if self._decode is None:
            torch.manual_seed(0)
            model = flowmo.build(self.spec).to(self.device).eval()
            s, b = self.spec.image_size, self.args.decode_batch
            g = torch.Generator(self.device).manual_seed(2)
            x = torch.rand(b, 3, s, s, generator=g, device=self.device) * 2 - 1
            with torch.no_grad():
                code = model.quantize(model.encode(x), losses=False).values
            self._decode = {"model": model, "code": code, "g": torch.Generator(self.device).manual_seed(0)}
        return self._decode

    def _decode_call(self, sampler: Optional[str], batch: Optional[int] = None):
        d = self.decoding()
        code = d["code"] if batch is None else d["code"][:batch]

        def call():
            with torch.no_grad(), self.autocast():
                out = d["model"].decode(code, generator=d["g"], sampler=sampler)
            self.warm.add(("decode", sampler))
            return out
        return call

    def decode(self, sampler: Optional[str]) -> tuple[str, str, dict]:
        calls = self._decode_call(sampler, batch=1)().decoder_calls  # per image: one image tells
        call = self._decode_call(sampler)
        b = self.args.decode_batch
        r = ratio_to_matmul(call, calls * decoder_flops(self.spec) * b, self.ref, self.args.rounds)
        what = "the model's default sampler (the release's)" if sampler is None else f"sampler={sampler!r}"
        return (f"{b / r['best_s']:.2f} images/s",
                f"{calls} decoder calls per image, {what}; {_fmt_time(r['best_s'])} per batch of {b}; "
                f"{self.ratio(r)}; {self.precision}",
                {**r, "decoder_calls": calls, "images_per_s": b / r["best_s"], "batch": b})

    def decode_syncs(self, sampler: Optional[str]) -> tuple[str, str, dict]:
        call = self._decode_call(sampler)
        if ("decode", sampler) not in self.warm:
            call()
            self.sync()
        s = count_syncs(call, self.device)
        return (*_sync_cells(s), s)


def _device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: CUDA is not available on this machine")
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
    return device


def run(args: argparse.Namespace) -> tuple[Table, dict]:
    """All rows (see :data:`ROWS`); returns the table and the run's description."""
    device = _device(args.device)
    info = {"device": str(device), "torch": torch.__version__, "preset": args.preset, "batch": args.batch,
            "decode_batch": args.decode_batch, "steps": args.steps, "rounds": args.rounds,
            "compile": not args.no_compile, "autocast": args.autocast, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    print("  ".join(f"{k}: {v}" for k, v in info.items()), flush=True)

    def write_json(table: Table) -> None:
        if args.json:
            info["wall_s"] = time.perf_counter() - table.start
            record = {"run": {**info, "complete": len(table.rows) == len(ROWS)},
                      "rows": [asdict(r) for r in table.rows]}
            args.json.write_text(json.dumps(record, indent=2) + "\n")

    table = Table(write_json)
    bench = Bench(args, device)
    table.measure(ROWS[0], bench.matmul)
    bench.train_rows(table, compiled=False)
    table.measure(ROWS[3], bench.train_syncs)
    table.measure(ROWS[4], bench.ddp)
    if args.no_compile:
        for name in ROWS[5:8]:
            table.skip(name, "--no-compile")
    else:
        bench.train_rows(table, compiled=True)
    bench.drop_training()
    table.measure(ROWS[8], lambda: bench.decode(None))
    table.measure(ROWS[9], lambda: bench.decode(FEW_STEP))
    table.measure(ROWS[10], lambda: bench.decode_syncs(None))
    table.measure(ROWS[11], lambda: bench.decode_syncs(FEW_STEP))
    info["wall_s"] = time.perf_counter() - table.start
    write_json(table)
    return table, info


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="flowmo_lo", choices=sorted(flowmo.PRESETS),
                   help="a flowmo preset (flowmo_lo: the release's FlowMo-Lo, 256 px; tiny: flowmo.flowmo_tiny())")
    p.add_argument("--batch", type=int, default=8, help="training images per step (the release: 8 per GPU)")
    p.add_argument("--decode-batch", type=int, default=None, help="images per decode call (default: --batch)")
    p.add_argument("--steps", type=int, default=None,
                   help="training steps per timed round (default: 2 on CUDA, else 1)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per measurement (default: 3 on CUDA, 2 else)")
    p.add_argument("--autocast", choices=("auto", "bf16", "none"), default="auto",
                   help="auto (default): bf16 autocast on CUDA, float32 elsewhere (the trainer's train.autocast rule)")
    p.add_argument("--no-compile", action="store_true", help="skip the compiled training step")
    p.add_argument("--json", type=Path, help="also write the rows and the run's description here")
    args = p.parse_args(argv)
    try:
        cuda = torch.device(args.device).type == "cuda"
    except RuntimeError:
        p.error(f"--device must be a torch device such as cuda, cuda:0 or cpu, got {args.device!r}")
    args.steps = (2 if cuda else 1) if args.steps is None else args.steps
    args.rounds = (3 if cuda else 2) if args.rounds is None else args.rounds
    for name in ("batch", "steps", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer, got {getattr(args, name)}")
    if args.decode_batch is None:
        args.decode_batch = args.batch
    elif args.decode_batch < 1:
        p.error(f"--decode-batch must be a positive integer, got {args.decode_batch}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
    table, info = run(args)
    print()
    print(f"preset {args.preset}, {info.get('device_name', info['device'])}, torch {info['torch']}, "
          f"batch {args.batch} (decode {args.decode_batch}), {args.rounds} rounds of {args.steps} steps")
    print(table.markdown())
    print(f"\nbenchmark wall time: {info['wall_s']:.0f} s")
    if args.json:
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
