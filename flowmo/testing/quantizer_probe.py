"""The quantizer under :func:`~flowmo.testing.check_quantizer`: built, its attributes checked
(property ``attributes``), and its interface called with every result validated (shapes, dtypes,
index ranges, round trips through the codebook; a continuous quantizer's missing indices; the
state a call may change), so that the properties state only what they check."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from .checker import _Checker, _mismatch, _seeded

if TYPE_CHECKING:
    from ..quantizers.base import QuantizerOutput


class _QuantizerProbe:
    """A quantizer under test: ``q`` (the instance), ``C`` (its channels: (B, T, C) values),
    ``E`` (its input channels: (B, T, E) inputs), ``cs`` (its codebook size; None for a
    continuous quantizer), ``discrete`` and ``stochastic`` (its declarations) and ``device`` (of
    its parameters/buffers; the CPU without any). Each method calls the quantizer and raises
    AssertionError naming what breaks the interface.

    ``make`` is a Quantizer or a zero-argument factory returning one. Raises TypeError for a
    ``make`` that is neither, ValueError for ``channels`` not a positive int, and AssertionError
    for an object that is not a :class:`flowmo.quantizers.Quantizer` or (through ``ck``,
    property ``attributes``) has invalid attributes (``updated_state`` included: a tuple of
    names of persistent buffers, which the state dict saves).

    State: the probe keeps the quantizer's parameters and buffers as they were built (the
    baseline). Every call through :meth:`call` (and so :meth:`quantize`) starts from the baseline
    (a stateful quantizer's earlier training-mode calls are undone first, so that every property
    sees the same state), and fails when the call changed a parameter or buffer it may not: an
    eval-mode call or ``quantize`` none, a training-mode ``forward`` only the declared
    ``updated_state``. :meth:`restore` puts the baseline back; :meth:`fresh` builds another
    instance as the quantizer was built (``make()`` again, or a copy taken before any call).
    """

    def __init__(self, ck: _Checker, make: Any, channels: int):
        from ..quantizers.base import Quantizer, QuantizerOutput

        self.output_type = QuantizerOutput
        if isinstance(make, torch.nn.Module):
            q = make
        elif callable(make):
            q = make()
        else:
            raise TypeError(f"make must be a Quantizer or a zero-argument factory returning one, got "
                            f"{type(make).__name__}")
        if not isinstance(q, Quantizer):
            raise AssertionError(f"check_quantizer: expected a flowmo.quantizers.Quantizer, got {type(q).__name__}")
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        for flag, value in (("discrete", q.discrete), ("stochastic", q.stochastic), ("has_groups", q.has_groups)):
            if not isinstance(value, bool):
                ck.fail("attributes", f"{flag} must be a bool, got {value!r}")
        try:
            q_channels, cs = q.channels, q.codebook_size
        except AttributeError as e:  # the interface's required attributes
            ck.fail("attributes", f"the quantizer must set channels (and codebook_size, if discrete) in its "
                                  f"constructor ({e})")
        if q_channels != channels:
            ck.fail("attributes", f"quantizer.channels is {q_channels} but channels={channels} was given")
        e = q.input_channels
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            ck.fail("attributes", f"input_channels must be a positive python int, got {e!r}")
        if q.discrete:
            self._check_codebook(ck, q, cs)
        else:
            self._check_continuous(ck, q, cs)
        self.q, self.C, self.E, self.cs = q, channels, e, cs
        self.discrete, self.stochastic = q.discrete, q.stochastic
        self.device = next((t.device for t in list(q.parameters()) + list(q.buffers())), torch.device("cpu"))
        drawn = q.draw_noise(1, 1, generator=_seeded(0), device=self.device)
        if (drawn is None) == q.stochastic:
            ck.fail("attributes", f"stochastic is {q.stochastic} but draw_noise returns "
                                  f"{'None' if drawn is None else 'draws'}: a stochastic quantizer (and only one) "
                                  "returns the draws of its training-mode forward")
        declared = q.updated_state
        buffers = dict(q.named_buffers())
        saved = set(q.state_dict())
        if not isinstance(declared, tuple) or not all(isinstance(n, str) for n in declared):
            ck.fail("attributes", f"updated_state must be a tuple of state_dict keys, got {declared!r}")
        for n in declared:
            if n not in buffers or n not in saved:
                ck.fail("attributes", f"updated_state names {n!r}, which is not a persistent buffer of the quantizer "
                                      "(register the state with register_buffer(name, tensor), persistent, so that "
                                      "model folders and checkpoints save it)")
        self._make = make if not isinstance(make, torch.nn.Module) else None
        self._pristine = copy.deepcopy(q) if self._make is None else None
        self.baseline = self.snapshot()

    @staticmethod
    def _check_codebook(ck: _Checker, q: Any, cs: Any) -> None:
        """A discrete quantizer's codebook size and bits per token (property ``attributes``)."""
        if isinstance(cs, bool) or not isinstance(cs, int) or cs < 1:
            ck.fail("attributes", f"codebook_size must be a positive python int, got {cs!r}")
        if cs > 2**63:
            ck.fail("attributes", f"codebook_size {cs} does not fit in int64 indices")
        bits = q.bits_per_token
        if (isinstance(bits, bool) or not isinstance(bits, (int, float)) or not math.isfinite(bits) or bits < 0
                or bits > math.log2(cs) + 1e-9 or (bits == 0 and cs > 1)):
            ck.fail("attributes", f"bits_per_token must be a number in (0, log2(codebook_size) = "
                                  f"{math.log2(cs):g}], got {bits!r}")

    @staticmethod
    def _check_continuous(ck: _Checker, q: Any, cs: Any) -> None:
        """A continuous quantizer has no codebook, bits per token or entropy groups (property
        ``attributes``)."""
        if cs is not None:
            ck.fail("attributes", f"a continuous quantizer (discrete False) has no codebook: codebook_size must be "
                                  f"None, got {cs!r}")
        if q.bits_per_token is not None:
            ck.fail("attributes", f"a continuous quantizer's bits_per_token must be None, got {q.bits_per_token!r}")
        if q.has_groups:
            ck.fail("attributes", "a continuous quantizer has no entropy groups: has_groups must be False")

    # -- state
    def tensors(self) -> dict[str, Tensor]:
        """Every parameter and buffer of the quantizer (persistent or not), by name."""
        return {**dict(self.q.named_parameters()), **dict(self.q.named_buffers())}

    def snapshot(self) -> dict[str, Tensor]:
        return {n: t.detach().clone() for n, t in self.tensors().items()}

    def changed(self, before: dict[str, Tensor]) -> list[str]:
        """The names of the parameters and buffers that differ (bitwise) from ``before``."""
        now = self.tensors()
        return [n for n in sorted(set(before) | set(now))
                if n not in before or n not in now or before[n].dtype != now[n].dtype
                or before[n].shape != now[n].shape or not torch.equal(before[n], now[n].detach())]

    def restore(self) -> None:
        """Put the baseline's values back (in place, without gradient) where they changed."""
        now = self.tensors()
        with torch.no_grad():
            for n in self.changed(self.baseline):
                if n in now and now[n].shape == self.baseline[n].shape:
                    now[n].copy_(self.baseline[n])

    def fresh(self) -> Any:
        """Another instance, built as the quantizer under test was."""
        return self._make() if self._make is not None else copy.deepcopy(self._pristine)

    def call(self, fn: Callable[..., Any], *args: Any, what: str, forward: bool, restore: bool = True) -> Any:
        """``fn(*args)`` (``forward``: it is the quantizer's forward, which may update the declared
        state in training mode), from the baseline state (``restore``) and with the state it may
        change checked. The result is returned as it is."""
        if restore:
            self.restore()
        before = self.snapshot() if not restore else self.baseline
        out = fn(*args)
        changed = self.changed(before)
        mode = "training" if self.q.training else "eval"
        allowed = set(self.q.updated_state) if forward and self.q.training else set()
        bad = [n for n in changed if n not in allowed]
        if bad:
            if not forward:
                why = ("quantize never updates state (it serves tokenize and reconstruct): override quantize to give "
                       "forward's outputs without the update")
            elif not self.q.training:
                why = "an eval-mode call must change no parameter or buffer"
            else:
                why = (f"a training-mode forward may change only the state the quantizer declares in updated_state "
                       f"({list(self.q.updated_state)}): declare it there (persistent buffers)")
            raise AssertionError(f"{what} ({mode} mode) changed {bad}: {why}")
        return out

    def noise(self, b: int, t: int, seed: int) -> Any:
        """A stochastic quantizer's draws for (b, t) tokens from a generator seeded with ``seed``
        (None for a deterministic one)."""
        return self.q.draw_noise(b, t, generator=_seeded(seed), device=self.device) if self.stochastic else None

    def quantize(self, z: Tensor, what: str = "forward", *, seed: Any = 0) -> QuantizerOutput:
        """``forward(z)``; a stochastic quantizer in training mode gets ``noise=`` drawn from a
        generator seeded with ``seed`` (so that the properties' calls are reproducible), or
        none with ``seed=None`` (it then draws its own)."""
        if self.stochastic and self.q.training and seed is not None and z.ndim == 3:
            noise = self.noise(z.shape[0], z.shape[1], seed)
            out = self.call(lambda x: self.q(x, noise=noise), z, what=what, forward=True)
        else:
            out = self.call(self.q, z, what=what, forward=True)
        if not isinstance(out, self.output_type):
            raise AssertionError(f"{what} returned {type(out).__name__}, not a QuantizerOutput")
        return out

    def codewords(self, idx: Tensor) -> Tensor:
        codes = self.call(self.q.indices_to_codes, idx, what="indices_to_codes", forward=False)
        if not isinstance(codes, Tensor) or not codes.is_floating_point():
            raise AssertionError(f"indices_to_codes must return a floating-point tensor, got {codes!r:.80}")
        if tuple(codes.shape) != tuple(idx.shape) + (self.C,):
            raise AssertionError(f"indices_to_codes: shape {tuple(codes.shape)} for indices of shape "
                                 f"{tuple(idx.shape)}; expected {tuple(idx.shape) + (self.C,)}")
        return codes

    def to_indices(self, codes: Tensor) -> Tensor:
        idx = self.call(self.q.codes_to_indices, codes, what="codes_to_indices", forward=False)
        if not isinstance(idx, Tensor) or idx.dtype != torch.int64:
            raise AssertionError(f"codes_to_indices must return an int64 tensor, got "
                                 f"{getattr(idx, 'dtype', type(idx).__name__)}")
        if tuple(idx.shape) != tuple(codes.shape[:-1]):
            raise AssertionError(f"codes_to_indices: shape {tuple(idx.shape)} for codes of shape "
                                 f"{tuple(codes.shape)}; expected {tuple(codes.shape[:-1])}")
        return idx

    def check_output(self, out: QuantizerOutput, z: Tensor) -> None:
        """Values (B, T, C) in z's dtype, finite; indices (B, T) int64 in [0, codebook_size), or
        None for a continuous quantizer."""
        b, t = z.shape[:2]
        v, i = out.values, out.indices
        C, cs = self.C, self.cs
        if not isinstance(v, Tensor) or tuple(v.shape) != (b, t, C):
            raise AssertionError(f"values shape {tuple(getattr(v, 'shape', ()))}, expected {(b, t, C)}")
        if v.dtype != z.dtype:
            raise AssertionError(f"values dtype {v.dtype} differs from the input's {z.dtype}")
        if not torch.isfinite(v).all():
            raise AssertionError("values are not all finite")
        if not self.discrete:
            if i is not None:
                raise AssertionError(f"a continuous quantizer (discrete False) has no tokens: indices must be None, "
                                     f"got {type(i).__name__}")
            return
        if not isinstance(i, Tensor) or tuple(i.shape) != (b, t):
            raise AssertionError(f"indices shape {tuple(getattr(i, 'shape', ()))}, expected {(b, t)}")
        if i.dtype != torch.int64:
            raise AssertionError(f"indices dtype {i.dtype}, expected torch.int64")
        if i.numel() and (int(i.min()) < 0 or int(i.max()) >= cs):
            raise AssertionError(f"indices in [{int(i.min())}, {int(i.max())}], outside [0, {cs})")

    @staticmethod
    def check_terms(terms: Any, what: str) -> None:
        """``terms`` (``what``: e.g. "losses (train mode)") is a dict of named, finite, scalar
        floating tensors; the message names the term: ``<what>: the term 'commitment' must ...``."""
        if not isinstance(terms, dict):
            raise AssertionError(f"{what} must be a dict, got {type(terms).__name__}")
        for k, v in terms.items():
            if not isinstance(k, str) or not k:
                raise AssertionError(f"{what}: term names must be non-empty strings, got {k!r}")
            if not isinstance(v, Tensor) or v.ndim != 0:
                raise AssertionError(f"{what}: the term {k!r} must be a scalar tensor, got "
                                     f"{tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__}")
            if not v.is_floating_point() or not torch.isfinite(v):
                raise AssertionError(f"{what}: the term {k!r} must be a finite float, got {v!r}")

    def check_roundtrip(self, out: QuantizerOutput) -> None:
        """The output's values and indices round-trip through the codebook."""
        v = out.values.detach()
        idx = self.to_indices(v)
        if not torch.equal(idx, out.indices):
            raise AssertionError(f"codes_to_indices(values) != indices: {_mismatch(idx, out.indices)}")
        codes = self.codewords(out.indices)
        if not torch.equal(codes.float(), v.float()):
            raise AssertionError(f"indices_to_codes(indices) != values: {_mismatch(codes.float(), v.float())}")

    def check_codes(self, out: QuantizerOutput, z: Tensor, what: str) -> None:
        """Valid output whose values and indices round-trip through the codebook (a continuous
        quantizer: valid output)."""
        try:
            self.check_output(out, z)
            if self.discrete:
                self.check_roundtrip(out)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
