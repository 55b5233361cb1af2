"""The one result type and the interface every quantizer implements."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Optional

import torch
from torch import Tensor, nn

from ..devices import ValueChecks

if TYPE_CHECKING:
    from ..spec import LossTerm

__all__ = ["QuantizerOutput", "Quantizer", "check_constructed"]


@dataclass
class QuantizerOutput:
    """What every quantizer returns.

    values:  quantized code (B, T, C), same dtype as the input, straight-through gradients.
    indices: one int64 index per token (B, T).
    losses:  named, already-weighted loss terms, the same in train and eval mode; they sum to ``loss``.
    stats:   named diagnostics (unweighted terms etc.), detached.
    """

    values: Tensor
    indices: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        if not self.losses:
            return self.values.new_zeros((), dtype=torch.float32)
        return torch.stack([v.float() for v in self.losses.values()]).sum()


class Quantizer(nn.Module, ABC):
    """The interface of every quantizer: a continuous code (B, T, C) -> a discrete one.

    Registered with :data:`flowmo.QUANTIZERS`; the model builds it as
    ``QUANTIZERS.build(spec.quantizer, channels=spec.code_channels)`` (``channels`` is the
    wiring argument: every quantizer's constructor takes it). A subclass's constructor calls
    ``super().__init__()`` (no arguments; this is an ``nn.Module``) before setting anything.

    Attributes a subclass sets in its constructor (``QUANTIZERS.build`` refuses a quantizer
    without them, naming the attribute: :func:`check_constructed`):
        channels (int): C, the channels of one token (the ``channels`` argument).
        codebook_size (int): the vocabulary of one token: indices lie in [0, codebook_size),
            a python int of at most 2**63.

    Declarations about the configuration, classmethods taking the component's spec (for a
    class registered with one decorator line, the spec derived from its constructor: its
    fields are the keyword arguments, e.g. ``spec.commit_weight``); the spec asks them (an
    explicit spec class may override its own ``loss_terms`` / ``check_channels`` instead):
        loss_terms(spec): the loss terms (the keys of ``QuantizerOutput.losses``,
            without the ``quantizer/`` prefix), a list of :class:`flowmo.LossTerm`; default
            ``[]``, right for a quantizer without auxiliary losses.
            :meth:`flowmo.FlowMoSpec.loss_terms` uses it and
            :func:`flowmo.testing.check_component` checks it against what ``forward`` returns.
        check_channels(spec, channels): raise ValueError when the quantizer cannot take
            ``channels`` channels per token (validated with the spec's ``code_channels``);
            default: any count.

    Optional capabilities, declared here with defaults that hold for any quantizer (override
    them where a quantizer knows better; nothing probes for them by name):
        bits_per_token: log2(codebook_size) (the information of one token if every codeword
            can occur). :attr:`flowmo.FlowMoSpec.bits_per_pixel` and ``flowmo eval`` use it.
        has_groups: False. A quantizer with entropy groups (LFQ) sets it, sets
            ``group_codebook_size`` (the vocabulary of one group; 0 without groups) and
            implements :meth:`codes_to_group_indices` / :meth:`group_indices_to_codes`, which
            otherwise raise ValueError.
        check_indices: raises TypeError / ValueError unless the indices are an integer tensor
            with values in [0, codebook_size).
        indices_to_codes_deferred / codes_to_group_indices_deferred: the conversions for a
            caller that reads its value checks once, later (FlowMo's ``detokenize``,
            ``tokens_to_code`` and ``tokenize(groups=True)``: one host sync per call); default:
            checked at once. A quantizer whose conversion is arithmetic on any input (LFQ, FSQ)
            adds its value checks to the caller's :class:`flowmo.devices.ValueChecks` instead.
        forward_idempotent: True: ``forward`` maps a codeword to itself (quantizing the values
            again changes nothing). A quantizer whose forward first bounds its input by a map
            that is not the identity on the codewords (FSQ's tanh) sets it to False; the
            conformance kit then checks idempotence through the codebook only.
        updated_state: (): the names (keys of the quantizer's own ``state_dict``: persistent
            buffers) of the state a training-mode ``forward`` updates in place, without
            gradients (an EMA codebook and its statistics: VQ with ``ema=True``); empty for a
            quantizer whose forward changes no state. A quantizer that declares state computes
            its outputs from the state as the call starts and updates it afterwards, only in
            training mode and never in :meth:`quantize`; the state is saved with the weights
            (model folders, checkpoints) and is not averaged by the trainer's EMA of the weights
            (which averages parameters only). FlowMo's Stage 1B loss calls the quantizer in eval
            mode (the quantizer is frozen there), and the trainer puts the state back after a
            step it skips (a non-finite loss). The conformance kit checks that eval-mode calls
            change no parameter or buffer, that training-mode ones change only the declared
            state, and that the state round-trips through safetensors bitwise.

    Check a new quantizer with :func:`flowmo.testing.check_quantizer`.
    """

    channels: int
    codebook_size: int
    has_groups: ClassVar[bool] = False
    group_codebook_size: int = 0
    forward_idempotent: ClassVar[bool] = True
    updated_state: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize a continuous code.

        Args:
            z: (B, T, C) floating tensor (any floating dtype), finite, any range.

        Returns:
            QuantizerOutput: ``values`` (B, T, C) in z's dtype, each token a codeword, with
            straight-through gradients to z; ``indices`` (B, T) int64 in [0, codebook_size),
            the index of each token's codeword (``codes_to_indices(values)``); ``losses``:
            named, already-weighted scalar terms; ``stats``: named detached diagnostics. The
            same z gives the same result (deterministic), in train and eval mode alike: a loss
            term that read ``self.training`` would silently vanish from a fine-tuning loop that
            forgot ``.train()`` (a loaded model is in eval mode). For a quantizer that declares
            ``updated_state``: the same z and the same state give the same result; a
            training-mode call then updates the state (after computing its result).
        """

    @abstractmethod
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codewords -> token indices.

        Args:
            codes: (..., C) floating tensor of codewords (finite).

        Returns:
            (...) int64 tensor of indices in [0, codebook_size).
        """

    @abstractmethod
    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Token indices -> codewords, the inverse of :meth:`codes_to_indices`.

        Args:
            indices: (...) integer tensor, values in [0, codebook_size).

        Returns:
            (..., C) floating tensor (float32) of codewords.
        """

    # -- declarations about the configuration (classmethods: no instance needed)
    @classmethod
    def loss_terms(cls, spec: Any) -> list["LossTerm"]:
        """The loss terms this quantizer returns (in either mode), for its spec.

        Args:
            spec: the quantizer's spec (its configuration as attributes).

        Returns:
            A list of ``flowmo.LossTerm(name, weight, what)``: each key of
            ``QuantizerOutput.losses``, the weight already applied to it, and what it is in
            words. Default: ``[]`` (no auxiliary loss); override when ``forward`` returns losses.
        """
        return []

    @classmethod
    def check_channels(cls, spec: Any, channels: int) -> None:
        """Raise ValueError (saying what to change) if this quantizer, configured by ``spec``,
        cannot quantize ``channels`` channels per token. Default: any count is fine."""

    # -- optional capabilities
    def quantize(self, z: Tensor) -> QuantizerOutput:
        """Quantize for inference: ``values`` and ``indices`` exactly as :meth:`forward` gives
        them for ``z``; ``losses`` and ``stats`` may be empty. FlowMo's ``tokenize`` and
        ``reconstruct`` call it; it never updates ``updated_state``. Default: ``forward(z)``;
        override when the loss terms cost more than the quantization (LFQ's entropy scores all
        2^G codewords of every group) or when ``forward`` updates state."""
        return self(z)

    @property
    def bits_per_token(self) -> float:
        """Bits of information in one token: log2(codebook_size) unless overridden."""
        return math.log2(self.codebook_size)

    def codes_to_group_indices(self, codes: Tensor) -> Tensor:
        """(..., C) codes -> (..., groups) indices per entropy group (only where ``has_groups``).

        Raises:
            ValueError: this quantizer has no entropy groups (the default).
        """
        raise ValueError(f"the quantizer {type(self).__name__} has no entropy groups (has_groups is False)")

    def group_indices_to_codes(self, group_indices: Tensor) -> Tensor:
        """(..., groups) entropy-group indices -> (..., C) codes (only where ``has_groups``).

        Raises:
            ValueError: this quantizer has no entropy groups (the default).
        """
        raise ValueError(f"the quantizer {type(self).__name__} has no entropy groups (has_groups is False)")

    def check_indices(self, indices: Tensor, name: str = "indices") -> None:
        """Raise TypeError / ValueError (naming ``name``) unless ``indices`` is a signed or
        small unsigned integer tensor with values in [0, codebook_size)."""
        self._check_indices(indices, name)

    def indices_to_codes_deferred(self, indices: Tensor, checks: ValueChecks, name: str = "indices") -> Tensor:
        """:meth:`indices_to_codes` for a caller that reads its value checks later, all in one
        host sync (``checks.read()``): the range check of ``indices`` (named ``name``) may be
        added to ``checks`` rather than read here; the type checks raise at once.

        Default: ``check_indices(indices, name)`` and ``indices_to_codes(indices)``, checked at
        once: right for a lookup that fails on an index out of range (an embedding table's
        gather; on CUDA a device-side assert). LFQ and FSQ compute codes arithmetically from any
        integer and defer the check."""
        self.check_indices(indices, name)
        return self.indices_to_codes(indices)

    def codes_to_group_indices_deferred(self, codes: Tensor, checks: ValueChecks, name: str = "codes") -> Tensor:
        """:meth:`codes_to_group_indices` with the check of the codes' values (named ``name``)
        added to ``checks`` where the quantizer can defer it (see
        :meth:`indices_to_codes_deferred`). Default: :meth:`codes_to_group_indices`."""
        return self.codes_to_group_indices(codes)

    # -- input checks shared by every quantizer (for its public methods)
    def _check_code(self, z: Tensor, name: str = "z", *, values: bool = False,
                    checks: Optional[ValueChecks] = None) -> None:
        """``z`` must be a floating tensor (..., channels); with ``values``, also finite (not
        meta), read now (one host sync) or, with ``checks``, added to them."""
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {getattr(z, 'dtype', type(z).__name__)}")
        if z.ndim < 1 or z.shape[-1] != self.channels:
            raise ValueError(f"{name} must have shape (..., {self.channels}), got {tuple(z.shape)}")
        if not values:
            return
        if z.device.type == "meta":
            raise ValueError(f"{name} must have finite values (no NaN or Inf, not a meta tensor)")
        now = ValueChecks() if checks is None else checks
        now.add(torch.isfinite(z),
                lambda: ValueError(f"{name} must have finite values (no NaN or Inf, not a meta tensor)"))
        if checks is None:
            now.read()

    def _check_indices(self, indices: Tensor, name: str = "indices", size: int | None = None, *,
                       checks: Optional[ValueChecks] = None) -> None:
        """``indices`` must be an integer tensor (not uint64, not meta) in [0, size) (default
        ``codebook_size``), its range read now (one host sync) or, with ``checks``, added to them."""
        size = self.codebook_size if size is None else size
        if (not isinstance(indices, Tensor) or indices.is_floating_point() or indices.is_complex()
                or indices.dtype in (torch.bool, torch.uint64) or indices.device.type == "meta"):
            raise TypeError(f"{name} must be an integer tensor with values (not bool, uint64 or meta), got "
                            f"{getattr(indices, 'dtype', type(indices).__name__)}")
        if not indices.numel():
            return
        lo, hi = torch.aminmax(indices.to(torch.int64))
        ok = lo >= 0 if size > torch.iinfo(torch.int64).max else (lo >= 0) & (hi < size)

        def error() -> ValueError:
            lo_, hi_ = torch.stack((lo, hi)).tolist()
            return ValueError(f"{name} must lie in [0, {size}), got values in [{lo_}, {hi_}]")

        now = ValueChecks() if checks is None else checks
        now.add(ok, error)
        if checks is None:
            now.read()


def check_constructed(quantizer: Quantizer, channels: int) -> None:
    """Check the attributes a quantizer's constructor must set (``QUANTIZERS.build`` calls it).

    Raises:
        TypeError: ``channels`` or ``codebook_size`` is not set to a python int; the message
            names the attribute and says to set it in the constructor.
        ValueError: ``quantizer.channels`` differs from the ``channels`` it was built with, or
            ``codebook_size`` is not in [1, 2**63].
    """
    name = type(quantizer).__qualname__
    for attr in ("channels", "codebook_size"):
        try:
            v = object.__getattribute__(quantizer, attr)  # the interface only annotates them: no default
        except AttributeError:
            v = None
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} does not set {attr} to a python int ({v!r}): set self.{attr} in its constructor")
    if quantizer.channels != channels:
        raise ValueError(f"{name}.channels is {quantizer.channels} but it was built with channels={channels}")
    if not 1 <= quantizer.codebook_size <= 2**63:
        raise ValueError(f"{name}.codebook_size must be in [1, 2**63], got {quantizer.codebook_size}")
