"""The trainer for Stage 1A (rectified flow) and Stage 1B (mode-seeking post-training).

Deterministic by construction: every random draw of step s, micro-batch m comes from a
generator seeded by (seed, s, m), and the data of each micro-batch from a permutation
seeded by (seed, epoch). A run interrupted at step k and resumed from its checkpoint thus
reaches the same weights as an uninterrupted run (bitwise on one CPU process), and
``world_size`` processes with ``grad_accum`` a give the same updates as one process with
``grad_accum`` a x world_size (same global batch, up to float summation order).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..devices import DistContext, init_process_group, resolve_device
from ..state_dicts import check_finite, check_state_dict
from ..model import CONFIG_NAME, WEIGHTS_NAME, FlowMo
from .checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    optimizer_from_tensors,
    optimizer_to_tensors,
    prune_checkpoints,
    save_checkpoint,
)
from .config import TrainConfig, read_train_config

__all__ = ["Trainer", "derive_seed", "StepBatchSampler", "TrainingStopped", "renormalize_", "ema_update_"]


class TrainingStopped(RuntimeError):
    """The run stopped itself (e.g. too many non-finite losses in a row)."""


def derive_seed(*parts: Union[int, str]) -> int:
    """A 63-bit seed from a tuple of ints/strings (stable across processes and platforms)."""
    ints = [p if isinstance(p, int) else int.from_bytes(p.encode()[:8].ljust(8, b"\0"), "little") for p in parts]
    a, b = np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32)
    return (int(a) << 31 | int(b)) & (2**63 - 1)


# ---------------------------------------------------------------------------------- data
class _Indexed(torch.utils.data.Dataset):
    """Items addressed by (epoch, index); returns (image, newly found unreadable paths)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        before = set(getattr(self.dataset, "bad_paths", ()))
        image = self.dataset[index]
        bad = [str(p) for p in getattr(self.dataset, "bad_paths", ()) if p not in before]
        return image, bad


def _collate(items):
    images = torch.stack([i for i, _ in items])
    bad = [p for _, b in items for p in b]
    return images, bad


class StepBatchSampler(torch.utils.data.Sampler):
    """Micro-batches of (epoch, index) keys from ``start_step`` on, forever.

    Global position p of image j of micro-batch (step s, global micro m) is
    (s * world * accum + m) * batch + j with m = rank * accum + a; epoch p // n picks a
    permutation seeded by (seed, epoch); the item is perm[p % n].
    """

    def __init__(self, length: int, batch_size: int, grad_accum: int, world: int, rank: int, seed: int,
                 start_step: int = 0):
        self.n, self.b, self.accum, self.world, self.rank = length, batch_size, grad_accum, world, rank
        self.seed, self.start_step = seed, start_step
        self._perm: dict[int, Tensor] = {}

    def _permutation(self, epoch: int) -> Tensor:
        if epoch not in self._perm:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "data", epoch))
            self._perm = {epoch: torch.randperm(self.n, generator=g)}
        return self._perm[epoch]

    def micro_batch(self, step: int, a: int) -> list[tuple[int, int]]:
        m = self.rank * self.accum + a
        base = (step * self.world * self.accum + m) * self.b
        out = []
        for p in range(base, base + self.b):
            epoch = p // self.n
            out.append((epoch, int(self._permutation(epoch)[p % self.n])))
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        s = self.start_step
        while True:
            for a in range(self.accum):
                yield self.micro_batch(s, a)
            s += 1

    def __len__(self) -> int:  # pragma: no cover - infinite
        raise TypeError("StepBatchSampler is infinite")


