"""An autoregressive token generator in the style of LlamaGen (Sun et al. 2024, "Autoregressive
Model Beats Diffusion"): a causal transformer whose first token is the class embedding
(the learned null class for classifier-free guidance, trained by label dropout); position i
predicts token i from the class and tokens < i. Sampling makes L forward passes, one token each.

By default sampling keeps a key/value cache (:class:`~flowmo.generators.transformer.KVCache`,
preallocated once per call): each pass runs only the newest token through the blocks and attends
to the cached keys and values of the class token and the earlier tokens, so token i costs O(i)
attention and O(1) everything else. ``generate(..., use_cache=False)`` reruns the whole prefix on
every pass instead (O(i) everything per token: O(L^2) per sample); both give the same tokens from
the same draws (up to float rounding of the logits, which decides a draw only at an exact tie)."""

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
from .transformer import GeneratorBlock, KVCache, SequenceRope

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
    samples_prefixes = True

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

    def _new_cache(self, rows: int) -> KVCache:
        """An empty :class:`KVCache` for ``rows`` sequences of up to seq_len positions (the class
        token and the first seq_len - 1 tokens: the last token is never fed back)."""
        weight = self.tok_emb.weight
        return KVCache(self.depth, rows, self.heads, self.seq_len, self.width // self.heads, dtype=weight.dtype,
                       device=weight.device)

    def _cached_logits(self, emb: Tensor, cache: KVCache, freqs: Tensor) -> Tensor:
        """Next-token logits after n new embedded tokens, the earlier ones read from ``cache``.

        Args:
            emb: (rows, n, width), the embeddings (class or token) of positions
                cache.length .. cache.length + n - 1.
            cache: from :meth:`_new_cache`; written at those positions, then advanced by n.
            freqs: float32 (>= cache.length + n, head_dim / 2, 2), the RoPE table from position 0.

        Returns:
            float32 (rows, n, vocab_size): what :meth:`_logits` gives at these rows of the whole
            sequence, up to float rounding. No host sync.
        """
        start, n = cache.length, emb.shape[1]
        rows = freqs[start:start + n]
        x = emb
        for block, keys, values in zip(self.blocks, cache.keys, cache.values):
            x = block.forward_cached(x, None, rows, keys, values, start)
        cache.advance(n)
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
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None,
                 use_cache: bool = True, length: Optional[int] = None) -> GenerationOutput:
        """Sample one token per step, left to right (see :meth:`TokenGenerator.generate`).

        ``steps`` must be None or the length sampled (one step per token). Per step: the logits of the next
        token (guided: the cond/uncond pair stacked in one forward of 2B rows), top-k, then
        temperature sampling (0: argmax; otherwise one Gumbel draw (B, V) from ``generator``).

        Args:
            use_cache: True (the default): a key/value cache of 2B (guided) or B rows, preallocated
                once; each step runs only the newest token through the blocks (cost linear in the
                prefix per token). False: each step reruns the class token and the whole prefix
                (quadratic per token). Both make the same draws from ``generator`` and give the
                same tokens up to float rounding of the logits (which decides a draw only at an
                exact tie). Neither makes a host sync per token (two per call: the labels' check before the loop and the
                overflow check after it).
            length: stop after the first ``length`` tokens (an int in [1, seq_len]; default seq_len):
                they are drawn as in a whole sequence (the same draws from ``generator``), the
                rest never made. An ordered tokenizer's prefix (nested dropout) decodes from them.

        Returns:
            GenerationOutput: tokens (B, length); forward_passes = steps = length; nfe = length,
            or 2 * length guided.

        Raises:
            TypeError: ``use_cache`` not a bool; the other arguments as the interface says.
            ValueError: ``length`` out of [1, seq_len].
        """
        labels, guided, temperature, cfg_scale, top_k = self.sampling_inputs(
            labels, batch_size, temperature, cfg_scale, top_k, generator)
        length = self.seq_len if length is None else check_int(length, "length", maximum=self.seq_len)
        if steps is not None and check_int(steps, "steps") != length:
            what = "seq_len" if length == self.seq_len else "length"
            raise ValueError(f"steps must be None or {what} = {length} for an autoregressive generator, got {steps}")
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be a bool, got {type(use_cache).__name__} {use_cache!r}")
        null = torch.full_like(labels, self.null_class)
        overflow = torch.zeros((), dtype=torch.bool, device=self.device)
        with evaluating(self):  # eval mode, no gradients; each submodule's training flag given back
            loop = self._sample_cached if use_cache else self._sample_uncached
            x = loop(labels, null, guided, temperature, cfg_scale, top_k, generator, overflow, length)
        _check_no_overflow(overflow, cfg_scale, temperature)
        nfe = length * (2 if guided else 1)
        return GenerationOutput(tokens=x, forward_passes=length, nfe=nfe, steps=length)

    def _next_token(self, out: Tensor, guided: bool, temperature: float, cfg_scale: float, top_k: Optional[int],
                    generator: Optional[torch.Generator], overflow: Tensor) -> Tensor:
        """The sampled tokens int64 (B,) from one step's last-row logits ``out`` (2B stacked
        cond/uncond rows when guided, else B); overflow flags or-ed into ``overflow`` in place."""
        if guided:
            out, bad = _guided(*out.chunk(2), cfg_scale)
            overflow |= bad
        nxt, bad = _draw(_top_k(out, top_k), temperature, generator)
        overflow |= bad
        return nxt

    def _sample_uncached(self, labels: Tensor, null: Tensor, guided: bool, temperature: float, cfg_scale: float,
                         top_k: Optional[int], generator: Optional[torch.Generator], overflow: Tensor,
                         length: int) -> Tensor:
        """The tokens (B, length), each step rerunning the class token and the whole prefix."""
        x = torch.zeros((labels.shape[0], 0), dtype=torch.long, device=labels.device)
        for _ in range(length):
            if guided:
                out = self._logits(torch.cat((x, x)), torch.cat((labels, null)))[:, -1]
            else:
                out = self._logits(x, labels)[:, -1]
            nxt = self._next_token(out, guided, temperature, cfg_scale, top_k, generator, overflow)
            x = torch.cat((x, nxt[:, None]), dim=1)
        return x

    def _sample_cached(self, labels: Tensor, null: Tensor, guided: bool, temperature: float, cfg_scale: float,
                       top_k: Optional[int], generator: Optional[torch.Generator], overflow: Tensor,
                       length: int) -> Tensor:
        """The tokens (B, length), each step running one new position per row through the blocks
        over a preallocated :class:`KVCache` (the guided pair's rows share their tokens)."""
        b = labels.shape[0]
        cls = torch.cat((labels, null)) if guided else labels
        cache = self._new_cache(cls.shape[0])
        freqs = self.rope(self.seq_len, labels.device)
        tokens = torch.empty((b, length), dtype=torch.long, device=labels.device)
        emb = self.class_emb(cls)[:, None]  # position 0: the class token
        for i in range(length):
            out = self._cached_logits(emb, cache, freqs)[:, -1]
            nxt = self._next_token(out, guided, temperature, cfg_scale, top_k, generator, overflow)
            tokens[:, i] = nxt
            if i + 1 < length:  # the last token is never fed back
                emb = self.tok_emb(torch.cat((nxt, nxt)) if guided else nxt)[:, None]
        return tokens
