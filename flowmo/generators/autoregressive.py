"""An autoregressive token generator in the style of LlamaGen (Sun et al. 2024, "Autoregressive
Model Beats Diffusion"): a causal transformer whose first token is the class embedding
(the learned null class for classifier-free guidance, trained by label dropout); position i
predicts token i from the class and tokens < i. Sampling makes L forward passes, one token each
(no key/value cache: each pass reruns the prefix)."""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowmo.nets.frozen import evaluating
from flowmo.model import LossOutput
from flowmo.registry import GENERATORS

from ._checks import check_index_tensor, check_int, set_transformer_options
from .base import GenerationOutput, TokenGenerator
from .sampling import _check_no_overflow, _draw, _guided, _top_k
from .transformer import GeneratorBlock, SequenceRope

__all__ = ["AutoregressiveGenerator"]


@GENERATORS.register("autoregressive")
class AutoregressiveGenerator(TokenGenerator):
    """A causal class-token-first transformer over ``seq_len`` tokens.

    Args (keyword-only; :meth:`config` returns them): vocab_size (>= 2), seq_len (>= 1),
    num_classes (>= 0; 0 = unconditional: the class token is then always the null class, a
    learned start token), width, depth, heads (head dim width / heads even), mlp_ratio (> 0),
    label_dropout (in [0, 1]), rope_theta (> 0) — as for :class:`~flowmo.generators.MaskGiT`.
    The class embedding has num_classes + 1 rows (the last = null class); the token embedding
    has vocab_size rows (no [MASK]).
    """

    name = "autoregressive"
    default_steps = None

    def __init__(self, *, vocab_size: int, seq_len: int, num_classes: int = 0, width: int = 256, depth: int = 6,
                 heads: int = 4, mlp_ratio: float = 4.0, label_dropout: float = 0.1, rope_theta: float = 10000.0):
        super().__init__()
        set_transformer_options(self, vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes, width=width,
                                depth=depth, heads=heads, mlp_ratio=mlp_ratio, label_dropout=label_dropout,
                                rope_theta=rope_theta)

        self.tok_emb = nn.Embedding(self.vocab_size, width)
        self.class_emb = nn.Embedding(self.num_classes + 1, width)
        self.rope = SequenceRope(width // heads, self.rope_theta)
        self.blocks = nn.ModuleList(GeneratorBlock(width, heads, self.mlp_ratio, causal=True, modulation=False)
                                    for _ in range(self.depth))
        self.norm_out = nn.LayerNorm(width, eps=1e-6)
        self.head = nn.Linear(width, self.vocab_size)
        for emb in (self.tok_emb, self.class_emb):
            nn.init.normal_(emb.weight, std=0.02)

    def config(self) -> dict[str, Any]:
        return {"vocab_size": self.vocab_size, "seq_len": self.seq_len, "num_classes": self.num_classes,
                "width": self.width, "depth": self.depth, "heads": self.heads, "mlp_ratio": self.mlp_ratio,
                "label_dropout": self.label_dropout, "rope_theta": self.rope_theta}

    def forward(self, prefix: Tensor, labels: Tensor) -> Tensor:
        """Next-token logits after the class token and each prefix token.

        Args:
            prefix: int64 (B, n), 0 <= n < seq_len, tokens in [0, vocab_size).
            labels: int64 (B,) in [0, num_classes] (num_classes = the null class).

        Returns:
            float32 (B, n + 1, vocab_size): row i predicts token i.
        """
        if isinstance(prefix, Tensor) and prefix.ndim == 2 and prefix.shape[1] >= self.seq_len:
            raise ValueError(f"prefix must have shape (B, n) with n < seq_len = {self.seq_len}, got {tuple(prefix.shape)}")
        prefix = check_index_tensor(prefix, "prefix", (None, None), "(B, n)", self.vocab_size, "token indices",
                                    self.device)
        labels = check_index_tensor(labels, "labels", (prefix.shape[0],), f"({prefix.shape[0]},)",
                                    self.num_classes + 1, "class labels or the null class", self.device)
        return self._logits(prefix, labels)

    def _logits(self, prefix: Tensor, labels: Tensor) -> Tensor:
        x = torch.cat((self.class_emb(labels)[:, None], self.tok_emb(prefix)), dim=1)
        freqs = self.rope(x.shape[1], x.device)
        for block in self.blocks:
            x = block(x, None, freqs)
        return self.head(self.norm_out(x)).float()

    def loss(self, tokens: Tensor, labels: Optional[Tensor] = None, *,
             generator: Optional[torch.Generator] = None) -> LossOutput:
        """Next-token cross-entropy over all L positions (teacher forcing).

        With label_dropout > 0 and classes, one U(0, 1) per sample is drawn from ``generator``
        (in either mode) and, in training mode only (dropout, as ``nn.Dropout``), a label becomes
        the null class where it is < label_dropout; nothing else is random. The term is the same
        in eval mode, without the dropout.

        Returns:
            LossOutput: total = terms["next_token_ce"], the mean over the B * L tokens of
            -log softmax(logits)[token] (nats per token).
        """
        tokens, labels = self.training_inputs(tokens, labels, generator)
        b = tokens.shape[0]
        if self.num_classes and self.label_dropout > 0:  # drawn in either mode: the later draws match
            drop = torch.rand(b, generator=generator, device=tokens.device) < self.label_dropout
            if self.training:  # dropout, as nn.Dropout: training mode only
                labels = labels.masked_fill(drop, self.null_class)
        logits = self._logits(tokens[:, :-1], labels)
        ce = F.cross_entropy(logits.reshape(-1, self.vocab_size), tokens.reshape(-1))
        return LossOutput(ce, {"next_token_ce": ce})

    def generate(self, labels: Optional[Tensor] = None, *, batch_size: Optional[int] = None,
                 steps: Optional[int] = None, temperature: float = 1.0, cfg_scale: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None) -> GenerationOutput:
        """Sample one token per step, left to right (see :meth:`TokenGenerator.generate`).

        ``steps`` must be None or seq_len (one step per token). Per step: the logits of the next
        token (guided: the cond/uncond pair stacked in one forward), top-k, then temperature
        sampling (0: argmax; otherwise one Gumbel draw (B, V) from ``generator``).

        Returns:
            GenerationOutput: forward_passes = steps = seq_len; nfe = seq_len, or 2 * seq_len guided.
        """
        labels, guided, temperature, cfg_scale, top_k = self.sampling_inputs(
            labels, batch_size, temperature, cfg_scale, top_k, generator)
        if steps is not None and check_int(steps, "steps") != self.seq_len:
            raise ValueError(f"steps must be None or seq_len = {self.seq_len} for an autoregressive generator, got {steps}")
        b = labels.shape[0]
        x = torch.zeros((b, 0), dtype=torch.long, device=self.device)
        null = torch.full_like(labels, self.null_class)
        nfe = 0
        overflow = torch.zeros((), dtype=torch.bool, device=self.device)
        with evaluating(self):  # eval mode, no gradients; each submodule's training flag given back
            for _ in range(self.seq_len):
                if guided:
                    both = self._logits(torch.cat((x, x)), torch.cat((labels, null)))[:, -1]
                    logits, bad = _guided(*both.chunk(2), cfg_scale)
                    overflow |= bad
                    nfe += 2
                else:
                    logits = self._logits(x, labels)[:, -1]
                    nfe += 1
                nxt, bad = _draw(_top_k(logits, top_k), temperature, generator)
                overflow |= bad
                x = torch.cat((x, nxt[:, None]), dim=1)
        _check_no_overflow(overflow, cfg_scale, temperature)
        return GenerationOutput(tokens=x, forward_passes=self.seq_len, nfe=nfe, steps=self.seq_len)
