"""Training a token generator on a labelled token set, with the tokenizer trainer's machinery
(:class:`~flowmo.train.loop.TrainerBase`: torchrun/DDP, gradient accumulation, exact resume,
EMA, atomic checkpoints, records and TensorBoard, progress bar, SIGTERM).

The data are the token set's rows (sequence, label) (:func:`flowmo.data.token_set_reader.read_token_set`),
addressed per micro-batch by :class:`~flowmo.train.sampler.StepBatchSampler` exactly as the image
trainer addresses images; micro-batch m of step s draws its masks and label dropout from a
generator seeded by (train.seed, s, m). So a run resumed at step k reaches the same weights and
EMA as an uninterrupted one (bitwise on one CPU process), and W ranks with ``grad_accum`` a train
like one process with ``grad_accum`` W a (up to float summation order).

Counters and checkpoint fields named after images (``images_seen``, ``skipped_images``, the
``images_per_s`` of the tokenizer's records) count token-set rows here (``sequences_per_s``);
nothing is ever skipped.

A run folder holds ``config.json`` (the resolved :class:`GeneratorTrainConfig`),
``token_set.json`` (the token set's layout, tokenizer fingerprint, weights digest and spec,
classes: what an exported generator records), ``checkpoints/``, ``metrics.jsonl`` and TensorBoard events.
:func:`export_generator` writes a checkpoint's (EMA) weights as a generator folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
from torch import Tensor, nn

from flowmo.folders.checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
from flowmo.data.folder_kinds import check_outside_run
from flowmo.data.token_layout import TokenLayout

from ..data.files import atomic_write_text
from ..data.token_set_reader import read_token_set
from ..generators.base import TokenGenerator
from ..generators.build import build_generator
from .config import GeneratorTrainConfig, config_differences, describe_differences
from .ema import weights_words
from .loop import TrainerBase
from .sampler import StepBatchSampler, derive_seed

__all__ = ["GeneratorTrainer", "GeneratorLoss", "export_generator", "generator_metadata", "TOKEN_SET_RECORD"]

TOKEN_SET_RECORD = "token_set.json"


class GeneratorLoss(nn.Module):
    """The module DDP wraps: its forward is the generator's training loss.

    ``forward(tokens, labels, generator=None)`` = ``generator_model.loss(tokens, labels,
    generator=generator)`` (a :class:`~flowmo.model.LossOutput`); its parameters are the
    generator's (named ``generator.<name>``)."""

    def __init__(self, generator: TokenGenerator):
        super().__init__()
        self.generator = generator

    def forward(self, tokens: Tensor, labels: Optional[Tensor], generator: Optional[torch.Generator] = None):
        return self.generator.loss(tokens, labels, generator=generator)


def generator_metadata(token_set: Any) -> dict[str, Any]:
    """What a generator trained on ``token_set`` (a :class:`~flowmo.data.token_shards.TokenSet`)
    records in its folder: ``layout`` (the TokenLayout as a JSON object), ``tokenizer_fingerprint``,
    ``classes`` (label i is classes[i]), ``tokenizer_spec`` (the tokenizer's FlowMoSpec as a
    JSON object) and, when the token set records it, ``tokenizer_weights`` (the tokenizer's
    :func:`~flowmo.state_dicts.token_weights_digest`, checked by
    :func:`flowmo.generators.pipeline.check_tokenizer`)."""
    meta = {"layout": json.loads(token_set.layout.to_json()), "tokenizer_fingerprint": token_set.layout.fingerprint,
            "classes": list(token_set.classes), "tokenizer_spec": json.loads(token_set.spec_json)}
    if getattr(token_set, "tokenizer_weights", None) is not None:
        meta["tokenizer_weights"] = token_set.tokenizer_weights
    return meta


