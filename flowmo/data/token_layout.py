"""Token layouts: how a tokenizer's discrete tokens become the sequence a token generator models.

A FlowMo tokenizer turns an image into ``T`` latent tokens, each an index into its quantizer's
codebook (``codebook_size`` values: LFQ with C bits has 2**C, FSQ the product of its levels). A
generator needs a sequence over a vocabulary small enough for an embedding table and a softmax,
so a layout says which of two views it models:

``"token"``
    one element per latent token: the sequence is the (N, T) token indices, the vocabulary the
    quantizer's ``codebook_size``. Right for FSQ and for LFQ with few bits per token; refused
    when the vocabulary exceeds :data:`MAX_VOCAB`.
``"group"``
    the entropy-group indices of an LFQ quantizer (the release's layout: FlowMo-Lo's 256 tokens
    of 18 bits are 512 sub-tokens of 9 bits): the (N, T, G) group indices flattened token-major
    to (N, T * G) (token 0's groups first, in the quantizer's group order), the vocabulary
    ``group_codebook_size``.

A layout may hold a prefix: ``tokens`` below the tokenizer's T, the first k latent tokens of
each image (``layout_for(..., num_tokens=k)``; ordered tokens of a model trained with nested
dropout, decoded with the rest absent: ``FlowMo.decode(..., num_tokens=k)``).

A layout also carries the tokenizer's spec fingerprint (:meth:`flowmo.FlowMoSpec.fingerprint`),
so tokens are never decoded, nor a generator sampled, through a tokenizer other than the one
that made them: :meth:`TokenLayout.check_tokenizer` refuses with the reason.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Optional

import torch
from torch import Tensor

from flowmo.spec import no_tokens_error

__all__ = ["TokenLayout", "LAYOUT_KINDS", "MAX_VOCAB", "layout_for"]

LAYOUT_KINDS = ("token", "group")
MAX_VOCAB = 2**20  # the largest vocabulary a generator's embedding table and softmax are given


@dataclass(frozen=True)
class TokenLayout:
    """A token layout (see the module docstring).

    Attributes:
        kind: ``"token"`` or ``"group"``.
        tokens: latent tokens per image (>= 1): the tokenizer's T, or k < T for a prefix.
        groups: G, sequence elements per latent token: 1 for ``"token"``, the entropy groups
            for ``"group"``.
        vocab_size: the values one sequence element takes: [0, vocab_size).
        fingerprint: the tokenizer spec's fingerprint (hex string).
    """

    kind: Literal["token", "group"]
    tokens: int
    groups: int
    vocab_size: int
    fingerprint: str

    def __post_init__(self) -> None:
        if self.kind not in LAYOUT_KINDS:
            raise ValueError(f"layout kind must be one of {LAYOUT_KINDS}, got {self.kind!r}")
        for name, bound in (("tokens", ""), ("groups", ""), ("vocab_size", f" <= MAX_VOCAB = {MAX_VOCAB}")):
            v = getattr(self, name)
            if type(v) is not int or v < 1 or (bound and v > MAX_VOCAB):
                raise ValueError(f"layout {name} must be a positive integer{bound}, got {v!r}")
        if self.kind == "token" and self.groups != 1:
            raise ValueError(f"a 'token' layout has 1 group per token, got groups={self.groups}")
        if not isinstance(self.fingerprint, str) or not self.fingerprint:
            raise ValueError(f"layout fingerprint must be a non-empty string, got {self.fingerprint!r}")

    @property
    def seq_len(self) -> int:
        """L = tokens * groups, the length of one image's sequence."""
        return self.tokens * self.groups

    def prefix(self, num_tokens: int) -> "TokenLayout":
        """This layout over the first ``num_tokens`` latent tokens only (an int in [1, tokens]).

        Raises:
            ValueError: ``num_tokens`` out of range (TypeError: not an int).
        """
        if type(num_tokens) is not int:
            raise TypeError(f"num_tokens must be an int, got {type(num_tokens).__name__} {num_tokens!r}")
        if not 1 <= num_tokens <= self.tokens:
            raise ValueError(f"num_tokens must be in [1, {self.tokens}] (the layout's tokens), got {num_tokens}")
        return replace(self, tokens=num_tokens)

    # ------------------------------------------------------------------ conversions
    def to_sequence(self, indices: Tensor, name: str = "indices") -> Tensor:
        """Tokenizer indices -> generator sequences.

        Args:
            indices: integer tensor, (N, T) for ``"token"`` (what ``FlowMo.tokenize`` gives) or
                (N, T, G) for ``"group"`` (``FlowMo.tokenize(..., groups=True)``).
        Returns:
            int64 (N, L) with values in [0, vocab_size).
        Raises:
            TypeError / ValueError naming ``name``: not integer, wrong shape, values out of range.
        """
        shape = (self.tokens,) if self.kind == "token" else (self.tokens, self.groups)
        self._check(indices, name, shape)
        return indices.reshape(indices.shape[0], self.seq_len).to(torch.int64)

    def from_sequence(self, seq: Tensor, name: str = "seq") -> Tensor:
        """Generator sequences (N, L) -> tokenizer indices: (N, T) for ``"token"``, (N, T, G)
        for ``"group"``, int64, the inverse of :meth:`to_sequence`. Errors as there."""
        self._check(seq, name, (self.seq_len,))
        seq = seq.to(torch.int64)
        return seq if self.kind == "token" else seq.reshape(seq.shape[0], self.tokens, self.groups)

    def _check(self, x: Any, name: str, shape: tuple[int, ...]) -> None:
        if not isinstance(x, Tensor) or x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise TypeError(f"{name} must be an integer tensor (torch.Tensor), got {getattr(x, 'dtype', type(x))}")
        if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
            raise ValueError(f"{name} must have shape (N, {', '.join(map(str, shape))}), got {tuple(x.shape)}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
            raise ValueError(f"{name} values must lie in [0, {self.vocab_size}), got [{int(x.min())}, {int(x.max())}]")

    # ------------------------------------------------------------------ records
    def to_json(self) -> str:
        """The layout as a JSON object (sorted keys), as written into token files and generator
        folders."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TokenLayout":
        """Inverse of :meth:`to_json`; ValueError for anything else."""
        try:
            data = json.loads(text)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"a token layout must be a JSON object ({e})") from None
        fields = {"kind", "tokens", "groups", "vocab_size", "fingerprint"}
        if not isinstance(data, dict) or set(data) != fields:
            raise ValueError(f"a token layout must have exactly the fields {sorted(fields)}, got {data!r:.80}")
        return cls(**data)

    def check_tokenizer(self, tokenizer: Any, what: str = "these tokens") -> None:
        """Raise ValueError, with the reason, unless ``tokenizer`` (a FlowMo model or a
        FlowMoSpec) is the one this layout's tokens came from: the same spec fingerprint, and a
        quantizer giving this layout's shape and vocabulary (of at most its T tokens: a prefix)."""
        is_model = isinstance(tokenizer, torch.nn.Module)
        fp = (tokenizer.spec if is_model else tokenizer).fingerprint()
        if fp != self.fingerprint:
            raise ValueError(f"{what} were made by the tokenizer with spec fingerprint {self.fingerprint}, not by this "
                             f"one ({fp}): decoding them with it would give garbage; use the tokenizer that wrote them")
        expected = layout_for(tokenizer, self.kind) if is_model else None
        if expected is not None and self.tokens < expected.tokens:
            expected = expected.prefix(self.tokens)
        if expected is not None and expected != self:
            raise ValueError(f"{what} have layout {self.to_json()}, but this tokenizer gives {expected.to_json()}")


def layout_for(tokenizer: Any, kind: str = "auto", num_tokens: Optional[int] = None) -> TokenLayout:
    """The layout of a FlowMo tokenizer's tokens.

    Args:
        tokenizer: a :class:`flowmo.FlowMo` model.
        kind: ``"token"``, ``"group"`` or ``"auto"`` (``"token"`` when the codebook has at most
            :data:`MAX_VOCAB` entries, else ``"group"`` when the quantizer has entropy groups).
        num_tokens: the layout of the first k of the T tokens (an int in [1, T]; default all T).
    Raises:
        ValueError: a tokenizer whose bottleneck is continuous (``kl``, ``identity``: no tokens);
            unknown ``kind``; ``"token"`` with a codebook over MAX_VOCAB; ``"group"`` for a
            quantizer without entropy groups; ``"auto"`` when neither fits; ``num_tokens`` out
            of [1, T].
    """
    q = tokenizer.quantizer
    if not q.discrete:
        raise no_tokens_error(tokenizer.spec.quantizer.name, "a token layout", owner="the tokenizer's",
                              fix="generators model the tokens of a discrete tokenizer")
    if kind not in (*LAYOUT_KINDS, "auto"):
        raise ValueError(f"layout kind must be one of {(*LAYOUT_KINDS, 'auto')}, got {kind!r}")
    tokens = tokenizer.spec.code_length
    fp = tokenizer.spec.fingerprint()
    if kind == "auto":
        kind = "token" if q.codebook_size <= MAX_VOCAB else "group"
    if kind == "token":
        if q.codebook_size > MAX_VOCAB:
            raise ValueError(f"the 'token' layout needs a codebook of at most {MAX_VOCAB} entries, got {q.codebook_size}"
                             + ("; use the 'group' layout" if q.has_groups else ""))
        layout = TokenLayout("token", tokens, 1, int(q.codebook_size), fp)
    else:
        if not q.has_groups:
            raise ValueError(f"the 'group' layout needs a quantizer with entropy groups, got {type(q).__name__}")
        with torch.no_grad():
            probe = q.indices_to_codes(torch.zeros(1, 1, dtype=torch.int64))
            groups = int(q.codes_to_group_indices(probe).shape[-1])
        layout = TokenLayout("group", tokens, groups, int(q.group_codebook_size), fp)
    return layout if num_tokens is None else layout.prefix(num_tokens)