# ---------------------------------------------------------------------------------- pure pieces
def block_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every Linear weight inside the transformer blocks (``...double_blocks.N...``)."""
    out = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear) and ".double_blocks." in f".{name}.":
            out[f"{name}.weight"] = m.weight
    return out


@torch.no_grad()
def renormalize_(weights: dict[str, Tensor], targets: dict[str, Tensor]) -> None:
    """Rescale each weight in place to its target Frobenius norm: w <- w * (n0 / ||w||)."""
    for name, w in weights.items():
        n = torch.linalg.vector_norm(w.float())
        w.mul_((targets[name].to(w.device) / n.clamp_min(1e-12)).to(w.dtype))


@torch.no_grad()
def ema_update_(ema: dict[str, Tensor], params: dict[str, Tensor], decay: float, every: int) -> None:
    """ema <- decay**every * ema + (1 - decay**every) * param (one update standing for ``every`` steps)."""
    w = 1.0 - decay**every
    names = list(ema)
    torch._foreach_lerp_([ema[n] for n in names], [params[n].detach().to(ema[n].dtype) for n in names], w)


# ---------------------------------------------------------------------------------- trainer
@dataclass
class Counters:
    nonfinite_total: int = 0
    nonfinite_streak: int = 0
    skipped_images: list[str] = field(default_factory=list)
    images_seen: int = 0


class Trainer:
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
        path.write_text(text + "\n")

    def _load_init(self, path: Path) -> None:
        """Stage 1B's starting point: a run folder, a checkpoint folder or a model folder."""
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
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, weights, str(path))
        self.model.load_state_dict(weights)

    def _freeze_unused(self) -> None:
        """Parameters no loss can change are found with one dry-run backward on random images and
        frozen: those without a gradient or with an exactly zero one (the encoder's time and
        modulation layers, heads whose output is unused, the encoder's latent input weight, whose
        input is all zeros, ...). DDP then needs no unused-parameter search."""
        s = self.config.model.image_size
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "dry-run"))
        x = torch.rand(2, 3, s, s, generator=g, device=self.device) * 2 - 1
        self.model.train()
        out = self.model(x, objective=self.objective, generator=g, cfg_dropout=False)
        out.total.backward()
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

    # ---------------------------------------------------------------- checkpoints
    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (rank 0) and prune old ones."""
        if not self.ctx.main:
            return None
        opt_tensors, opt_meta = optimizer_to_tensors(self.optimizer, self._opt_names)
        parts = {
            "model": {k: v for k, v in self.model.state_dict().items()},
            "optimizer": opt_tensors,
            "renorm": self.targets,
        }
        if self.ema:
            parts["ema"] = self.ema
        state = {
            "step": self.step,
            "stage": self.tc.stage,
            "optimizer": opt_meta,
            "encoder_frozen": self.encoder_frozen,
            "ema_step": self.ema_step,
            "data_position": self.step * self.ctx.world * self.tc.optim.grad_accum * self.tc.optim.batch_size,
            "counters": {"nonfinite_total": self.counters.nonfinite_total,
                         "nonfinite_streak": self.counters.nonfinite_streak,
                         "skipped_images": self.counters.skipped_images,
                         "images_seen": self.counters.images_seen},
            "world_size": self.ctx.world,
            "torch_rng": torch.get_rng_state().tolist(),
            "model_fingerprint": self.config.model.fingerprint(),
        }
        path = save_checkpoint(self.ckpt_dir, self.step, parts, state)
        ck = self.tc.checkpoint
        prune_checkpoints(self.ckpt_dir, ck.keep_last, ck.keep_every)
        return path

    def _restore(self, path: Path) -> None:
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
        required = ["model", "optimizer", "renorm"] + (["ema"] if ema else [])
        parts, state = load_checkpoint(path, required)
        check_finite(parts["model"], str(path / "model.safetensors"))
        if state.get("model_fingerprint") not in (None, self.config.model.fingerprint()):
            raise CheckpointError(f"{path} was written for a different model architecture")
        check_state_dict({k: tuple(v.shape) for k, v in self.model.state_dict().items()}, parts["model"], str(path))
        self.model.load_state_dict(parts["model"])
        self.step = int(state["step"])
        if "ema" in parts:
            self.ema = {k: v.to(self.device) for k, v in parts["ema"].items()}
        # checkpoints written before ema_step was recorded: the last multiple of ema.every
        self.ema_step = int(state.get("ema_step", self.step - self.step % self.tc.ema.every))
        self.targets = parts.get("renorm", self.targets)
        if state.get("encoder_frozen"):
            self._freeze_encoder()
            self.optimizer = self._make_optimizer()
        optimizer_from_tensors(self.optimizer, self._opt_names, parts["optimizer"], state["optimizer"])
        c = state.get("counters", {})
        self.counters = Counters(c.get("nonfinite_total", 0), c.get("nonfinite_streak", 0),
                                 list(c.get("skipped_images", [])), c.get("images_seen", 0))
        torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        if self.ctx.main:
            self._log(f"resumed from {path} at step {self.step}")

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
        if o.decay == "constant":
            return o.lr
        start, end = max(o.warmup_steps, 0), self.tc.steps
        u = 1.0 if end <= start else min(1.0, max(0.0, (k - start) / (end - start)))
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

    # ---------------------------------------------------------------- evaluation and images
    def ema_model(self) -> FlowMo:
        """A copy of the model with the EMA weights."""
        m = FlowMo(self.config.model).to(self.device)
        sd = self.model.state_dict()
        m.load_state_dict({k: self.ema[k].to(sd[k].dtype) if k in self.ema else v for k, v in sd.items()})
        return m.eval()

    def held_out(self) -> Tensor:
        from ..data.folders import ImageFolderDataset, held_out_photos

        n = self.tc.eval.images
        s = self.config.model.image_size
        if self.tc.data.folder is None:
            return held_out_photos(s)[:n]
        ds = ImageFolderDataset(self.tc.data.folder, s, train=False)
        return torch.stack([ds[i] for i in range(min(n, len(ds)))])

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Held-out PSNR and SSIM (uint8 convention), and a PNG of originals over reconstructions.

        Held-out image ``i`` is decoded from :func:`flowmo.data.noise.image_noise` ``(train.seed,
        [i])``: the noise ``flowmo eval --seed <train.seed>`` and ``flowmo reconstruct --seed
        <train.seed>`` use for image ``i``."""
        from ..eval.metrics import psnr, ssim
        from ..data.grids import save_image_rows
        from ..data.noise import image_noise

        if not hasattr(self, "_held_out"):
            self._held_out = self.held_out()
        model = self.ema_model() if (self.tc.eval.use_ema and self.ema) else self.model
        was_training = model.training
        model.eval()
        x = self._held_out.to(self.device)
        sampler = {"steps": self.tc.eval.steps} if self.tc.eval.steps else None
        # held-out image i is decoded from the noise of `flowmo eval --seed <train.seed>` for image i
        noise = image_noise(self.tc.seed, range(x.shape[0]), x.shape[1:], device=self.device, dtype=model.dtype)
        recon = model.reconstruct(x, noise=noise, sampler=sampler)
        model.train(was_training)
        metrics = {"eval/psnr": float(psnr(x, recon).mean()), "eval/ssim": float(ssim(x, recon).mean())}
        if self.ctx.main:
            save_image_rows([x, recon], self.out / "eval" / f"step_{self.step:08d}.png")
        return metrics

    @torch.no_grad()
    def save_images(self, images: Tensor) -> Path:
        from ..data.grids import save_image_rows

        self.model.eval()
        g = torch.Generator(self.device).manual_seed(derive_seed(self.tc.seed, "images", self.step))
        recon = self.model.reconstruct(images, generator=g)
        self.model.train()
        path = self.out / "images" / f"step_{self.step:08d}.png"
        save_image_rows([images, recon], path)
        return path

    # ---------------------------------------------------------------- logging
    def _record(self, metrics: dict[str, Any]) -> None:
        if not self.ctx.main:
            return
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": self.step, **metrics}) + "\n")
        if self.tc.log.tensorboard:
            if self._writer is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self._writer = SummaryWriter(str(self.out / "tensorboard"))
                except Exception:  # tensorboard not installed
                    self._writer = False
            if self._writer:
                for k, v in metrics.items():
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        self._writer.add_scalar(k, v, self.step)

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
