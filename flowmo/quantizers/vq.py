"""Vector quantization with a learned codebook (VQ-VAE: van den Oord, Vinyals & Kavukcuoglu,
"Neural Discrete Representation Learning", NeurIPS 2017; the l2-normalised codes of LlamaGen:
Sun et al., "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation", 2024),
with the optional EMA codebook updates of the VQ-VAE paper's appendix and dead-code replacement."""

from __future__ import annotations

from typing import Literal

import torch
import torch.distributed as dist
from pydantic import Field, model_validator
from torch import Tensor, nn

from ..devices import ValueChecks
from ..registry import QUANTIZERS
from ..spec import LossTerm, QuantizerSpec, SpecBool, SpecFloat, SpecInt
from .base import Quantizer, QuantizerOutput
from .common import LOSS_CLAMP, unit_sphere

__all__ = ["VQ", "VQSpec", "draw_indices"]

MAX_CODEBOOK = 2**20
"""The largest ``codebook_size``: the nearest-code search scores tokens x codes (a batch of 64
images of 256 tokens against 2^20 codes is 16 G scores)."""


class VQSpec(QuantizerSpec):
    """A learned codebook of ``codebook_size`` codes (see :class:`VQ`)."""

    name: Literal["vq"] = "vq"
    codebook_size: SpecInt = Field(1024, ge=2, le=MAX_CODEBOOK, description=f"K, the codes (2 .. {MAX_CODEBOOK})")
    l2_normalize: SpecBool = Field(False, description="codes and inputs on the unit sphere, nearest by cosine "
                                                      "(LlamaGen's variant)")
    beta: SpecFloat = Field(0.25, ge=0, description="weight of the commitment loss mean((z - sg(e))^2)")
    codebook_weight: SpecFloat = Field(1.0, ge=0, description="weight of the codebook loss mean((sg(z) - e)^2) "
                                                              "(ema false; > 0 there, or the codebook never trains)")
    ema: SpecBool = Field(False, description="update the codebook by exponential moving averages in training-mode "
                                             "forward instead of the codebook loss")
    decay: SpecFloat = Field(0.99, ge=0, lt=1, description="the EMA's decay per training-mode call (ema true)")
    epsilon: SpecFloat = Field(1e-5, gt=0, le=1, description="Laplace smoothing of the EMA cluster sizes (ema true)")
    dead_code_threshold: SpecFloat = Field(
        0.0, ge=0, description="codes whose EMA usage (tokens per call, all ranks) falls below this are replaced by "
                               "inputs of the batch (ema true; 0: never)")

    @model_validator(mode="after")
    def _check(self) -> "VQSpec":
        if not self.ema and self.dead_code_threshold > 0:
            raise ValueError(f"dead_code_threshold ({self.dead_code_threshold:g}) needs ema: true (dead codes are "
                             "replaced in the EMA statistics): set quantizer.ema to true or dead_code_threshold to 0")
        fields = type(self).model_fields
        ignored = ["codebook_weight"] if self.ema else ["decay", "epsilon"]
        for name in ignored:  # a non-default value of a setting the mode ignores: surely a mistake
            if getattr(self, name) != fields[name].default:
                raise ValueError(f"{name} ({getattr(self, name):g}) applies only with ema: {str(not self.ema).lower()}; "
                                 f"leave it out or set quantizer.ema to {str(not self.ema).lower()}")
        if not self.ema and self.codebook_weight == 0:
            raise ValueError("codebook_weight must be > 0 with ema: false (the codebook loss is what trains the "
                             "codebook): give it a weight (e.g. 1.0) or set quantizer.ema to true")
        return self

    def check_channels(self, channels: int) -> None:
        if self.l2_normalize and channels < 2:
            raise ValueError(f"code_channels ({channels}) must be >= 2 with l2_normalize: one channel normalised is "
                             "its sign, which passes no gradient to the encoder")

    def loss_terms(self) -> list[LossTerm]:
        terms = [LossTerm("commitment", self.beta, "mean((z - sg(e))^2), e the nearest code (VQ-VAE's commitment "
                                                   "loss; z and e on the unit sphere with l2_normalize)")]
        if not self.ema:
            terms.append(LossTerm("codebook", self.codebook_weight, "mean((sg(z) - e)^2) (VQ-VAE's codebook loss)"))
        return terms


