"""The one result type and the interface every quantizer (the model's bottleneck) implements,
discrete (LFQ, FSQ: tokens) or continuous (``kl``, ``identity``: no tokens)."""

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

    values:  the code the decoder receives (B, T, C), same dtype as the input: codewords with
             straight-through gradients (a discrete quantizer), or the continuous code with its
             own gradients (a continuous one: ``kl``'s sample or mean, ``identity``'s input).
    indices: a discrete quantizer's int64 index per token (B, T); None for a continuous one
             (``Quantizer.discrete`` False), which has no tokens.
    losses:  named, already-weighted loss terms, the same in train and eval mode; they sum to ``loss``.
    stats:   named diagnostics (unweighted terms etc.), detached.
    """

    values: Tensor
    indices: Optional[Tensor]
    losses: dict[str, Tensor] = field(default_factory=dict)
    stats: dict[str, Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> Tensor:
        if not self.losses:
            return self.values.new_zeros((), dtype=torch.float32)
        return torch.stack([v.float() for v in self.losses.values()]).sum()


class Quantizer(nn.Module, ABC):
    """The interface of every quantizer, the model's bottleneck: the encoder's output (B, T, E)
    -> the code (B, T, C) the decoder receives. Discrete quantizers (LFQ, BSQ, FSQ, VQ) map each token to
    a codeword with an index (the model's tokens); continuous ones (``kl``, ``identity``:
    :attr:`discrete` False) pass a continuous code and have no tokens.

    Registered with :data:`flowmo.QUANTIZERS`; the model builds it as
    ``QUANTIZERS.build(spec.quantizer, channels=spec.code_channels)`` (``channels`` is the
    wiring argument: every quantizer's constructor takes it) and builds the encoder to output
    ``E = spec.quantizer.encoder_channels(spec.code_channels)`` channels per token. A
    subclass's constructor calls ``super().__init__()`` (no arguments; this is an
    ``nn.Module``) before setting anything.

    Attributes a subclass sets in its constructor (``QUANTIZERS.build`` refuses a quantizer
    without them, naming the attribute: :func:`check_constructed`):
        channels (int): C, the channels of one token of the code (the ``channels`` argument).
        codebook_size (int or None): a discrete quantizer's vocabulary of one token: indices
            lie in [0, codebook_size), a python int of at most 2**63. A continuous quantizer
            has no codebook: it leaves the interface's default, None.

    Declarations about the class (class attributes):
        discrete: True (the default): every token is a codeword with an index in
            [0, codebook_size), so the model has tokens (``tokenize``, ``detokenize``, token
            files, generators). False: a continuous bottleneck; ``indices`` is None,
            ``codebook_size`` and ``bits_per_token`` are None, :meth:`codes_to_indices` and
            :meth:`indices_to_codes` raise ValueError, and the model refuses its token paths
            (:func:`flowmo.spec.no_tokens_error`).
        stochastic: False (the default): ``forward`` is deterministic in either mode. True: in
            training mode ``forward`` samples, from draws :meth:`draw_noise` makes (``kl``);
            eval mode and :meth:`quantize` stay deterministic.

    Declarations about the configuration, classmethods taking the component's spec (for a
    class registered with one decorator line, the spec derived from its constructor: its
    fields are the keyword arguments, e.g. ``spec.commit_weight``); the spec asks them (an
    explicit spec class may override its own ``loss_terms`` / ``check_channels`` /
    ``encoder_channels`` instead):
        loss_terms(spec): the loss terms (the keys of ``QuantizerOutput.losses``,
            without the ``quantizer/`` prefix), a list of :class:`flowmo.LossTerm`; default
            ``[]``, right for a quantizer without auxiliary losses.
            :meth:`flowmo.FlowMoSpec.loss_terms` uses it and
            :func:`flowmo.testing.check_component` checks it against what ``forward`` returns.
        check_channels(spec, channels): raise ValueError when the quantizer cannot take
            ``channels`` channels per token (validated with the spec's ``code_channels``);
            default: any count.
        encoder_channels(spec, channels): E, the channels per token the encoder must output
            for a code of ``channels`` channels; default ``channels``; ``kl``: ``2 * channels``
            (a mean and a log-variance per channel). The instance's :attr:`input_channels`
            says the same (the model and :func:`flowmo.testing.check_component` check that
            they agree).

    Optional capabilities, declared here with defaults that hold for any quantizer (override
    them where a quantizer knows better; nothing probes for them by name):
        input_channels: E, the channels of ``forward``'s input; default ``channels``.
        draw_noise(batch, tokens, generator=..., device=...): None (the default): a
            deterministic quantizer. A stochastic one (``kl``, ``stochastic`` True) returns
            the random draws its training-mode ``forward`` uses, float32 (batch, tokens, C),
            which the model makes before the loss (:meth:`flowmo.FlowMo.loss_draws`) and
            passes as ``forward(z, noise=...)``; ``forward`` is only given ``noise`` when
            ``draw_noise`` returns a tensor, so a deterministic quantizer's ``forward`` may
            omit the parameter.
        moments(z): None (the default): not declared. A stochastic quantizer may return the
            elementwise mean and variance of its training-mode values given ``z`` (``kl``:
            the posterior's mean and exp(log-variance)); the conformance kit then checks its
            draws against them.
        bits_per_token: log2(codebook_size) (the information of one token if every codeword
            can occur); None for a continuous quantizer.
            :attr:`flowmo.FlowMoSpec.bits_per_pixel` and ``flowmo eval`` use it.
        has_groups: False. A quantizer with entropy groups (LFQ) sets it, sets
            ``group_codebook_size`` (the vocabulary of one group; 0 without groups) and
            implements :meth:`codes_to_group_indices` / :meth:`group_indices_to_codes`, which
            otherwise raise ValueError.
        check_indices: raises TypeError / ValueError unless the indices are an integer tensor
            with values in [0, codebook_size) (ValueError for a continuous quantizer).
        indices_to_codes_deferred / codes_to_group_indices_deferred: the conversions for a
            caller that reads its value checks once, later (FlowMo's ``detokenize``,
            ``tokens_to_code`` and ``tokenize(groups=True)``: one host sync per call); default:
            checked at once. A quantizer whose conversion is arithmetic on any input (LFQ, FSQ)
            adds its value checks to the caller's :class:`flowmo.devices.ValueChecks` instead.
        forward_idempotent: True: ``forward`` maps a codeword to itself (quantizing the values
            again changes nothing). A quantizer whose forward first bounds its input by a map
            that is not the identity on the codewords (FSQ's tanh) sets it to False; the
            conformance kit then checks idempotence through the codebook only (discrete
            quantizers only).
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
    codebook_size: Optional[int] = None  # a discrete quantizer's constructor sets it (check_constructed)
    discrete: ClassVar[bool] = True
    stochastic: ClassVar[bool] = False
    has_groups: ClassVar[bool] = False
    group_codebook_size: int = 0
    forward_idempotent: ClassVar[bool] = True
    updated_state: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, z: Tensor, noise: Optional[Tensor] = None) -> QuantizerOutput:
        """Quantize the encoder's output.

        Args:
            z: (B, T, E) floating tensor (any floating dtype), finite, any range; E is
                :attr:`input_channels` (``channels`` but for ``kl``).
            noise: a stochastic quantizer's draws, as :meth:`draw_noise` makes them (float32
                (B, T, C)), used in training mode and ignored in eval mode; None: drawn from
                torch's global generator when needed. Only passed when :meth:`draw_noise`
                returns a tensor: a deterministic quantizer may leave the parameter out.

        Returns:
            QuantizerOutput: ``values`` (B, T, C) in z's dtype: for a discrete quantizer each
            token a codeword, with straight-through gradients to z, and ``indices`` (B, T)
            int64 in [0, codebook_size), the index of each token's codeword
            (``codes_to_indices(values)``); for a continuous one the code itself (gradients
            to z) and ``indices`` None. ``losses``: named, already-weighted scalar terms;
            ``stats``: named detached diagnostics. The same z gives the same result
            (deterministic; a stochastic quantizer in training mode: the same z and noise),
            and the loss terms are the same in train and eval mode: a loss term that read
            ``self.training`` would silently vanish from a fine-tuning loop that forgot
            ``.train()`` (a loaded model is in eval mode).
            For a quantizer that declares ``updated_state``: the same z and the same state give
            the same result; a training-mode call then updates the state (after computing its
            result).
        """

    @abstractmethod
    def codes_to_indices(self, codes: Tensor) -> Tensor:
        """Codewords -> token indices (a continuous quantizer raises ValueError: it has none).

        Args:
            codes: (..., C) floating tensor of codewords (finite).

        Returns:
            (...) int64 tensor of indices in [0, codebook_size).
        """

    @abstractmethod
    def indices_to_codes(self, indices: Tensor) -> Tensor:
        """Token indices -> codewords, the inverse of :meth:`codes_to_indices` (a continuous
        quantizer raises ValueError: it has no codebook).

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

    @classmethod
    def encoder_channels(cls, spec: Any, channels: int) -> int:
        """E, the channels per token the encoder must output for this quantizer, configured by
        ``spec``, to give a code of ``channels`` channels (the model builds its encoder's
        latent output layer with it). Default: ``channels``; override (and
        :attr:`input_channels` with it) when ``forward`` takes another width (``kl``: 2C)."""
        return channels

    # -- optional capabilities
    @property
    def input_channels(self) -> int:
        """E, the channels per token of ``forward``'s input (the encoder's output): ``channels``
        unless overridden, together with :meth:`encoder_channels`."""
        return self.channels

    def draw_noise(self, batch: int, tokens: int, *, generator: Optional[torch.Generator] = None,
                   device: Optional[torch.device] = None) -> Optional[Tensor]:
        """The random draws of a training-mode ``forward`` on (batch, tokens) tokens, made
        beforehand (the model's ``loss_draws``: every draw before the loss, so that it compiles
        as one graph), or None for a deterministic quantizer (the default: nothing is drawn).

        A stochastic quantizer returns float32 (batch, tokens, C) draws from ``generator`` on
        ``device`` (None: torch's global generator, the CPU), whatever the module's mode (the
        model draws them in either mode, so the draws that follow are the same in both), and
        ``forward(z, noise=draws)`` uses them in training mode."""
        return None

    def moments(self, z: Tensor) -> Optional[tuple[Tensor, Tensor]]:
        """For a stochastic quantizer: the elementwise mean and variance (float32 (B, T, C)
        each) of its training-mode ``values`` given ``z`` (B, T, E), over its noise; None (the
        default) when not declared. :func:`flowmo.testing.check_quantizer` checks the draws
        against them."""
        return None

    def quantize(self, z: Tensor) -> QuantizerOutput:
        """Quantize for inference: ``values`` and ``indices`` exactly as :meth:`forward` gives
        them for ``z`` in eval mode, whatever the module's mode (deterministic: a stochastic
        quantizer does not sample here; ``kl`` gives the mean); ``losses`` and ``stats`` may be
        empty. FlowMo's ``tokenize`` and ``reconstruct`` call it. Default: ``forward(z)`` (right
        for a deterministic quantizer; a stochastic one overrides it); override when the loss
        terms cost more than the quantization (LFQ's entropy scores all 2^G codewords of every
        group). It never updates ``updated_state``; override it too when
        ``forward`` updates state."""
        return self(z)

    @property
    def bits_per_token(self) -> Optional[float]:
        """Bits of information in one token: log2(codebook_size) unless overridden; None for a
        continuous quantizer (no tokens: its code's information is not a count of codewords)."""
        return math.log2(self.codebook_size) if self.discrete else None

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
                    checks: Optional[ValueChecks] = None, channels: Optional[int] = None) -> None:
        """``z`` must be a floating tensor (..., channels) (default ``self.channels``; ``forward``'s
        input has :attr:`input_channels`); with ``values``, also finite (not meta), read now
        (one host sync) or, with ``checks``, added to them."""
        channels = self.channels if channels is None else channels
        if not isinstance(z, Tensor) or not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {getattr(z, 'dtype', type(z).__name__)}")
        if z.ndim < 1 or z.shape[-1] != channels:
            raise ValueError(f"{name} must have shape (..., {channels}), got {tuple(z.shape)}")
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
        ``codebook_size``), its range read now (one host sync) or, with ``checks``, added to them.
        A continuous quantizer has no indices: ValueError (:meth:`_no_codebook`)."""
        if size is None and not self.discrete:
            raise self._no_codebook("check_indices")
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


    def _no_codebook(self, method: str) -> ValueError:
        """The error of a codebook method (``method``) called on a continuous quantizer."""
        return ValueError(f"the quantizer {type(self).__name__} is continuous (discrete is False): it has no codebook "
                          f"and no indices, so {method} does not apply; its forward's values are the code")


def check_constructed(quantizer: Quantizer, channels: int) -> None:
    """Check the attributes a quantizer's constructor must set (``QUANTIZERS.build`` calls it).

    Raises:
        TypeError: ``discrete`` or ``stochastic`` is not a bool; ``channels`` is not set to a
            python int, nor ``codebook_size`` for a discrete quantizer; a continuous quantizer
            sets ``codebook_size`` (it has no codebook: it must leave it None);
            ``input_channels`` is not a python int. The message names the attribute and says
            what to do.
        ValueError: ``quantizer.channels`` differs from the ``channels`` it was built with,
            ``codebook_size`` is not in [1, 2**63], or ``input_channels`` is not positive.
    """
    name = type(quantizer).__qualname__
    for flag, value in (("discrete", quantizer.discrete), ("stochastic", quantizer.stochastic)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}.{flag} must be a bool (a class attribute), got {value!r}")
    attrs = ("channels", "codebook_size") if quantizer.discrete else ("channels",)
    for attr in attrs:
        try:
            v = object.__getattribute__(quantizer, attr)  # the interface only annotates them: no default
        except AttributeError:
            v = None
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} does not set {attr} to a python int ({v!r}): set self.{attr} in its constructor")
    if not quantizer.discrete and quantizer.codebook_size is not None:
        raise TypeError(f"{name} is continuous (discrete is False) but sets codebook_size to "
                        f"{quantizer.codebook_size!r}: a continuous quantizer has no codebook; leave it None")
    if quantizer.channels != channels:
        raise ValueError(f"{name}.channels is {quantizer.channels} but it was built with channels={channels}")
    if quantizer.discrete and not 1 <= quantizer.codebook_size <= 2**63:
        raise ValueError(f"{name}.codebook_size must be in [1, 2**63], got {quantizer.codebook_size}")
    e = quantizer.input_channels
    if isinstance(e, bool) or not isinstance(e, int):
        raise TypeError(f"{name}.input_channels must be a python int, got {e!r}")
    if e < 1:
        raise ValueError(f"{name}.input_channels must be positive, got {e}")