def _fingerprint(generator: TokenGenerator, layout: TokenLayout) -> str:
    """The trained architecture: the generator's name and full config, and the token layout."""
    doc = json.dumps({"generator": generator.name, "config": generator.config(),
                      "layout": json.loads(layout.to_json())}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


class GeneratorTrainer(TrainerBase):
    """Trains the token generator a :class:`GeneratorTrainConfig` describes, writing into ``out_dir``
    (see the module docstring). With ``resume=True`` training continues from the newest complete
    checkpoint in ``out_dir``, with the settings the run recorded: a changed field that
    :data:`~flowmo.train.checkpointing.RESUMABLE` does not allow raises CheckpointError naming
    it; the changes it allows are logged and appended to ``config_changes.json``.

    Raises:
        FileNotFoundError / ValueError: the token set is missing or unreadable; the generator
            config does not build; ``out_dir`` holds a run of another generator or token layout;
            resuming with changed settings (CheckpointError).
    """

    unit = "seq"
    rate_name = "sequences"

    def __init__(self, config: GeneratorTrainConfig, out_dir: Union[str, Path], *, resume: bool = False,
                 log: Optional[Callable[[str], None]] = None):
        if not isinstance(config, GeneratorTrainConfig):
            raise TypeError(f"config must be a GeneratorTrainConfig (load_generator_config), got {type(config).__name__}")
        self.config = config
        self._setup_runtime(config.train, out_dir, log)
        self.token_set = read_token_set(self.tc.tokens)
        self.layout = self.token_set.layout
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on train.seed only
            torch.manual_seed(derive_seed(self.tc.seed, "init"))
            self.model = build_generator(config.generator, vocab_size=self.layout.vocab_size,
                                         seq_len=self.layout.seq_len, num_classes=len(self.token_set.classes))
        self.model.to(self.device)
        self.loss_module = GeneratorLoss(self.model)
        self._sequences = self.token_set.sequences
        self._labels = self.token_set.labels
        ckpt = self._starting_checkpoint(resume)
        if ckpt is not None:
            self._check_resume_config(ckpt)  # the run's settings, or only changes RESUMABLE allows
        if self.ctx.main:
            self.out.mkdir(parents=True, exist_ok=True)
            self._check_run_folder()
        self._init_ema()
        self.optimizer = self._make_optimizer()
        if ckpt is not None:
            self._restore(ckpt)
        self.ddp = self._wrap()
        if self.ctx.main:
            atomic_write_text(self.out / "config.json", self.config.model_dump_json(indent=2) + "\n")
            self._record_config_changes()
            atomic_write_text(self.out / TOKEN_SET_RECORD,
                              json.dumps({**generator_metadata(self.token_set), "tokens": self.tc.tokens,
                                          "count": len(self.token_set), "augment": list(self.token_set.augment)},
                                         indent=1) + "\n")

    def _check_run_folder(self) -> None:
        path = self.out / "config.json"
        if not path.is_file():
            return
        try:
            old = GeneratorTrainConfig.model_validate_json(path.read_text())
        except ValueError as e:
            raise CheckpointError(f"{path} is not a generator run's config ({str(e).splitlines()[0]}); "
                                  "use another output folder") from None
        diffs = config_differences(old.generator, self.config.generator, "generator")
        if diffs:
            raise CheckpointError(f"{self.out} holds a run of another generator ({describe_differences(diffs)}); "
                                  "use another output folder")
        record = self.out / TOKEN_SET_RECORD
        if record.is_file():
            recorded = json.loads(record.read_text())
            layout = recorded.get("layout")
            if layout != json.loads(self.layout.to_json()):
                raise CheckpointError(f"{self.out} holds a run on tokens of another layout or tokenizer ({layout}); "
                                      "use another output folder")
            old_weights, weights = recorded.get("tokenizer_weights"), self.token_set.tokenizer_weights
            if old_weights is not None and weights is not None and old_weights != weights:
                raise CheckpointError(f"{self.out} holds a run on tokens of a tokenizer with other weights (weights "
                                      f"digest {old_weights}, this token set's {weights}): same architecture, other weights; "
                                      "use another output folder")

    # ---------------------------------------------------------------- hooks of the loop
    def _ddp_module(self) -> nn.Module:
        return self.loss_module

    def _model_fingerprint(self) -> str:
        return _fingerprint(self.model, self.layout)

    def _checkpoint_state(self) -> dict[str, Any]:
        return {"kind": "generator", "generator": self.model.name}

    def _next_batch(self) -> tuple[Tensor, Tensor]:
        if self._data_iter is None:
            o = self.tc.optim
            sampler = StepBatchSampler(len(self.token_set), o.batch_size, o.grad_accum, self.ctx.world,
                                       self.ctx.rank, self.tc.seed, start_step=self.step)
            self._data_iter = iter(sampler)
        keys = next(self._data_iter)
        idx = torch.tensor([i for _, i in keys], dtype=torch.long)
        return self._sequences[idx].to(self.device), self._labels[idx].to(self.device)

    def _micro_loss(self, batch: tuple[Tensor, Tensor], generator: torch.Generator):
        tokens, labels = batch
        return self.ddp(tokens, labels, generator=generator)

    def _progress_desc(self) -> str:
        return f"{self.model.name}"

    # ---------------------------------------------------------------- weights
    def ema_generator(self) -> TokenGenerator:
        """A copy of the generator with the EMA weights (the raw weights when EMA is off), in eval mode."""
        return _with_weights(self.config.generator, self.token_set.classes, self.layout,
                             self.model.state_dict(), self.ema).to(self.device).eval()


def _with_weights(gen_config: dict, classes: list, layout: TokenLayout, state: dict[str, Tensor],
                  ema: Optional[dict[str, Tensor]]) -> TokenGenerator:
    g = build_generator(gen_config, vocab_size=layout.vocab_size, seq_len=layout.seq_len, num_classes=len(classes))
    sd = g.state_dict()
    missing = sorted(set(sd) - set(state) - set(ema or {}))
    if missing:
        raise CheckpointError(f"the weights lack {missing[:3]}")
    g.load_state_dict({k: (ema[k] if ema and k in ema else state[k]).to(v.dtype) for k, v in sd.items()})
    return g


def export_generator(source: Union[str, Path], out: Union[str, Path], *, weights: str = "ema",
                     step: Optional[int] = None) -> Path:
    """A generator run folder (its newest checkpoint, or ``step``'s) or one of its checkpoint
    folders -> a generator folder (:meth:`TokenGenerator.save_pretrained`) with the EMA (or
    ``weights="raw"``) weights and the metadata of :func:`generator_metadata`, plus ``weights``
    (which weights: ``"ema (...)"`` or ``"raw (...)"``, :func:`flowmo.train.ema.weights_words`) and
    ``step`` (the checkpoint's).

    Raises:
        FileNotFoundError: no run/checkpoint folder, no checkpoint, or the run's records missing.
        ValueError: an unknown ``weights``, a missing ``step``, or a checkpoint without EMA weights
            when ``weights="ema"`` (CheckpointError); an ``out`` that is the run folder or inside its
            ``checkpoints/`` (:func:`flowmo.data.folder_kinds.check_outside_run`) or holding another kind of folder.
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    ckpt, run = resolve_checkpoint(source, step, kind="generator run")
    check_outside_run(out, run, "out", "run")
    for name in ("config.json", TOKEN_SET_RECORD):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run / name} is missing (the run's records)")
    config = GeneratorTrainConfig.model_validate_json((run / "config.json").read_text())
    record = json.loads((run / TOKEN_SET_RECORD).read_text())
    layout = TokenLayout.from_json(json.dumps(record["layout"]))
    has_ema = (ckpt / "ema.safetensors").is_file()
    if weights == "ema" and not has_ema:
        raise CheckpointError(f"{ckpt} has no EMA weights (EMA was disabled); export the raw weights")
    parts, state = load_checkpoint(ckpt, ["model"] + (["ema"] if weights == "ema" else []))
    g = _with_weights(config.generator, record["classes"], layout, parts["model"], parts.get("ema"))
    meta = {k: record[k] for k in ("layout", "tokenizer_fingerprint", "classes", "tokenizer_spec")}
    if record.get("tokenizer_weights") is not None:  # runs on token sets written before the digest lack it
        meta["tokenizer_weights"] = record["tokenizer_weights"]
    meta["weights"] = weights_words(weights, config.train.ema)
    meta["step"] = int(state.get("step", 0))
    return g.save_pretrained(out, metadata=meta)