_MIX = 0x45D9F3B
_LOW32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """An integer hash: a bijection of [0, 2^32) (int64 tensors) that mixes every input bit into
    every output bit (two rounds of xorshift-multiply; the products stay below 2^59, so int64
    arithmetic never overflows)."""
    x = (((x >> 16) ^ x) * _MIX) & _LOW32
    x = (((x >> 16) ^ x) * _MIX) & _LOW32
    return (x >> 16) ^ x


def draw_indices(state: Tensor, k: int, n: int) -> Tensor:
    """``k`` pseudo-random indices in [0, n), one per code, from a counter-based draw.

    Args:
        state: (2,) int64 tensor (key, counter), on the device of the result; its low 32 bits are used.
        k: how many indices (>= 0).
        n: the range (>= 1).

    Returns:
        (k,) int64 on ``state``'s device: index i is hash(hash(hash(key) ^ counter) ^ i) mod n,
        with the 32-bit integer hash :func:`_mix32` (the modulo's bias is below n / 2^32). A pure
        function of its arguments, computed on the device with integer arithmetic: no host sync,
        the same bits on every device kind and every rank, traceable by ``torch.compile``.
    """
    base = _mix32(_mix32(state[0] & _LOW32) ^ (state[1] & _LOW32))
    return _mix32(base ^ torch.arange(k, device=state.device)) % n


