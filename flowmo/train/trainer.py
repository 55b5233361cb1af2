"""The trainer for Stage 1A (rectified flow) and Stage 1B (mode-seeking post-training).

Deterministic by construction: every random draw of step s, micro-batch m comes from a
generator seeded by (seed, s, m), and the data of each micro-batch from a permutation
seeded by (seed, epoch). A run interrupted at step k and resumed from its checkpoint thus
reaches the same weights as an uninterrupted run (bitwise on one CPU process), and
``world_size`` processes with ``grad_accum`` a give the same updates as one process with
``grad_accum`` a x world_size (same global batch, up to float summation order).

The model-agnostic loop (process group and device, optimizer and lr schedule, steps with
gradient accumulation, non-finite handling, EMA, checkpoints, records, progress bar, SIGTERM,
``close``) is :class:`~flowmo.train.loop.TrainerBase`, shared with the token generator's trainer.
This class holds what is FlowMo's: the model and its set-up, Stage 1B's starting point, the
parameters trained (the dry-run freeze of parameters no loss changes, the encoder freeze), the
image data, the objective of the stage, renormalisation, held-out evaluation and images. The
pure parts live beside it: the data order (:mod:`~flowmo.train.sampler`), EMA and renormalisation
(:mod:`~flowmo.train.ema`), the evaluation's images and figures (:mod:`~flowmo.train.evaluation`),
Stage 1B's starting model (:func:`~flowmo.train.config.init_from_spec`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import Tensor, nn

from flowmo.folders.checkpoints import CheckpointError, latest_checkpoint, load_checkpoint
from flowmo.folders.model_folder import CONFIG_NAME, WEIGHTS_NAME

from ..data.files import atomic_write_text
from ..data.grids import save_image_rows
from ..model import FlowMo
from ..state_dicts import StateDictMismatchError, check_state_dict
from .config import (
    TrainConfig,
    check_init_architecture,
    config_differences,
    describe_differences,
    init_from_spec,
    read_train_config,
    resolve_init_from,
)
from .ema import block_linear_weights, renormalize_
from .evaluation import describe_eval, eval_set_words, held_out_images, reconstruction_metrics
from .loop import TrainerBase
from .sampler import StepBatchSampler, _collate, _Indexed, derive_seed

__all__ = ["Trainer"]


class Trainer(TrainerBase):
    """Trains a FlowMo model as a TrainConfig says, writing into ``out_dir``.

    ``out_dir`` gets ``config.json`` (the resolved config), ``checkpoints/``, ``metrics.jsonl``,
    ``images/`` (inputs next to reconstructions), ``eval/`` and TensorBoard events. With
    ``resume=True`` training continues from the newest complete checkpoint in ``out_dir``, with
    the settings the run recorded: a changed field that
    :data:`~flowmo.train.checkpointing.RESUMABLE` does not allow raises CheckpointError naming
    it; the changes it allows are logged and appended to ``config_changes.json``.
    """

    def __init__(self, config: TrainConfig, out_dir: Union[str, Path], *, resume: bool = False,
                 log: Optional[Callable[[str], None]] = None):
        self.config = config
        self._setup_runtime(config.train, out_dir, log)  # device, process group, threads, counters

        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(derive_seed(self.tc.seed, "init"))
            self.model = FlowMo(config.model)
        self.model.to(self.device)
        # loss objects may need weight files: fail now, before any training
        _ = self.model.flow_loss
        self.needs_teacher = False
        self._teacher_digest: Optional[str] = None
        if self.tc.stage == "1b":
            self._adopt_objective_sampler()
            self.needs_teacher = self.model.posttrain_objective.needs_teacher
        self.targets: dict[str, Tensor] = {}
        self._compiled: Optional[tuple[nn.Module, nn.Module]] = None  # (ddp, its compiled form): _loss_module
        self._eval_set: Optional[tuple[Tensor, list[int]]] = None  # the evaluation images and ids, once read
        self._quantizer_state: dict[str, Tensor] = {}  # the quantizer's state as the step started: train_step

        ckpt = self._starting_checkpoint(resume)
        if ckpt is not None:
            self._check_resume_config(ckpt)  # the run's settings, or only changes RESUMABLE allows
        if ckpt is None and self.tc.stage == "1b":
            self._load_init(Path(self.tc.init_from))
        if self.needs_teacher:
            # the teacher is the decoder as post-training starts; a resumed run restores the
            # checkpoint's copy over this one (_restore_extra)
            self.model.set_teacher()
        self._freeze_unused()
        self.linear_weights = block_linear_weights(self.model)
        if not self.targets:
            self.targets = {n: torch.linalg.vector_norm(w.detach().float()).cpu() for n, w in self.linear_weights.items()}
        self._init_ema()
        if self.tc.stage == "1b":
            self._freeze_encoder()
        self.optimizer = self._make_optimizer()
        if ckpt is not None:
            self._restore(ckpt)
        # freeze_encoder_at = 0, or a resumed run already at/past the freeze step whose checkpoint
        # was written before the freeze: frozen before any (further) step
        self._apply_encoder_freeze(wrap=False)
        self.ddp = self._wrap()
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._write_config()

    # ---------------------------------------------------------------- setup helpers
    @property
    def objective(self) -> str:
        return "posttrain" if self.tc.stage == "1b" else "flow"

    def _adopt_objective_sampler(self) -> None:
        """A post-training objective that trains the decoder for a sampler (a few-step objective:
        ``sampler_preset()``) makes it the model's sampler and its one named preset, in the run's
        config and so in every checkpoint and exported folder: the trained model decodes with
        it by default and by name (``--sampler distillation-4``). Presets the config named are
        dropped: they describe the weights before this training."""
        from ..losses.posttrain import check_sampler_preset

        objective = self.model.posttrain_objective
        preset = check_sampler_preset(objective.sampler_preset(), f"{type(objective).__name__}.sampler_preset()")
        if preset is None:
            return
        name, sampler = preset
        spec = self.config.model.replace(sampler=sampler)
        spec = type(spec).model_validate({**spec.model_dump(), "sampler_presets": {name: sampler.model_dump()}})
        self.config = self.config.model_copy(update={"model": spec})
        self.model.spec = spec
        if self.ctx.main:
            self._log(f"the model's sampler is now the objective's preset {name!r} ({sampler.steps} decoder calls)")

    def _read_run_config(self, path: Path) -> TrainConfig:
        return read_train_config(path)

    def _write_config(self) -> None:
        path = self.out / "config.json"
        text = self.config.model_dump_json(indent=2)
        if path.is_file():
            old = read_train_config(path)
            diffs = config_differences(old.model.architecture(), self.config.model.architecture(), "model")
            if diffs:
                raise CheckpointError(f"{self.out} holds a run of another model architecture "
                                      f"({describe_differences(diffs)}); use another output folder")
        atomic_write_text(path, text + "\n")
        self._record_config_changes()

    # ---------------------------------------------------------------- Stage 1B's starting point
    def _load_init(self, path: Path) -> None:
        """Stage 1B's starting point ``train.init_from``: a run folder (its newest checkpoint), a
        checkpoint folder or a model folder (or a released name or Hub id): its weights, and from
        a checkpoint its renormalisation targets and EMA. The folder's kind is checked before the
        trainer is used (ValueError naming a wrong kind); its architecture must be the config's
        (:func:`~flowmo.train.config.check_init_architecture`: ValueError naming the differing
        fields); FileNotFoundError for a run without a complete checkpoint."""
        source = str(path)
        path = resolve_init_from(source)
        init_spec = init_from_spec(path)
        if init_spec is not None:
            check_init_architecture(self.config.model, init_spec, source)
        if (path / "checkpoints").is_dir():
            found = latest_checkpoint(path / "checkpoints")
            if found is None:
                raise FileNotFoundError(f"train.init_from: {path} has no complete checkpoint")
            path = found
        if (path / "state.json").is_file():
            parts, _ = load_checkpoint(path, ["model"] + (["ema"] if (path / "ema.safetensors").is_file() else []))
            weights = parts["model"]
            if (path / "renorm.safetensors").is_file():
                self.targets = load_checkpoint(path, ["renorm"])[0]["renorm"]
            if "ema" in parts and self.tc.ema.enabled:
                self.ema = {k: v.float().to(self.device) for k, v in parts["ema"].items()}
        elif (path / WEIGHTS_NAME).is_file() and (path / CONFIG_NAME).is_file():
            from safetensors.torch import load_file

            weights = load_file(str(path / WEIGHTS_NAME))
        else:
            raise FileNotFoundError(
                f"train.init_from: {path} is neither a run folder, a checkpoint folder nor a model folder"
            )
        try:
            check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, weights, str(path))
        except StateDictMismatchError as e:
            if init_spec is not None:  # the folder's spec is the config's: its weights do not fit its spec
                raise
            raise StateDictMismatchError(f"{e}; train.init_from's weights are of another architecture than the "
                                         "config's model: section, and the folder records no spec to take it "
                                         "from: give model: the architecture of these weights") from None
        self.model.load_state_dict(weights)

    # ---------------------------------------------------------------- the parameters trained
    def _freeze_unused(self) -> None:
        """Parameters no loss can change are found with one dry-run backward on random images and
        frozen: those without a gradient or with an exactly zero one (the encoder's time and
        modulation layers, heads whose output is unused, the encoder's latent input weight, whose
        input is all zeros, ...). DDP then needs no unused-parameter search. The buffers are put
        back after it: the dry run must not update a stateful quantizer's state (an EMA codebook)."""
        s = self.config.model.image_size
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "dry-run"))
        x = torch.rand(2, 3, s, s, generator=g, device=self.device) * 2 - 1
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}
        self.model.train()
        out = self.model(x, objective=self.objective, generator=g, cfg_dropout=False)
        out.total.backward()
        with torch.no_grad():
            for n, b in self.model.named_buffers():
                b.copy_(buffers[n])
        self.unused = [n for n, p in self.model.named_parameters()
                       if p.requires_grad and (p.grad is None or not bool(p.grad.any()))]
        for n, p in self.model.named_parameters():
            p.grad = None
            if n in self.unused:
                p.requires_grad_(False)

    def _freeze_encoder(self) -> None:
        for p in self.model.encoder.parameters():
            p.requires_grad_(False)

    @property
    def encoder_frozen(self) -> bool:
        """True when no encoder parameter is trained any more."""
        return not any(p.requires_grad for p in self.model.encoder.parameters())

    def _apply_encoder_freeze(self, *, wrap: bool = True) -> None:
        """Stage 1A's ``train.freeze_encoder_at = N``: once the step counter reads N (N steps
        done; at construction for N = 0 or a resumed run already past N), freeze the encoder and
        rebuild the optimizer (and the DDP wrapper, with ``wrap``) for the parameters left.
        Idempotent: nothing happens when the encoder is frozen already."""
        f = self.tc.freeze_encoder_at
        if self.tc.stage != "1a" or f is None or self.step < f or self.encoder_frozen:
            return
        self._freeze_encoder()
        self.optimizer = self._make_optimizer()
        if wrap:
            self.ddp = self._wrap()
        if self.ctx.main:
            what = "the encoder is never trained" if f == 0 else f"the encoder was trained for {f} steps"
            self._log(f"step {self.step}: encoder frozen (train.freeze_encoder_at={f}: {what}); "
                      "optimizer rebuilt for the decoder")

    # ---------------------------------------------------------------- checkpoint hooks
    def _model_fingerprint(self) -> str:
        return self.config.model.fingerprint()

    def _checkpoint_parts(self) -> dict[str, dict[str, Tensor]]:
        parts = {"renorm": self.targets}
        if self.needs_teacher:
            parts["teacher"] = self.model.teacher_state()
        return parts

    def _checkpoint_state(self) -> dict[str, Any]:
        state = {"stage": self.tc.stage, "encoder_frozen": self.encoder_frozen}
        if self.needs_teacher:
            from ..state_dicts import weights_digest

            if self._teacher_digest is None:  # the teacher never changes: hashed once
                self._teacher_digest = weights_digest(self.model.teacher_state())
            state["teacher_digest"] = self._teacher_digest
        return state

    def _required_parts(self) -> list[str]:
        return ["renorm"] + (["teacher"] if self.needs_teacher else [])

    def _restore_extra(self, parts: dict[str, dict[str, Tensor]], state: dict[str, Any]) -> None:
        self.targets = parts.get("renorm", self.targets)
        if self.needs_teacher:
            from ..state_dicts import check_finite, weights_digest

            teacher = parts["teacher"]
            check_finite(teacher, "the checkpoint's teacher.safetensors")
            recorded = state.get("teacher_digest")
            if recorded is not None and weights_digest(teacher) != recorded:
                raise CheckpointError("the checkpoint's teacher.safetensors is not the teacher this checkpoint was "
                                      "written with (its weights digest differs from state.json's teacher_digest): "
                                      "the file was replaced or damaged")
            self.model.set_teacher({k: v.to(self.device) for k, v in teacher.items()})
            self._teacher_digest = recorded
        if state.get("encoder_frozen"):
            self._freeze_encoder()
            self.optimizer = self._make_optimizer()

    # ---------------------------------------------------------------- data
    def _dataset(self):
        from ..data.folders import ImageFolderDataset
        from ..data.photos import BuiltinPhotos

        d = self.tc.data
        s = self.config.model.image_size
        if d.shards is not None:
            from ..data.shards import TarShardDataset

            shards = d.shards if isinstance(d.shards, str) else list(d.shards)
            return TarShardDataset(shards, s, train=True, seed=self.tc.seed, hflip=d.hflip)
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

    # ---------------------------------------------------------------- one step (hooks of the loop)
    def _next_batch(self) -> Tensor:
        if self._data_iter is None:
            self._data_iter = self._batches()
        images, bad = next(self._data_iter)
        if bad:
            self.counters.skipped_images.extend(p for p in bad if p not in self.counters.skipped_images)
        return images.to(self.device, non_blocking=True)

    def _micro_loss(self, images: Tensor, generator: torch.Generator):
        # every draw is made before the loss (loss_draws: the same draws, in loss()'s order), so
        # the loss is one graph under train.compile; images were checked where they were read
        draws = self.model.loss_draws(images, generator) if self.objective == "flow" else None
        kw = {"generator": generator} if draws is None else draws
        return self._loss_module(draws is not None)(images, objective=self.objective, check_values=False, **kw)

    def _loss_module(self, whole: bool) -> nn.Module:
        """The module called for the loss: ``ddp``, or with ``train.compile`` its compiled form
        (``fullgraph=True`` when the loss takes every draw as an input (``whole``) and DDP does
        not split it; compiled again when ``ddp`` is rebuilt, e.g. at ``freeze_encoder_at``)."""
        if not self.tc.compile:
            return self.ddp
        if self._compiled is None or self._compiled[0] is not self.ddp:
            full = whole and not self.ctx.enabled
            self._compiled = (self.ddp, torch.compile(self.ddp, fullgraph=full))
            self._compile_pending = True
        return self._compiled[1]

    def train_step(self) -> dict[str, Tensor]:
        """:meth:`TrainerBase.train_step`, with the quantizer's declared state (an EMA codebook,
        which its training-mode forward updates) kept as the step started when the step is
        skipped (a non-finite loss): like the weights, it does not change then (decided on the
        device, no host sync)."""
        q = self.model.quantizer
        live = dict(q.named_buffers())
        self._quantizer_state = {n: live[n].clone() for n in q.updated_state}
        try:
            return super().train_step()
        finally:
            self._quantizer_state = {}

    def _after_optimizer_step(self, skipped: Tensor) -> None:
        if self._quantizer_state:
            live = dict(self.model.quantizer.named_buffers())
            with torch.no_grad():
                for n, before in self._quantizer_state.items():
                    live[n].copy_(torch.where(skipped, before, live[n]))
        if self.tc.renormalize:
            renormalize_({n: w for n, w in self.linear_weights.items() if w.requires_grad}, self.targets, skipped)

    def _after_step(self) -> None:
        self._apply_encoder_freeze()

    # ---------------------------------------------------------------- the loop's hooks
    def _progress_desc(self) -> str:
        return f"stage {self.tc.stage}"

    def _extra_record(self) -> dict[str, Any]:
        return {"skipped_images": len(self.counters.skipped_images)}

    def _extra_summary(self) -> dict[str, Any]:
        return {"skipped_images": list(self.counters.skipped_images)}

    def _before_fit(self, summary: dict[str, Any]) -> None:
        if self.tc.eval.enabled and self.step == 0:
            m = self.evaluate()
            summary["eval_start"] = m
            self._record(m)
            if self.ctx.main:
                self._log(f"step 0: {eval_set_words(self.tc.data)} {describe_eval(m)}")

    def _after_log_step(self) -> None:
        tc, ev = self.tc, self.tc.eval
        if self.ctx.main and self.step % tc.log.images_every == 0:
            self.save_images(self._held_out_or_batch())
        if ev.enabled and ev.every and self.step % ev.every == 0 and self.step < tc.steps:
            self._record(self.evaluate())

    def _after_fit(self, summary: dict[str, Any]) -> None:
        if self.tc.eval.enabled:
            m = self.evaluate()
            summary["eval_end"] = m
            self._record(m)
            if self.ctx.main:
                self._log(f"step {self.step}: {eval_set_words(self.tc.data)} {describe_eval(m)}")

    # ---------------------------------------------------------------- evaluation
    def ema_model(self) -> FlowMo:
        """A copy of the model with the EMA weights, in eval mode."""
        m = FlowMo(self.config.model).to(self.device)
        sd = self.model.state_dict()
        m.load_state_dict({k: self.ema[k].to(sd[k].dtype) if k in self.ema else v for k, v in sd.items()})
        return m.eval()

    def held_out_with_ids(self) -> tuple[Tensor, list[int]]:
        """The run's evaluation images (``train.eval.images`` of them) and their global ids
        (:func:`~flowmo.train.evaluation.held_out_images`)."""
        return held_out_images(self.tc.data, self.tc.eval.images, self.config.model.image_size)

    def held_out(self) -> Tensor:
        """The held-out images (:meth:`held_out_with_ids` without the ids)."""
        return self.held_out_with_ids()[0]

    def weight_sets(self) -> dict[str, FlowMo]:
        """The run's weight sets by name: ``raw`` (the trained weights) and, when ``train.ema``
        is enabled, ``ema`` (:meth:`ema_model`: what ``--export`` and ``flowmo export`` write)."""
        sets = {"raw": self.model}
        if self.ema:
            sets["ema"] = self.ema_model()
        return sets

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out PSNR and SSIM of each weight set (:meth:`weight_sets`): ``eval/raw/psnr``,
        ``eval/raw/ssim`` and, with EMA, ``eval/ema/psnr``, ``eval/ema/ssim``
        (:func:`~flowmo.train.evaluation.reconstruction_metrics`, decoded from the noise of
        ``flowmo eval --seed <train.seed>``, with ``train.eval.steps``); rank 0 writes a PNG of
        the originals over each set's reconstructions (raw, then EMA) to ``eval/``."""
        images, ids = self._eval_images()
        metrics, rows = reconstruction_metrics(self.weight_sets(), images.to(self.device), ids, self.tc.seed,
                                               self.tc.eval.steps)
        if self.ctx.main:
            save_image_rows(rows, self.out / "eval" / f"step_{self.step:08d}.png")
        return metrics

    @torch.no_grad()
    def save_images(self, images: Tensor) -> Path:
        """A PNG of ``images`` over their reconstructions by the raw weights (``images/``)."""
        self.model.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "images", self.step))
        recon = self.model.reconstruct(images, generator=g)
        self.model.train()
        path = self.out / "images" / f"step_{self.step:08d}.png"
        save_image_rows([images, recon], path)
        return path

    def _eval_images(self) -> tuple[Tensor, list[int]]:
        """:meth:`held_out_with_ids`, read once per run."""
        if self._eval_set is None:
            self._eval_set = self.held_out_with_ids()
        return self._eval_set

    def _held_out_or_batch(self) -> Tensor:
        return self._eval_images()[0][: self.tc.log.images].to(self.device)
