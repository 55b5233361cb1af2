"""The model-agnostic training loop that every flowmo trainer shares.

:class:`TrainerBase` holds what does not depend on the model trained: the process group and
device, the Adam optimizer and its learning-rate schedule, one optimizer step of
``optim.grad_accum`` micro-batches (DDP's ``no_sync`` on all but the last, a non-finite loss on
any rank skipping the step on every rank), the EMA update, checkpoints (save, restore, prune;
on resume, the config compared with the run's: :mod:`~flowmo.train.checkpointing`), the records
(``metrics.jsonl`` and TensorBoard), the progress bar, SIGTERM (save and stop after the current
step) and ``close``.

A subclass builds its model and supplies the model-specific parts through these hooks:

- ``_next_batch()`` -> the next micro-batch (from an iterator over a
  :class:`~flowmo.train.sampler.StepBatchSampler`, so the data order is a function of
  (seed, step, micro-batch) and a resumed run sees the same data);
- ``_micro_loss(batch, generator)`` -> a :class:`~flowmo.model.LossOutput` through
  ``self.ddp`` (all random draws of the micro-batch from ``generator``);
- ``_after_optimizer_step(skipped)``, ``_after_step()`` (after the EMA update), ``_before_fit(summary)``,
  ``_after_log_step()`` (inside the loop, before the checkpoint), ``_after_fit(summary)``;
- ``_ddp_module()`` (what DDP wraps; its forward computes the loss), ``_progress_desc()``,
  ``_extra_record()`` and ``_extra_summary()`` (fields added to the records and the summary);
- the checkpoint hooks ``_model_fingerprint()`` (required), ``_checkpoint_parts()``,
  ``_checkpoint_state()``, ``_required_parts()``, ``_restore_extra(parts, state)`` and
  ``_read_run_config(path)``.

Set-up: a subclass's ``__init__`` calls :meth:`TrainerBase._setup_runtime` first (device,
process group, threads, counters), builds its model, then uses :meth:`_make_optimizer`,
:meth:`_restore` and :meth:`_wrap`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn

from flowmo.folders.checkpoints import (
    PREFIX,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prune_checkpoints,
    save_checkpoint,
)

from ..data.files import atomic_write_text
from ..devices import DistContext, init_process_group, native_bf16, resolve_device
from ..state_dicts import check_finite, check_state_dict
from .checkpointing import CONFIG_CHANGES, read_history, resume_changes
from .config import describe_differences
from .ema import ema_keep, ema_update_
from .sampler import derive_seed
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices as _fused_kernels_supported_devices

__all__ = ["TrainerBase", "TrainingStopped", "Counters", "INTERRUPTED_STATUS"]


INTERRUPTED_STATUS = 143
"""The exit status of ``flowmo train`` / ``train-generator`` stopped by SIGTERM after saving its
checkpoint: 128 + 15, the shell's and schedulers' "terminated by SIGTERM", so a job chain
(``flowmo train ... && next``) does not take the unfinished run for done."""


def _floats(terms: dict[str, Any]) -> dict[str, float]:
    """Loss terms as Python floats (tensors on the device are read with one host sync)."""
    names = [k for k, v in terms.items() if isinstance(v, Tensor)]
    if not names:
        return dict(terms)
    values = torch.stack([terms[k] for k in names]).tolist()
    return {**terms, **dict(zip(names, values))}


class TrainingStopped(RuntimeError):
    """The run stopped itself (e.g. too many non-finite losses in a row)."""


@dataclass
class Counters:
    """The run's counters, saved in every checkpoint: non-finite losses (in total and in a row),
    the unreadable images skipped, the images (rows) seen."""

    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    skipped_images: list[str] = field(default_factory=list)
    images_seen: int = 0


class TrainerBase:
    """The shared loop (see the module docstring). Attributes a subclass relies on:

    ``config`` (the run's whole config, a pydantic model: recorded in ``config.json`` and
    compared on resume), ``tc`` (its ``train`` section: steps, seed, device, threads, autocast, max_nonfinite,
    dist_timeout_s, optim, ema, checkpoint, log), ``out`` (the run folder), ``ctx``
    (:class:`~flowmo.devices.DistContext`), ``device``, ``model`` (the module whose parameters
    are trained, EMA'd and checkpointed), ``ddp`` (the module called for the loss: DDP-wrapped
    under torchrun), ``optimizer``, ``step`` (optimizer steps done), ``ema`` (name -> float32
    tensor, empty when EMA is off), ``ema_step`` and ``counters``.
    """

    #: one row of the data, as the progress bar says it (``img/s``)
    unit = "img"
    #: the same in the metrics records (``images_per_s``)
    rate_name = "images"

    # ---------------------------------------------------------------- set-up
    def _setup_runtime(self, tc: Any, out_dir: Union[str, Path], log: Optional[Callable[[str], None]]) -> None:
        """Device (the one device rule), process group (under torchrun), intra-op threads, log, counters."""
        self.tc = tc
        self.out = Path(out_dir)
        self.ctx = DistContext.from_env()
        self.device = resolve_device(tc.device, "train.device", self.ctx)
        init_process_group(self.device, self.ctx, timeout_s=tc.dist_timeout_s)
        if tc.threads is not None:
            torch.set_num_threads(tc.threads)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        self._log = log or (lambda s: print(s, flush=True))
        self.counters = Counters()
        self.step = 0
        self.ema: dict[str, torch.Tensor] = {}
        self.ema_step = 0  # the step of the EMA's last update (or of its initialisation)
        self._data_iter = None
        self._nonfinite: Optional[Tensor] = None  # (total, streak, stop step) on the device: _count_nonfinite
        self._compile_pending = False  # set by a trainer that compiled its loss (train.compile)
        self.compile_s: list[float] = []  # seconds of each step that compiled
        self._untimed_s = 0.0  # compile seconds since the last log, left out of its images/s
        self._writer = None
        self._config_changes: Optional[list[dict[str, Any]]] = None  # None: a run starting at step 0
        self._config_history: list[dict[str, Any]] = []

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"

    def _starting_checkpoint(self, resume: bool) -> Optional[Path]:
        """The checkpoint to resume from: the newest complete one with ``resume``, else None.
        Without ``resume``, an output folder that already holds a run's checkpoints is refused
        (CheckpointError): starting over there would mix two runs' checkpoints and metrics."""
        found = latest_checkpoint(self.ckpt_dir)
        if resume:
            if found is None and self.ctx.main:
                self._log(f"no checkpoint in {self.ckpt_dir}; starting from step 0")
            return found
        if found is not None:
            raise CheckpointError(f"{self.out} already holds a run (its newest checkpoint: {found.name}); continue it "
                                  "with --resume (resume=True), or give another output folder")
        return None

    def _init_ema(self) -> None:
        """EMA weights = a float32 copy of the current weights (when enabled and not restored)."""
        if not self.ema and self.tc.ema.enabled:
            self.ema = {n: p.detach().clone().float() for n, p in self.model.named_parameters()}

    def _trainable(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def _make_optimizer(self) -> torch.optim.Optimizer:
        o = self.tc.optim
        params = self._trainable()
        self._opt_names = {i: n for i, (n, _) in enumerate(params)}
        # fused where the device has the kernel: one kernel per step, and a skipped step (found_inf)
        # is decided on the device (train_step)
        fused = self.device.type in _fused_kernels_supported_devices() and all(p.is_floating_point() for _, p in params)
        return torch.optim.Adam([p for _, p in params], lr=o.lr, betas=o.betas, eps=o.eps,
                                weight_decay=o.weight_decay, fused=fused or None)

    def _ddp_module(self) -> nn.Module:
        """The module DDP wraps (its forward computes the loss); the model by default."""
        return self.model

    def _wrap(self) -> nn.Module:
        module = self._ddp_module()
        if not self.ctx.enabled:
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(module, device_ids=ids, broadcast_buffers=False)

    # ---------------------------------------------------------------- one step
    def _uses_bf16(self) -> bool:
        """Whether ``train.autocast`` turns bf16 autocast on for this run's device."""
        mode = self.tc.autocast
        return (mode == "bf16" or (mode == "auto" and self.device.type == "cuda")
                or (mode == "native" and native_bf16(self.device)))

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self._uses_bf16() else nullcontext()

    def _lr(self, step: int) -> float:
        """The learning rate of the step taken when the counter reads ``step`` (0-based; the step
        is k = step + 1): lr * k / warmup_steps while k < warmup_steps (the full lr from step 1
        when warmup_steps is 0 or 1), then ``optim.decay``'s schedule evaluated at the counter as
        the step starts, ``step``, so that it would reach lr * final_lr_fraction when the counter
        reads ``train.steps``, after the last step: every step of a decay trains, the last one
        too (see OptimConfig.decay). A pure function of the step: a resumed run repeats it."""
        o = self.tc.optim
        k = step + 1
        if o.warmup_steps and k < o.warmup_steps:
            return o.lr * k / o.warmup_steps
        start, end = o.warmup_steps, self.tc.steps
        if o.decay == "constant" or start >= end:
            return o.lr
        u = min(1.0, max(0.0, (step - start) / (end - start)))
        shape = (1 + math.cos(math.pi * u)) / 2 if o.decay == "cosine" else 1 - u
        f = o.final_lr_fraction
        return o.lr * (f + (1 - f) * shape)

    def _next_batch(self) -> Any:
        raise NotImplementedError

    def _micro_loss(self, batch: Any, generator: torch.Generator):
        raise NotImplementedError

    def _after_optimizer_step(self, skipped: Tensor) -> None:
        """After the optimizer step, before the step counter moves; ``skipped`` (a bool 0-dim
        tensor) says whether the step was skipped (a non-finite loss): nothing may change then."""

    def _after_step(self) -> None:
        """After the step counter moved and the EMA was updated."""

    def train_step(self) -> dict[str, Tensor]:
        """One optimizer step (``grad_accum`` micro-batches). Returns the mean loss terms (and
        ``grad_norm`` with ``optim.grad_clip``, ``nonfinite_skipped``) as 0-dim float32 tensors
        on the device: reading one is a host sync, which :meth:`fit` makes only on the steps it
        logs or checkpoints.

        A step whose loss or gradient norm is not finite on some rank changes no weight and no
        optimizer state (the EMA still takes its update, towards the unchanged weights):
        fused Adam skips it on the device (``found_inf``), as do the renormalisation and the
        counters, so the step makes no host sync (without a fused Adam for the device, one
        ``bool`` decides it on the host). Micro-batch a of rank r draws from a generator seeded
        by (train.seed, step, r * accum + a), so the draws of a global micro-batch do not depend
        on how it is split across ranks."""
        o = self.tc.optim
        started = time.perf_counter()
        for g in self.optimizer.param_groups:
            g["lr"] = self._lr(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, Tensor] = {}
        bad: Optional[Tensor] = None
        for a in range(o.grad_accum):
            batch = self._next_batch()
            micro = self.ctx.rank * o.grad_accum + a
            gen = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, self.step, micro))
            sync = self.ddp.no_sync() if self.ctx.enabled and a < o.grad_accum - 1 else nullcontext()
            with sync:
                with self._autocast():
                    out = self._micro_loss(batch, gen)
                (out.total / o.grad_accum).backward()
            total = out.total.detach().float()
            bad = ~torch.isfinite(total) if bad is None else bad | ~torch.isfinite(total)
            for k, v in (("total", total), *out.terms.items()):
                sums[k] = sums.get(k, 0.0) + v.detach().float() / o.grad_accum
        self.counters.images_seen += o.batch_size * o.grad_accum * self.ctx.world
        # a finite loss can still give non-finite gradients: the total gradient norm says so
        params = [p for _, p in self._trainable()]
        if o.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(params, o.grad_clip, foreach=True)
            sums["grad_norm"] = norm.float()
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
        bad = bad | ~torch.isfinite(norm)
        if self.ctx.enabled:
            flag = bad.to(torch.float32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            bad = flag[0] > 0
        self._optimizer_step(bad)
        self._after_optimizer_step(bad)
        self.step += 1
        self._count_nonfinite(bad)
        e = self.tc.ema
        due = self.step % e.every == 0 or self.step == self.tc.steps
        if self.ema and due and self.step > self.ema_step:
            # one update standing for every step since the previous one (train.ema.every)
            keep = ema_keep(e.decay, self.ema_step, self.step, e.warmup)
            ema_update_(self.ema, dict(self.model.named_parameters()), keep)
            self.ema_step = self.step
        self._after_step()
        sums["nonfinite_skipped"] = self._nonfinite[0].float()
        if self._compile_pending:  # the first step of a freshly compiled loss: say what compiling cost
            self._compile_pending = False
            self.compile_s.append(round(time.perf_counter() - started, 2))
            self._untimed_s += self.compile_s[-1]
            if self.ctx.main:
                self._log(f"train.compile: step {self.step} compiled the training step's loss (forward and "
                          f"backward) in {self.compile_s[-1]:.1f} s")
        return sums

    def _optimizer_step(self, bad: Tensor) -> None:
        """The optimizer step, skipped where ``bad`` (a bool 0-dim tensor) is True: on the device
        by a fused Adam, else decided on the host."""
        if getattr(self.optimizer, "_step_supports_amp_scaling", False):
            self.optimizer.found_inf = bad.to(torch.float32)
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf
        elif not bool(bad):
            self.optimizer.step()

    def _count_nonfinite(self, bad: Tensor) -> None:
        """Count a skipped step on the device: ``_nonfinite`` = (total, streak, the step at which
        the streak first reached ``train.max_nonfinite``, 0 before); :meth:`_sync_counters` reads it."""
        if self._nonfinite is None:
            c = self.counters
            self._nonfinite = torch.tensor([c.nonfinite_total, c.nonfinite_streak, 0], device=self.device)
        b = bad.to(torch.int64)
        total, streak, stop = self._nonfinite.unbind()
        streak = (streak + 1) * b
        stop = torch.where((streak >= self.tc.max_nonfinite) & (stop == 0), self.step, stop)
        self._nonfinite = torch.stack([total + b, streak, stop])

    def _sync_counters(self) -> None:
        """(One host sync) Bring the device's non-finite counts into ``counters``; raise
        TrainingStopped when ``train.max_nonfinite`` skipped steps in a row have happened."""
        if self._nonfinite is None:
            return
        total, streak, stop = self._nonfinite.tolist()
        self.counters.nonfinite_total, self.counters.nonfinite_streak = total, streak
        if stop:
            last = latest_checkpoint(self.ckpt_dir) if self.ckpt_dir.is_dir() else None
            where = (f"the last checkpoint, {last}, holds the weights of before the skipped steps" if last
                     else "no checkpoint was written")
            raise TrainingStopped(f"{self.tc.max_nonfinite} non-finite steps in a row at step {stop} (a non-finite "
                                  f"loss or gradient; each skipped, train.max_nonfinite); stopping ({where})")

    # ---------------------------------------------------------------- the loop
    def _progress_desc(self) -> str:
        return "train"

    def _extra_record(self) -> dict[str, Any]:
        """Fields a subclass adds to every periodic metrics record (after the loss terms,
        ``<rate_name>_per_s`` and ``lr``)."""
        return {}

    def _extra_summary(self) -> dict[str, Any]:
        """Fields a subclass adds at the end of a completed run's summary."""
        return {}

    def _note_busy_machine(self) -> None:
        """Say so when other work already loads the CPU cores this run's threads need: several
        intra-op threads then wait for each other (the demo measured 8x slower at 2 threads on
        2 busy cores, 1.3x at 1 thread)."""
        cores = os.cpu_count() or 1
        threads = torch.get_num_threads()
        if self.device.type != "cpu" or threads < 2 or not hasattr(os, "getloadavg"):
            return
        load = os.getloadavg()[0]
        if load > cores - threads + 0.75:
            self._log(f"note: the load average is {load:.1f} on {cores} CPU cores; {threads} intra-op threads "
                      f"can run many times slower beside other work than 1: consider train.threads=1")

    def _before_fit(self, summary: dict[str, Any]) -> None:
        """Before the first step of ``fit`` (e.g. an evaluation at step 0)."""

    def _after_log_step(self) -> None:
        """After each step's record, before its checkpoint (e.g. images, periodic evaluation)."""

    def _after_fit(self, summary: dict[str, Any]) -> None:
        """After the last step of a run that was not interrupted (e.g. a final evaluation)."""

    def fit(self) -> dict[str, Any]:
        """Train to ``train.steps``; returns a summary (start and end step, the last loss terms,
        counters, and what the hooks add)."""
        tc = self.tc
        summary: dict[str, Any] = {"start_step": self.step}
        if self.ctx.main and tc.optim.warmup_steps > tc.steps:
            self._log(f"note: train.optim.warmup_steps ({tc.optim.warmup_steps}) exceeds train.steps ({tc.steps}): "
                      f"the learning rate never reaches train.optim.lr (at most "
                      f"{tc.optim.lr * tc.steps / tc.optim.warmup_steps:.3g})")
        precision = "bf16 autocast" if self._uses_bf16() else "float32"
        summary["precision"] = precision
        if self.ctx.main:
            if tc.autocast in ("auto", "native"):
                self._log(f"train.autocast {tc.autocast}: training in {precision} on {self.device}")
            self._note_busy_machine()
        self._before_fit(summary)
        bar = None
        if self.ctx.main and tc.log.progress:
            from tqdm import tqdm

            bar = tqdm(total=tc.steps, initial=self.step, desc=self._progress_desc(), dynamic_ncols=True,
                       mininterval=0.2 if sys.stderr.isatty() else 15.0)  # fewer lines in log files
        t0, seen0 = time.perf_counter(), self.counters.images_seen
        last_terms: dict[str, Any] = {}
        self._stop_requested = False
        previous = self._install_sigterm()
        try:
            while self.step < tc.steps:
                last_terms = self.train_step()
                if bar is not None:
                    bar.update(1)
                logs = self.step % tc.log.every == 0 or self.step == tc.steps
                saves = self.step % tc.checkpoint.every == 0 or self.step == tc.steps
                stops = self._should_stop()
                if logs or saves or stops:  # the steps that may read values from the device
                    self._sync_counters()
                    last_terms = _floats(last_terms)
                if stops:
                    self.save()
                    summary["interrupted"] = True
                    if self.ctx.main:
                        self._log(f"SIGTERM: saved a checkpoint at step {self.step} and stopped; "
                                  "continue with --resume")
                    break
                if logs:
                    # a compile's seconds are not training time (logged apart: train.compile)
                    dt = max(time.perf_counter() - t0 - self._untimed_s, 1e-9)
                    rate = (self.counters.images_seen - seen0) / dt
                    t0, seen0, self._untimed_s = time.perf_counter(), self.counters.images_seen, 0.0
                    rec = {f"loss/{k}": v for k, v in last_terms.items()}
                    # the lr the step just taken used (the optimizer may have been rebuilt since)
                    rec.update({f"{self.rate_name}_per_s": rate, "lr": self._lr(self.step - 1)})
                    rec.update(self._extra_record())
                    self._record(rec)
                    if bar is not None:
                        bar.set_postfix({"loss": f"{last_terms.get('total', float('nan')):.4f}",
                                         f"{self.unit}/s": f"{rate:.1f}"}, refresh=False)
                self._after_log_step()
                if saves:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self._restore_sigterm(previous)
        last_terms = _floats(last_terms)
        if summary.get("interrupted"):
            summary.update({"end_step": self.step, "last_terms": last_terms})
            return summary
        self._after_fit(summary)
        summary.update({"end_step": self.step, "last_terms": last_terms,
                        "nonfinite_skipped": self.counters.nonfinite_total})
        if self.compile_s:
            summary["compile_s"] = self.compile_s
        summary.update(self._extra_summary())
        if self._writer:
            self._writer.flush()
        return summary

    # ---------------------------------------------------------------- records
    def _record(self, metrics: dict[str, Any]) -> None:
        """(Rank 0) One line of ``metrics.jsonl``: the step and ``metrics``; and, with
        ``train.log.tensorboard``, their finite numbers as TensorBoard scalars (a note once when
        TensorBoard is not installed)."""
        if not self.ctx.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        if self.tc.log.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.out / "tensorboard"))
                except Exception as e:  # tensorboard not installed
                    self._writer = False
                    self._log(f"note: train.log.tensorboard is on but TensorBoard is unavailable "
                              f"({type(e).__name__}: {e}); install it (pip install tensorboard) for TensorBoard "
                              "scalars, or set train.log.tensorboard=false; the metrics are in metrics.jsonl")
            if self._writer:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self._writer.add_scalar(k, v, self.step)

    # ---------------------------------------------------------------- checkpoint hooks
    def _model_fingerprint(self) -> str:
        """A fingerprint of the trained architecture: a checkpoint of another one is refused."""
        raise NotImplementedError

    def _checkpoint_parts(self) -> dict[str, dict[str, Tensor]]:
        """Extra named tensor dicts to save beside model, optimizer and EMA."""
        return {}

    def _checkpoint_state(self) -> dict[str, Any]:
        """Extra JSON fields of ``state.json``."""
        return {}

    def _required_parts(self) -> list[str]:
        """The extra parts a checkpoint of this trainer must hold."""
        return []

    def _restore_extra(self, parts: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        """Restore the trainer's own parts and state; runs after the model, step and EMA and before
        the optimizer's state is loaded (so it may rebuild the optimizer)."""

    def _read_run_config(self, path: Path) -> Any:
        """The config a run recorded (its ``config.json``), as the trainer's config class
        (CheckpointError naming the file when it is not one)."""
        try:
            return type(self.config).model_validate_json(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path} is not this kind of run's config ({str(e).splitlines()[0]}); "
                                  "use another output folder") from None

    # ---------------------------------------------------------------- the config of a resumed run
    def _check_resume_config(self, ckpt: Path) -> None:
        """Resuming from ``ckpt``: this run's config against the one the run recorded
        (``config.json``): the changes :data:`~flowmo.train.checkpointing.RESUMABLE` allows are
        kept for :meth:`_record_config_changes`, any other raises CheckpointError
        (:func:`~flowmo.train.checkpointing.resume_changes`). Called on every rank (the run
        folder is shared, as the checkpoints are), so all ranks refuse together."""
        path = self.out / "config.json"
        self._config_changes = []
        if not path.is_file():
            if self.ctx.main:
                self._log(f"note: {path} is missing, so this config cannot be compared with the one the run's "
                          "steps were trained with; it is recorded as the run's config from here on")
            return
        old = self._read_run_config(path).model_dump(mode="json")
        step = int(ckpt.name[len(PREFIX):])
        self._config_changes = resume_changes(self.out, old, self.config.model_dump(mode="json"), step)
        if self._config_changes:  # read before config.json is rewritten: a damaged history loses nothing
            self._config_history = read_history(self.out / CONFIG_CHANGES)

    def _record_config_changes(self) -> None:
        """(Rank 0, after ``config.json`` was written.) Say the changes a resumed run accepted
        and append them to :data:`~flowmo.train.checkpointing.CONFIG_CHANGES`; a run that starts
        at step 0 has no history (a stale file is removed)."""
        path = self.out / CONFIG_CHANGES
        changes = self._config_changes
        if changes is None:
            path.unlink(missing_ok=True)
            return
        if not changes:
            return
        atomic_write_text(path, json.dumps(self._config_history + changes, indent=1) + "\n")
        self._log(f"resumed at step {changes[0]['step']} with changed settings (recorded in {path}): "
                  + describe_differences((c["field"], c["old"], c["new"]) for c in changes))

    # ---------------------------------------------------------------- save / restore
    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0) and prune old ones.

        Every checkpoint holds the parts ``model``, ``optimizer`` and (when EMA is on) ``ema``,
        and the state fields ``step``, ``optimizer``, ``ema_step``, ``data_position``,
        ``counters``, ``world_size``, ``torch_rng`` and ``model_fingerprint``; a trainer adds its
        own (:meth:`_checkpoint_parts`, :meth:`_checkpoint_state`)."""
        if self._nonfinite is not None:
            total, streak, _ = self._nonfinite.tolist()
            self.counters.nonfinite_total, self.counters.nonfinite_streak = total, streak
        if not self.ctx.main:
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer, self._opt_names)
        parts = {
            "model": {k: v for k, v in self.model.state_dict().items()},
            "optimizer": opt_tensors,
            **self._checkpoint_parts(),
        }
        if self.ema:
            parts["ema"] = self.ema
        state = {
            "step": self.step,
            **self._checkpoint_state(),
            "optimizer": opt_meta,
            "ema_step": self.ema_step,
            "data_position": self.step * self.ctx.world * self.tc.optim.grad_accum * self.tc.optim.batch_size,
            "counters": {"nonfinite_total": self.counters.nonfinite_total,
                         "nonfinite_streak": self.counters.nonfinite_streak,
                         "skipped_images": self.counters.skipped_images,
                         "images_seen": self.counters.images_seen},
            "world_size": self.ctx.world,
            "torch_rng": torch.get_rng_state().tolist(),
            "model_fingerprint": self._model_fingerprint(),
        }
        path = save_checkpoint(self.ckpt_dir, self.step, parts, state)
        ck = self.tc.checkpoint
        prune_checkpoints(self.ckpt_dir, ck.keep_last, ck.keep_every)
        return path

    def _restore(self, path: Path) -> None:
        """Continue from checkpoint ``path``; CheckpointError naming it when it does not fit the
        run or its contents are damaged."""
        try:
            self._restore_from(path)
        except CheckpointError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
            # a complete-looking folder with damaged contents: name it, never resume from it
            raise CheckpointError(
                f"{path} is damaged ({type(e).__name__}: {e}); move it away to resume from the previous checkpoint"
            ) from e

    def _restore_from(self, path: Path) -> None:
        ema = self.tc.ema.enabled or (path / "ema.safetensors").is_file()
        required = ["model", "optimizer"] + self._required_parts() + (["ema"] if ema else [])
        parts, state = load_checkpoint(path, required)
        check_finite(parts["model"], str(path / "model.safetensors"))
        if state.get("model_fingerprint") not in (None, self._model_fingerprint()):
            raise CheckpointError(f"{path} was written for a different model architecture")
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, parts["model"], str(path))
        self.model.load_state_dict(parts["model"])
        self.step = int(state["step"])
        if "ema" in parts:
            self.ema = {k: v.to(self.device) for k, v in parts["ema"].items()}
        # checkpoints written before ema_step was recorded: the last multiple of ema.every
        self.ema_step = int(state.get("ema_step", self.step - self.step % self.tc.ema.every))
        self._restore_extra(parts, state)
        optimizer_from_tensors(self.optimizer, self._opt_names, parts["optimizer"], state["optimizer"])
        c = state.get("counters", {})
        self._nonfinite = None  # recounted from the restored counters
        self.counters = Counters(c.get("nonfinite_total", 0), c.get("nonfinite_streak", 0),
                                 list(c.get("skipped_images", [])), c.get("images_seen", 0))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if self.ctx.main:
            self._log(f"resumed from {path} at step {self.step}")

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