def _world_size() -> int:
    """The default process group's size (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@QUANTIZERS.register("vq", spec=VQSpec)
class VQ(Quantizer):
    """Nearest-code vector quantization: each token z (C channels) becomes the code e_k of a
    learned codebook (K, C) nearest to it, with straight-through gradients.

    Search: k = argmin_k ||x - e_k||^2, x = z (clamped to [-1e4, 1e4], see
    :data:`~flowmo.quantizers.common.LOSS_CLAMP`) or, with ``l2_normalize``, x = z / ||z|| and
    the codes l2-normalised too, so the nearest code is the one of largest cosine (LlamaGen's
    variant). Distances are computed in float32 outside autocast; ties go to the lowest index.
    ``values`` (B, T, C) in z's dtype are e_k (normalised with ``l2_normalize``) with the
    gradient of x (e_k + x - sg(x)); ``indices`` (B, T) int64 are k in [0, K).
    ``codes_to_indices`` is the same search (a codeword maps to its own index while the
    codebook's rows are distinct; a duplicated row maps to its lowest index).

    Losses (VQ-VAE, Eq. 3; the same in train and eval mode), means over every channel of every token:

    - ``commitment``: beta * mean((x - sg(e))^2) (beta = 0.25 as in the paper);
    - ``codebook``: codebook_weight * mean((sg(x) - e)^2), trains the codebook (a parameter),
      only with ``ema`` false.

    Both are 0 for a batch without tokens. ``stats``: the unweighted terms and ``perplexity``,
    exp(entropy) of the batch's code usage (1 .. K).

    EMA codebook (``ema`` true; VQ-VAE, Appendix A.1): the codebook is a buffer (no gradient, not
    trained by the optimizer) and every training-mode ``forward`` with tokens updates it, under
    no_grad, after computing its outputs from the codebook as the call started. With n_k the tokens
    assigned to code k and s_k their sum (of x), over all ranks (all_reduce when
    ``torch.distributed`` is initialised with more than one process)::

        N_k <- decay N_k + (1 - decay) n_k          (cluster_size)
        m_k <- decay m_k + (1 - decay) s_k          (embed_sum)
        e_k <- m_k / ((N_k + eps) / (sum_j N_j + K eps) * sum_j N_j)   (Laplace-smoothed counts)

    A call with a non-finite input (any rank's), or whose update would overflow the state's dtype
    (float16's 65504: keep an EMA codebook in float32 or bfloat16), leaves the EMA state as it was
    (a ``torch.where``, no host sync).

    Dead codes (``dead_code_threshold`` t > 0): after the update, every code with N_k < t (its
    EMA usage in tokens per call, summed over ranks) is replaced by an input of the batch:
    e_k <- x_j, m_k <- t x_j, N_k <- t, with j = :func:`draw_indices` (draws, k) of the local
    batch's flattened tokens; all codes are replaced at once with ``torch.where`` over the codebook,
    without a host sync. The draw is counter-based, not a ``torch.Generator``: ``forward`` takes no
    generator (the interface's signature), and a generator's state is neither module state (it
    would not be saved with the weights, and a resumed run would draw differently) nor traceable by
    ``torch.compile``. Its randomness is the buffer ``draws`` = (key, counter): the key is drawn from
    torch's global generator when the module is built (the trainer seeds that from
    ``train.seed``), the counter counts the updates; so a resumed run repeats the draws bitwise. With
    several ranks, the replacements are rank 0's (its inputs, broadcast), so every rank holds the
    same codebook. The per-code sums are ``index_add_``: deterministic on the CPU; on CUDA atomic
    adds, whose order (and so the last bit of a sum) varies from run to run unless
    ``torch.use_deterministic_algorithms(True)`` (the ranks still agree: they share the all-reduced sums).

    State: the ``codebook`` ((K, C) float32; a parameter without ``ema``, a buffer with it) and,
    with ``ema``, the buffers ``cluster_size`` (K,), ``embed_sum`` (K, C) and ``draws`` (2,) int64:
    the declared ``updated_state``, saved in model folders and checkpoints. The trainer's EMA of
    the weights averages parameters only: an EMA codebook (already an average) is taken as it is
    from the trained model, never averaged again; a codebook trained by its loss (``ema`` false)
    is averaged like every weight.

    Initialisation: the codes are drawn from N(0, 1) per channel (the scale of an O(1) encoder
    output; normalised with ``l2_normalize``) from torch's global generator, like every weight of
    the model; the EMA statistics start at N_k = 1 and m_k = e_k, so that e_k = m_k / N_k holds
    from the start and an unused code stays where it is (up to the smoothing) while its usage decays.

    Forward is deterministic for a given z and state; a training-mode forward with ``ema`` then
    updates the state (``quantize`` never does). Every rank must call a training-mode forward the
    same number of times with tokens (the all_reduce is collective), as DDP's forward is.

    Capabilities: ``bits_per_token`` log2(K); no entropy groups.
    """

    def __init__(self, spec: VQSpec, *, channels: int):
        spec.check_channels(channels)
        super().__init__()
        self.spec = spec
        self.channels = channels
        self.codebook_size = spec.codebook_size
        init = torch.randn(spec.codebook_size, channels)
        if spec.l2_normalize:
            init = unit_sphere(init)
        self.codebook: Tensor
        if spec.ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(spec.codebook_size))
            self.register_buffer("embed_sum", init.clone())
            key = torch.randint(0, 2**31, (), dtype=torch.int64)
            self.register_buffer("draws", torch.stack([key, torch.zeros((), dtype=torch.int64)]))
            self.updated_state = ("codebook", "cluster_size", "embed_sum", "draws")
        else:
            self.codebook = nn.Parameter(init)

    def extra_repr(self) -> str:
        s = self.spec
        return (f"codebook_size={self.codebook_size}, channels={self.channels}, l2_normalize={s.l2_normalize}, "
                f"ema={s.ema}")

    # -- the search
    def _table(self) -> Tensor:
        """The codes as the search sees them: (K, C) float32 (normalised with ``l2_normalize``),
        with the codebook parameter's gradient (``ema`` false)."""
        e = self.codebook.float()
        return unit_sphere(e) if self.spec.l2_normalize else e

    def _point(self, z: Tensor) -> Tensor:
        """The point quantized, float32 with z's gradient: z, or z / ||z||."""
        return unit_sphere(z) if self.spec.l2_normalize else z.float()

    @staticmethod
    def _nearest(x: Tensor, table: Tensor) -> Tensor:
        """(..., C) finite float32 points -> (...) int64 index of the nearest row of ``table``
        (squared euclidean distance; ||x||^2 is left out, it is the same for every code)."""
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            t = table.detach()
            flat = x.clamp(-LOSS_CLAMP, LOSS_CLAMP).reshape(-1, t.shape[1])  # finite scores for any finite input
            # a contiguous (C, K) operand: on the CPU a matmul with the transposed view can be ~1000x slower
            scores = (t * t).sum(-1) - 2.0 * torch.mm(flat, t.t().contiguous())
            return scores.argmin(-1).reshape(x.shape[:-1])

    def _assign(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(x, table, indices, e): the point, the codes, the nearest codes' indices and the codes
        themselves ((..., C) float32, with the codebook's gradient)."""
        x = self._point(z)
        table = self._table()
        indices = self._nearest(x, table)
        return x, table, indices, table[indices]

    @staticmethod
    def _values(e: Tensor, x: Tensor, dtype: torch.dtype) -> Tensor:
        """e in value (exactly), the gradient of x (straight through), in ``dtype``."""
        return e.detach().to(dtype) + (x - x.detach()).to(dtype)

    # -- forward
    def quantize(self, z: Tensor) -> QuantizerOutput:
        """The values and indices of :meth:`forward`, without its losses and statistics, and
        without updating the EMA state in either mode."""
        self._check_code(z)
        x, _, indices, e = self._assign(z)
        return QuantizerOutput(self._values(e, x, z.dtype), indices)

    def forward(self, z: Tensor) -> QuantizerOutput:
        self._check_code(z)
        x, _, indices, e = self._assign(z)
        values = self._values(e, x, z.dtype)
        xc = x.clamp(-LOSS_CLAMP, LOSS_CLAMP)  # finite squared errors for any finite z
        count = max(xc.numel(), 1)  # a batch without tokens: sums of nothing are 0
        commit = (xc - e.detach()).pow(2).sum() / count
        losses = {"commitment": self.spec.beta * commit}
        stats = {"commitment": commit.detach()}
        if not self.spec.ema:
            codebook = (xc.detach() - e).pow(2).sum() / count
            losses["codebook"] = self.spec.codebook_weight * codebook
            stats["codebook"] = codebook.detach()
        flat = indices.reshape(-1)
        usage = torch.zeros(self.codebook_size, device=flat.device).index_add_(
            0, flat, torch.ones(flat.shape, device=flat.device))
        p = usage / usage.sum().clamp_min(1.0)
        stats["perplexity"] = torch.exp(-(p * torch.log(p.clamp_min(1e-30))).sum())
        if self.training and self.spec.ema and flat.numel():
            self._ema_update(xc.detach().reshape(-1, self.channels), flat, usage, torch.isfinite(x).all())
        return QuantizerOutput(values, indices, losses, stats)

    @torch.no_grad()
    def _ema_update(self, x: Tensor, indices: Tensor, counts: Tensor, finite: Tensor) -> None:
        """One EMA step (see the class docstring) from the batch's points x (N, C) float32, their
        codes' indices (N,), the codes' usage counts (K,) on this rank and whether this rank's
        input was finite (a bool scalar: else no rank updates)."""
        k, s = self.codebook_size, self.spec
        sums = torch.zeros(k, self.channels, device=x.device).index_add_(0, indices, x)
        counts = torch.cat([counts, (~finite).float()[None]])  # the last entry: ranks with a non-finite input
        world = _world_size()
        if world > 1:
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        finite, counts = counts[-1] == 0, counts[:-1]
        size = self.cluster_size.float() * s.decay + counts * (1 - s.decay)
        embed_sum = self.embed_sum.float() * s.decay + sums * (1 - s.decay)
        total = size.sum()
        smoothed = (size + s.epsilon) / (total + k * s.epsilon) * total
        codebook = embed_sum / smoothed[:, None]
        if s.dead_code_threshold > 0:
            t = s.dead_code_threshold
            dead = size < t
            candidates = x[draw_indices(self.draws, k, x.shape[0])]
            if world > 1:
                dist.broadcast(candidates, src=0)
            codebook = torch.where(dead[:, None], candidates, codebook)
            embed_sum = torch.where(dead[:, None], candidates * t, embed_sum)
            size = torch.where(dead, torch.full_like(size, t), size)
        size, embed_sum = size.to(self.cluster_size.dtype), embed_sum.to(self.embed_sum.dtype)
        codebook = codebook.to(self.codebook.dtype)  # in float16 an update may overflow: then it is skipped too
        finite = finite & torch.isfinite(size).all() & torch.isfinite(embed_sum).all() & torch.isfinite(codebook).all()
        self.cluster_size.copy_(torch.where(finite, size, self.cluster_size))
        self.embed_sum.copy_(torch.where(finite, embed_sum, self.embed_sum))
        self.codebook.copy_(torch.where(finite, codebook, self.codebook))
        self.draws[1] += 1

    # -- codes <-> indices
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """(..., C) codes -> (...) int64 index of the nearest code (the search of ``forward``)."""
        self._check_code(codes, "codes", values=True)
        return self._nearest(self._point(codes), self._table())

    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """(...) integer indices in [0, K) -> (..., C) float32 codes (normalised with
        ``l2_normalize``), without gradient."""
        self._check_indices(indices)
        return self._lookup(indices)

    def indices_to_codes_deferred(self, indices: Tensor, checks: ValueChecks, name: str = "indices") -> Tensor:
        """:meth:`indices_to_codes` with the range check added to ``checks``: the lookup reads
        each index clamped into [0, K), so that it cannot fail before the check is read."""
        self._check_indices(indices, name, checks=checks)
        return self._lookup(indices.long().clamp(0, self.codebook_size - 1))

    def _lookup(self, indices: Tensor) -> Tensor:
        with torch.no_grad():
            return self._table()[indices.long()]
