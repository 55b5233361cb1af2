"""MaskGiT (Chang et al. 2022, "MaskGIT: Masked Generative Image Transformer"): a bidirectional
transformer over the token sequence, trained to predict masked tokens, sampled by iterative
parallel decoding with confidence-based re-masking.

Class conditioning is adaLN-Zero (DiT, Peebles & Xie 2023: the form DiT found best among
in-context token, cross-attention and adaLN): the class embedding modulates every block
and the output layer. The class then reaches every layer directly, the sequence stays the L
tokens (nothing to strip from the output), and flowmo's
:class:`~flowmo.blocks.modulation.Modulation` is reused as is. The last class row is the
learned null class used for classifier-free guidance (label dropout trains it).

Positions enter twice: a learned absolute embedding added to the inputs (as MaskGIT's BERT-style
transformer has; without it a fully masked input gives every position nearly the same features,
since RoPE alone is relative) and 1-D RoPE in every attention.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmo.nets.frozen import evaluating
from flowmo.model import LossOutput
from flowmo.registry import GENERATORS

from ._checks import check_index_tensor, check_int, check_real, set_transformer_options
from .base import GenerationOutput, TokenGenerator
from .sampling import _check_no_overflow, _draw, _guided, _top_k, gumbel_noise
from .schedule import _decoding_schedule, _random_mask, _sample_mask_counts
from .transformer import GeneratorBlock, SequenceRope

__all__ = ["MaskGiT"]


@GENERATORS.register("maskgit")
class MaskGiT(TokenGenerator):
    """A class-conditional (or unconditional) MaskGiT over sequences of ``seq_len`` tokens.

    Args (keyword-only; :meth:`config` returns them):
        vocab_size: V >= 2, tokens in [0, V); the input embedding has V + 1 rows, row V = [MASK].
        seq_len: L >= 1, tokens per sample.
        num_classes: C >= 0 classes (0: unconditional); the class embedding has C + 1 rows,
            row C = the learned null class.
        width: D, the token width (a multiple of ``heads``; head dim D / heads even for RoPE).
        depth: transformer blocks >= 1.
        heads: attention heads >= 1.
        mlp_ratio: MLP hidden size / width, > 0.
        label_dropout: in [0, 1], the probability that training replaces a label by the null
            class (classifier-free guidance; MaskGIT-style CFG training uses ~0.1). Ignored when
            num_classes = 0.
        rope_theta: the RoPE base (> 0) of the 1-D positions.

    Raises:
        TypeError / ValueError: an argument of the wrong type or range, named.
    """

    name = "maskgit"
    default_steps = 8

    def __init__(self, *, vocab_size: int, seq_len: int, num_classes: int = 0, width: int = 256, depth: int = 6,
                 heads: int = 4, mlp_ratio: float = 4.0, label_dropout: float = 0.1, rope_theta: float = 10000.0):
        super().__init__()
        set_transformer_options(self, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes, width=width,
                                depth=depth, heads=heads, mlp_ratio=mlp_ratio, label_dropout=label_dropout,
                                rope_theta=rope_theta)
        self.mask_id = self.vocab_size

        self.tok_emb = nn.Embedding(self.vocab_size + 1, width)
        self.class_emb = nn.Embedding(self.num_classes + 1, width)
        self.pos_emb = nn.Parameter(torch.zeros(1, self.seq_len, width))
        self.rope = SequenceRope(width // heads, self.rope_theta)
        self.blocks = nn.ModuleList(GeneratorBlock(width, heads, self.mlp_ratio, causal=False, modulation=True)
                                    for _ in range(self.depth))
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mod_out = nn.Linear(width, 2 * width)  # (shift, scale) of the output norm, from the class
        self.head = nn.Linear(width, self.vocab_size)
        for emb in (self.tok_emb, self.class_emb):
            nn.init.normal_(emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb, std=0.02)
        nn.init.zeros_(self.mod_out.weight)
        nn.init.zeros_(self.mod_out.bias)

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_classes": self.num_classes,
                "width": self.width, "depth": self.depth, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "label_dropout": self.label_dropout, "rope_theta": self.rope_theta}

    # ------------------------------------------------------------------ the network
    def forward(self, inputs: Tensor, labels: Tensor) -> Tensor:
        """Logits for every position of partly masked sequences.

        Args:
            inputs: int64 (B, L), values in [0, vocab_size]; vocab_size = [MASK].
            labels: int64 (B,), values in [0, num_classes]; num_classes = the null class.

        Returns:
            float32 (B, L, vocab_size) logits (the [MASK] token is never predicted).

        Raises:
            TypeError / ValueError: inputs or labels malformed, out of range or on another device.
        """
        inputs = check_index_tensor(inputs, "inputs", (None, self.seq_len), f"(B, {self.seq_len})",
                                    self.vocab_size + 1, "token indices or [MASK]", self.device)
        labels = check_index_tensor(labels, "labels", (inputs.shape[0],), f"({inputs.shape[0]},)",
                                    self.num_classes + 1, "class labels or the null class", self.device)
        return self._logits(inputs, labels)

    def _logits(self, inputs: Tensor, labels: Tensor) -> Tensor:
        x = self.tok_emb(inputs) + self.pos_emb
        vec = self.class_emb(labels)
        freqs = self.rope(inputs.shape[1], inputs.device)
        for block in self.blocks:
            x = block(x, vec, freqs)
        shift, scale = self.mod_out(F.silu(vec))[:, None, :].chunk(2, dim=-1)
        return self.head(torch.addcmul(shift, self.norm_out(x), 1 + scale)).float()

    # ------------------------------------------------------------------ training
    def loss(self, tokens: Tensor, labels: Optional[Tensor] = None, *, generator: Optional[torch.Generator] = None,
             mask: Optional[Tensor] = None) -> LossOutput:
        """Cross-entropy on the masked positions (MaskGIT sec. 3.2).

        Draws, in order, from ``generator``: with label_dropout > 0 and classes, one U(0, 1)
        per sample, in either mode (in training mode only, dropout as ``nn.Dropout``: label ->
        null class where < label_dropout; so eval mode differs by the dropout alone); unless
        ``mask`` is given, r ~ U(0, 1) per sample (ceil(cos(pi r / 2) L) tokens masked, at
        least 1: :func:`~flowmo.generators.schedule.sample_mask_counts`) and a uniformly random
        choice of those positions (:func:`~flowmo.generators.schedule.random_mask`).

        Args:
            tokens: int64 (B, L) in [0, vocab_size).
            labels: int64 (B,) in [0, num_classes), required iff num_classes > 0 (None otherwise).
            generator: the random draws above.
            mask: optional bool (B, L), True = masked, at least one per row (default: drawn).

        Returns:
            LossOutput: total = terms["masked_ce"] = the mean, over all masked positions of the
            batch, of -log softmax(logits)[token] (nats per masked token; MaskGIT's weighting).
        """
        tokens, labels = self.training_inputs(tokens, labels, generator)
        b, length = tokens.shape
        if self.num_classes and self.label_dropout > 0:  # drawn in either mode: the later draws match
            drop = torch.rand(b, generator=generator, device=tokens.device) < self.label_dropout
            if self.training:  # dropout, as nn.Dropout: training mode only
                labels = labels.masked_fill(drop, self.null_class)
        if mask is None:
            counts = _sample_mask_counts(b, length, generator=generator, device=tokens.device)
            mask = _random_mask(counts, length, generator=generator)
        else:
            ok = isinstance(mask, Tensor) and mask.dtype == torch.bool and tuple(mask.shape) == (b, length)
            if not ok or mask.device != tokens.device or not bool(mask.any(dim=1).all()):
                raise ValueError(f"mask must be None or a bool ({b}, {length}) tensor on {tokens.device} masking a position "
                                 f"in every row, got {getattr(mask, 'dtype', type(mask).__name__)} {tuple(getattr(mask, 'shape', ()))}")
        logits = self._logits(tokens.masked_fill(mask, self.mask_id), labels)
        ce = F.cross_entropy(logits[mask], tokens[mask])
        return LossOutput(ce, {"masked_ce": ce})

    # ------------------------------------------------------------------ sampling
    def generate(self, labels: Optional[Tensor] = None, *, batch_size: Optional[int] = None,
                 steps: Optional[int] = None, temperature: float = 1.0, cfg_scale: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 choice_temperature: float = 4.5) -> GenerationOutput:
        """Iterative parallel decoding (MaskGIT sec. 3.3), ``steps`` network steps.

        Starts from L [MASK] tokens. Step t (0-based) of T: logits for every position (guided:
        uncond + cfg_scale * (cond - uncond), the pair stacked into one forward of batch 2B;
        cfg_scale 1 makes only the conditional pass), top-k filter, sample with ``temperature``
        (0: argmax) at the masked positions (decoded ones stay fixed); confidence = log-prob of
        the sampled token under the filtered logits + tau_t * Gumbel noise, with
        tau_t = choice_temperature * (1 - (t + 1) / T) (MaskGIT's linear "randomness
        annealing", 0 at the last step); the lowest-confidence newly sampled positions are
        masked again, as many as :func:`~flowmo.generators.schedule.decoding_schedule` says
        (floor(gamma((t + 1) / T) L) as google-research/maskgit's code, where the paper's text
        writes ceil; 0 after the last step). Ties in confidence go to the lower position.

        Args: see :meth:`TokenGenerator.generate`; steps in [1, seq_len], default 8 (clamped
        to seq_len); choice_temperature >= 0 (MaskGIT's default 4.5).

        Returns:
            GenerationOutput: tokens int64 (B, L); forward_passes = steps; nfe = steps
            (unguided) or 2 * steps (guided); steps.

        Random draws from ``generator``, per step: the sampling Gumbel noise (B, L, V) when
        temperature > 0, then the confidence noise (B, L) when tau_t > 0 and tokens stay masked.
        """
        labels, guided, temperature, cfg_scale, top_k = self.sampling_inputs(
            labels, batch_size, temperature, cfg_scale, top_k, generator)
        steps = (min(self.default_steps, self.seq_len) if steps is None
                 else check_int(steps, "steps (each decodes at least one token)", maximum=self.seq_len))
        schedule = _decoding_schedule(self.seq_len, steps)
        choice_temperature = check_real(choice_temperature, "choice_temperature", low=0.0)
        b, length, device = labels.shape[0], self.seq_len, self.device
        x = torch.full((b, length), self.mask_id, dtype=torch.long, device=device)
        null = torch.full_like(labels, self.null_class)
        passes = nfe = 0
        overflow = torch.zeros((), dtype=torch.bool, device=device)
        with evaluating(self):  # eval mode, no gradients; each submodule's training flag given back
            for t, n_masked in enumerate(schedule):
                unknown = x == self.mask_id
                if guided:
                    cond, uncond = self._logits(torch.cat((x, x)), torch.cat((labels, null))).chunk(2)
                    logits, bad = _guided(cond, uncond, cfg_scale)
                    overflow |= bad
                    nfe += 2
                else:
                    logits = self._logits(x, labels)
                    nfe += 1
                passes += 1
                logits = _top_k(logits, top_k)
                drawn, bad = _draw(logits, temperature, generator)
                overflow |= bad
                sampled = torch.where(unknown, drawn, x)
                if n_masked > 0:
                    logp = F.log_softmax(logits, dim=-1).gather(-1, sampled[..., None])[..., 0]
                    tau = choice_temperature * (1.0 - (t + 1) / steps)
                    if tau > 0:
                        logp = logp + tau * gumbel_noise((b, length), generator=generator, device=device)
                    confidence = logp.masked_fill(~unknown, math.inf)
                    lowest = confidence.argsort(dim=1, stable=True)[:, :n_masked]
                    sampled = sampled.scatter(1, lowest, self.mask_id)
                x = sampled
        _check_no_overflow(overflow, cfg_scale, temperature)
        return GenerationOutput(tokens=x, forward_passes=passes, nfe=nfe, steps=steps)

