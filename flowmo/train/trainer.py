"""The trainer for Stage 1A (rectified flow) and Stage 1B (mode-seeking post-training).

Deterministic by construction: every random draw of step s, micro-batch m comes from a
generator seeded by (seed, s, m), and the data of each micro-batch from a permutation
seeded by (seed, epoch). A run interrupted at step k and resumed from its checkpoint thus
reaches the same weights as an uninterrupted run (bitwise on one CPU process), and
``world_size`` processes with ``grad_accum`` a give the same updates as one process with
``grad_accum`` a x world_size (same global batch, up to float summation order).

This module holds the loop (set-up, one step, ``fit``, SIGTERM); its other responsibilities live
beside it: the data order (:mod:`~flowmo.train.sampler`), EMA and renormalisation
(:mod:`~flowmo.train.ema`), checkpoints of a run (:mod:`~flowmo.train.checkpointing`), held-out
evaluation and images (:mod:`~flowmo.train.evaluation`), the parameters trained
(:mod:`~flowmo.train.freezing`) and the metric records (:mod:`~flowmo.train.records`).
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..data.files import atomic_write_text
from ..devices import DistContext, init_process_group, resolve_device
from ..model import FlowMo
from .checkpoint import CheckpointError, latest_checkpoint
from .checkpointing import CheckpointingMixin
from .config import TrainConfig, read_train_config
from .counters import Counters
from .ema import block_linear_weights, ema_update_, renormalize_
from .evaluation import EvaluationMixin
from .freezing import FreezingMixin
from .records import RecordsMixin
from .sampler import StepBatchSampler, _collate, _Indexed, derive_seed

__all__ = ["Trainer", "derive_seed", "StepBatchSampler", "TrainingStopped", "renormalize_", "ema_update_"]


class TrainingStopped(RuntimeError):
    """The run stopped itself (e.g. too many non-finite losses in a row)."""


# ---------------------------------------------------------------------------------- trainer
class Trainer(CheckpointingMixin, EvaluationMixin, FreezingMixin, RecordsMixin):
    """Trains a FlowMo model as a TrainConfig says, writing into ``out_dir``.

    ``out_dir`` gets ``config.json`` (the resolved config), ``checkpoints/``, ``metrics.jsonl``,
    ``images/`` (inputs next to reconstructions), ``eval/`` and TensorBoard events. With
    ``resume=True`` training continues from the newest complete checkpoint in ``out_dir``.
    """

    def __init__(self, config: TrainConfig, out_dir: Union[str, Path], *, resume: bool = False,
                 log: Optional[Callable[[str], None]] = None):
        self.config = config
        self.tc = config.train
        self.out = Path(out_dir)
        self.ctx = DistContext.from_env()
        self.device = resolve_device(self.tc.device, "train.device", self.ctx)  # the one device rule
        init_process_group(self.device, self.ctx, timeout_s=self.tc.dist_timeout_s)
        if self.tc.threads is not None:
            torch.set_num_threads(self.tc.threads)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._log = log or (lambda s: print(s, flush=True))
        self.counters = Counters()
        self.step = 0

        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(derive_seed(self.tc.seed, "init"))
            self.model = FlowMo(config.model)
        self.model.to(self.device)
        # loss objects may need weight files: fail now, before any training
        _ = self.model.flow_loss
        if self.tc.stage == "1b":
            _ = self.model.posttrain_objective
        self.targets: dict[str, Tensor] = {}
        self.ema: dict[str, Tensor] = {}
        self.ema_step = 0  # the step of the EMA's last update (or of its initialisation)

        ckpt = latest_checkpoint(self.ckpt_dir) if resume else None
        if resume and ckpt is None and self.ctx.main:
            self._log(f"no checkpoint in {self.ckpt_dir}; starting from step 0")
        if ckpt is None and self.tc.stage == "1b":
            self._load_init(Path(self.tc.init_from))
        self._freeze_unused()
        self.linear_weights = block_linear_weights(self.model)
        if not self.targets:
            self.targets = {n: torch.linalg.vector_norm(w.detach().float()).cpu() for n, w in self.linear_weights.items()}
        if not self.ema and self.tc.ema.enabled:
            self.ema = {n: p.detach().clone().float() for n, p in self.model.named_parameters()}
        if self.tc.stage == "1b":
            self._freeze_encoder()
        self.optimizer = self._make_optimizer()
        if ckpt is not None:
            self._restore(ckpt)
        # freeze_encoder_at = 0, or a resumed run already at/past the freeze step whose checkpoint
        # was written before the freeze: frozen before any (further) step
        self._apply_encoder_freeze(wrap=False)
        self.ddp = self._wrap()
        self._data_iter: Optional[Iterator] = None
        self._writer = None
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()

    # ---------------------------------------------------------------- setup helpers
    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    @property
    def objective(self) -> str:
        return "posttrain" if self.tc.stage == "1b" else "flow"

    def _write_config(self) -> None:
        path = self.out / "config.json"
        text = self.config.model_dump_json(indent=2)
        if path.is_file():
            old = read_train_config(path)
            if old.model.fingerprint() != self.config.model.fingerprint():
                raise CheckpointError(
                    f"{self.out} holds a run of a different model architecture; use another output folder"
                )
        atomic_write_text(path, text + "\n")

    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.tc.optim
        params = self._trainable()
        self._opt_names = {i: n for i, (n, _) in enumerate(params)}
        return torch.optim.Adam([p for _, p in params], lr=o.lr, betas=o.betas, eps=o.eps,
                                weight_decay=o.weight_decay)

    def _wrap(self) -> nn.Module:
        if not self.ctx.enabled:
            return self.model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(self.model, device_ids=ids, broadcast_buffers=False)

    # ---------------------------------------------------------------- data
    def _dataset(self):
        from ..data.folders import BuiltinPhotos, ImageFolderDataset

        d = self.tc.data
        s = self.config.model.image_size
        if d.folder is None:
            return BuiltinPhotos(s, train=True, length=d.builtin_length, seed=self.tc.seed, hflip=d.hflip)
        return ImageFolderDataset(d.folder, s, train=True, seed=self.tc.seed, hflip=d.hflip)

    def _batches(self) -> Iterator[tuple[Tensor, list[str]]]:
        ds = self._dataset()
        o = self.tc.optim
        sampler = StepBatchSampler(len(ds), o.batch_size, o.grad_accum, self.ctx.world, self.ctx.rank,
                                   self.tc.seed, start_step=self.step)
        loader = torch.utils.data.DataLoader(
            _Indexed(ds), batch_sampler=sampler, num_workers=self.tc.data.workers, collate_fn=_collate,
            pin_memory=self.device.type == "cuda", persistent_workers=self.tc.data.workers > 0,
        )
        return iter(loader)

    # ---------------------------------------------------------------- one step
    def _autocast(self):
        mode = self.tc.autocast
        use = mode == "bf16" or (mode == "auto" and self.device.type == "cuda")
        if not use:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _lr(self, step: int) -> float:
        """The learning rate of the step taken when the counter reads ``step`` (0-based): step
        k = step + 1 uses lr * min(1, k / warmup_steps) during the warm-up (the full lr when
        warmup_steps is 0), then ``optim.decay``'s schedule down to lr * final_lr_fraction at
        step ``train.steps`` (see OptimConfig.decay)."""
        o = self.tc.optim
        k = step + 1
        if o.warmup_steps and k < o.warmup_steps:
            return o.lr * k / o.warmup_steps
        start, end = o.warmup_steps, self.tc.steps
        if o.decay == "constant" or start >= end:
            return o.lr
        u = min(1.0, max(0.0, (k - start) / (end - start)))
        shape = (1 + math.cos(math.pi * u)) / 2 if o.decay == "cosine" else 1 - u
        f = o.final_lr_fraction
        return o.lr * (f + (1 - f) * shape)

    def train_step(self) -> dict[str, float]:
        """One optimizer step (``grad_accum`` micro-batches). Returns the mean loss terms."""
        if self._data_iter is None:
            self._data_iter = self._batches()
        o = self.tc.optim
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        finite = True
        for a in range(o.grad_accum):
            images, bad = next(self._data_iter)
            if bad:
                self.counters.skipped_images.extend(p for p in bad if p not in self.counters.skipped_images)
            images = images.to(self.device, non_blocking=True)
            micro = self.ctx.rank * o.grad_accum + a
            gen = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, self.step, micro))
            sync = self.ddp.no_sync() if self.ctx.enabled and a < o.grad_accum - 1 else nullcontext()
            with sync:
                with self._autocast():
                    out = self.ddp(images, objective=self.objective, generator=gen)
                (out.total / o.grad_accum).backward()
            finite &= bool(torch.isfinite(out.total.detach()))
            for k, v in out.detached().items():
                sums[k] = sums.get(k, 0.0) + v / o.grad_accum
        self.counters.images_seen += o.batch_size * o.grad_accum * self.ctx.world
        if self.ctx.enabled:
            flag = torch.tensor([1.0 if finite else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            finite = bool(flag.item() == 1.0)
        if finite:
            if o.grad_clip is not None:
                sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(
                    [p for _, p in self._trainable()], o.grad_clip))
            self.optimizer.step()
            if self.tc.renormalize:
                renormalize_({n: w for n, w in self.linear_weights.items() if w.requires_grad}, self.targets)
            self.counters.nonfinite_streak = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.counters.nonfinite_total += 1
            self.counters.nonfinite_streak += 1
        self.step += 1
        e = self.tc.ema
        due = self.step % e.every == 0 or self.step == self.tc.steps
        if self.ema and due and self.step > self.ema_step:
            # one update standing for every step since the previous one (train.ema.every)
            ema_update_(self.ema, dict(self.model.named_parameters()), e.decay, self.step - self.ema_step)
            self.ema_step = self.step
        self._apply_encoder_freeze()
        if self.counters.nonfinite_streak >= self.tc.max_nonfinite:
            raise TrainingStopped(
                f"{self.counters.nonfinite_streak} non-finite losses in a row at step {self.step}; "
                f"stopping (the last checkpoint in {self.ckpt_dir} is intact)"
            )
        sums["nonfinite_skipped"] = float(self.counters.nonfinite_total)
        return sums

    # ---------------------------------------------------------------- the loop
    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps``; returns a summary (first/last evaluation, counters)."""
        tc = self.tc
        summary: dict[str, Any] = {"start_step": self.step}
        ev = tc.eval
        if ev.enabled and self.step == 0:
            m = self.evaluate()
            summary["eval_start"] = m
            self._record(m)
            if self.ctx.main:
                self._log(f"step 0: held-out PSNR {m['eval/psnr']:.2f} dB, SSIM {m['eval/ssim']:.4f}")
        bar = None
        if self.ctx.main and tc.log.progress:
            from tqdm import tqdm

            import sys

            bar = tqdm(total=tc.steps, initial=self.step, desc=f"stage {tc.stage}", dynamic_ncols=True,
                       mininterval=0.2 if sys.stderr.isatty() else 15.0)  # fewer lines in log files
        t0, seen0 = time.perf_counter(), self.counters.images_seen
        last_terms: dict[str, float] = {}
        self._stop_requested = False
        previous = self._install_sigterm()
        try:
            while self.step < tc.steps:
                last_terms = self.train_step()
                if bar is not None:
                    bar.update(1)
                if self._should_stop():
                    self.save()
                    summary["interrupted"] = True
                    if self.ctx.main:
                        self._log(f"SIGTERM: saved a checkpoint at step {self.step} and stopped; "
                                  "continue with --resume")
                    break
                if self.step % tc.log.every == 0 or self.step == tc.steps:
                    dt = max(time.perf_counter() - t0, 1e-9)
                    ips = (self.counters.images_seen - seen0) / dt
                    t0, seen0 = time.perf_counter(), self.counters.images_seen
                    rec = {f"loss/{k}": v for k, v in last_terms.items()}
                    # the lr the step just taken used (the optimizer may have been rebuilt since)
                    rec.update({"images_per_s": ips, "lr": self._lr(self.step - 1),
                                "skipped_images": len(self.counters.skipped_images)})
                    self._record(rec)
                    if bar is not None:
                        bar.set_postfix({"loss": f"{last_terms.get('total', float('nan')):.4f}",
                                         "img/s": f"{ips:.1f}"}, refresh=False)
                if self.ctx.main and self.step % tc.log.images_every == 0:
                    self.save_images(self._held_out_or_batch())
                if ev.enabled and ev.every and self.step % ev.every == 0 and self.step < tc.steps:
                    self._record(self.evaluate())
                if self.step % tc.checkpoint.every == 0 or self.step == tc.steps:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self._restore_sigterm(previous)
        if summary.get("interrupted"):
            summary.update({"end_step": self.step, "last_terms": last_terms})
            return summary
        if ev.enabled:
            m = self.evaluate()
            summary["eval_end"] = m
            self._record(m)
            if self.ctx.main:
                self._log(f"step {self.step}: held-out PSNR {m['eval/psnr']:.2f} dB, SSIM {m['eval/ssim']:.4f}")
        summary.update({"end_step": self.step, "last_terms": last_terms,
                        "nonfinite_skipped": self.counters.nonfinite_total,
                        "skipped_images": list(self.counters.skipped_images)})
        if self._writer:
            self._writer.flush()
        return summary

    # ---------------------------------------------------------------- SIGTERM
    def _install_sigterm(self):
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            self._stop_requested = True

        return signal.signal(signal.SIGTERM, handler)

    def _restore_sigterm(self, previous) -> None:
        import signal

        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

    def _should_stop(self) -> bool:
        """SIGTERM seen here or on any rank (all ranks stop after the same step)."""
        stop = self._stop_requested
        if self.ctx.enabled:
            flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item() > 0)
        return stop

    def _held_out_or_batch(self) -> Tensor:
        if not hasattr(self, "_held_out"):
            self._held_out = self.held_out()
        return self._held_out[: self.tc.log.images].to(self.device)

    def close(self, *, barrier: bool = True) -> None:
        """Release the TensorBoard writer and the process group.

        Under torchrun, every rank first waits for the others (``barrier=True``; pass False
        when leaving because of an error, so a rank does not wait for a peer that will never
        come), then the DDP wrapper (whose reducer holds the process group and gloo's worker
        threads) is released before the group is destroyed. Without this a rank that
        finished while another was still saving could abort at interpreter exit with
        "terminate called without an active exception" (seen about once in eight 2-rank runs).
        """
        import gc

        if self._writer:
            self._writer.close()
        if self.ctx.enabled and dist.is_initialized():
            if barrier:
                dist.barrier()
            self.ddp = None
            gc.collect()
            dist.destroy_process_group()
