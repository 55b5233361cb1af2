"""The interface every token generator implements, its one result type, and its folder format.

A token generator models sequences of L discrete tokens (a tokenizer's indices, each in
[0, vocab_size)), optionally conditioned on a class label in [0, num_classes). It trains with
:meth:`TokenGenerator.loss` and samples with :meth:`TokenGenerator.generate`. A class-conditional
generator has a learned null class (index ``num_classes``) for classifier-free guidance.

A saved generator is a folder (:mod:`flowmo.folders.generator_folder`): ``config.json`` (``{"format": "flowmo-generator", "version": 1,
"generator": <name>, "config": <constructor arguments>, "metadata": {...}}``; ``metadata`` holds
what the caller records, e.g. the tokenizer's fingerprint and token layout; ``"imports"``, present
only for a generator registered outside flowmo, lists the module that registered it, as a
tokenizer folder does: :mod:`flowmo.folders.imports`) and ``model.safetensors`` (the state dict).
Loading reads JSON and safetensors only.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from flowmo.model import LossOutput

from ._checks import check_generator, check_index_tensor, check_int, check_real
from flowmo.folders.generator_folder import load_generator_folder, save_generator_folder

__all__ = ["GenerationOutput", "TokenGenerator", "check_constructed"]


PathLike = Union[str, os.PathLike]


@dataclass
class GenerationOutput:
    """What :meth:`TokenGenerator.generate` returns.

    tokens: int64 (B, L), every entry in [0, vocab_size) (no [MASK] left).
    forward_passes: the number of calls of the network. With classifier-free guidance
        (cfg_scale != 1) the conditional and unconditional inputs are stacked into ONE call
        of batch 2B, which counts as one forward pass.
    nfe: network function evaluations per sample: each call counts the number of inputs it
        evaluates per sample (2 for a stacked CFG pair, else 1); ``nfe`` is the cost measure
        comparable across guided and unguided runs (= forward_passes unguided,
        2 * forward_passes guided).
    steps: the decoding steps made (MaskGiT: the ``steps`` asked; autoregressive: L).
    """

    tokens: Tensor
    forward_passes: int
    nfe: int
    steps: int


class TokenGenerator(nn.Module, ABC):
    """A generative model over token sequences (B, L) of a vocabulary of ``vocab_size``.

    Registered with :data:`flowmo.GENERATORS` in one line, the name written once, the spec
    derived from the constructor's keyword-only arguments (:class:`flowmo.spec.GeneratorSpec`)::

        @flowmo.GENERATORS.register("my_gen")
        class MyGen(TokenGenerator):
            name = "my_gen"
            def __init__(self, *, vocab_size: int, seq_len: int, num_classes: int = 0, width: int = 64):
                super().__init__()
                ...

    ``vocab_size``, ``seq_len`` and ``num_classes`` are the kind's wiring arguments (what the
    token layout and the labelled token set fix; never part of the spec), so
    ``GENERATORS.build({"name": "my_gen", "width": 128}, vocab_size=V, seq_len=L, num_classes=C)``
    builds it. A subclass's constructor calls ``super().__init__()`` (no arguments; this is an
    ``nn.Module``) before setting anything. ``GENERATORS.build`` checks what the constructor set
    (:func:`check_constructed`). Check a new generator with :func:`flowmo.testing.check_generator`.

    Attributes a subclass sets in its constructor (after ``super().__init__()``):
        vocab_size (int): V >= 2, tokens lie in [0, V).
        seq_len (int): L >= 1, the tokens per sample.
        num_classes (int): C >= 0 class labels in [0, C); 0 = unconditional (labels are None).

    Class attributes:
        name (str): the generator's name, written to and checked in a saved folder: the name it
            is registered under (:func:`flowmo.generators.load_generator` finds the class by it).
        default_steps (int | None): ``generate``'s steps when none is given (None: the generator's own
            fixed count, e.g. L for an autoregressive one).
        samples_prefixes (bool): ``generate`` takes ``length`` (sample only the first tokens:
            an autoregressive generator; :func:`flowmo.generators.generate_images`'s ``num_tokens``).

    Instance attribute ``metadata`` (a dict): what the folder it was loaded from records
    (:meth:`from_pretrained`; ``{}`` for a generator built in memory), e.g. the token layout and
    the tokenizer's fingerprint that :func:`flowmo.generators.generate_images` checks.

    Subclasses implement :meth:`loss`, :meth:`generate` and :meth:`config` (the constructor's
    keyword arguments, JSON-able: ``type(g)(**g.config())`` builds the same architecture).
    Generators may add keyword-only options with defaults to ``generate`` (MaskGiT:
    ``choice_temperature``; autoregressive: ``use_cache``).
    """

    name: ClassVar[str] = ""
    default_steps: ClassVar[Optional[int]] = None
    samples_prefixes: ClassVar[bool] = False
    vocab_size: int
    seq_len: int
    num_classes: int

    @property
    def metadata(self) -> dict[str, Any]:
        """What the folder this generator was loaded from records (``{}`` if none)."""
        return self.__dict__.setdefault("_metadata", {})

    @metadata.setter
    def metadata(self, value: Mapping[str, Any]) -> None:
        if not isinstance(value, Mapping):
            raise TypeError(f"metadata must be a mapping, got {type(value).__name__}")
        self.__dict__["_metadata"] = dict(value)

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def loss(self, tokens: Tensor, labels: Optional[Tensor] = None, *,
             generator: Optional[torch.Generator] = None) -> LossOutput:
        """The training loss of a batch.

        Args:
            tokens: int64 (B, L), values in [0, vocab_size), on the generator's device.
            labels: int64 (B,) class labels in [0, num_classes) for a class-conditional generator;
                None for an unconditional one (num_classes = 0). Training mode may replace labels
                by the null class (label dropout for classifier-free guidance); nothing else of
                the loss depends on the mode (the same terms, and the same draws, in eval mode).
            generator: every random draw of the loss (masks, label dropout) comes from it; a
                ``torch.Generator`` on the device's type, or None (torch's global RNG).

        Returns:
            LossOutput: ``total`` (a float32 scalar to backpropagate, in nats per predicted
            token) and ``terms`` (named scalars; they sum to ``total``).

        Raises:
            TypeError / ValueError: naming the argument (shape, dtype, range, device).
        """

    @abstractmethod
    def generate(self, labels: Optional[Tensor] = None, *, batch_size: Optional[int] = None,
                 steps: Optional[int] = None, temperature: float = 1.0, cfg_scale: float = 1.0,
                 top_k: Optional[int] = None, generator: Optional[torch.Generator] = None) -> GenerationOutput:
        """Sample token sequences (in eval mode, without gradients; afterwards every submodule has
        its own ``training`` flag back: run the network inside :func:`flowmo.nets.frozen.evaluating`).

        Args:
            labels: int64 (B,) classes in [0, num_classes) to generate, or None: B = ``batch_size``
                samples of the null class (unconditional; the only choice when num_classes = 0).
            batch_size: B when ``labels`` is None; with labels, None or len(labels).
            steps: decoding steps (None: ``default_steps``); what a step is depends on the generator.
            temperature: >= 0, the sampling temperature (0: argmax, no random draw for the tokens).
            cfg_scale: >= 0, classifier-free guidance on the logits,
                uncond + cfg_scale * (cond - uncond); 1 is exactly no guidance (no unconditional
                pass is made); != 1 needs labels.
            top_k: None, or keep only the k most likely tokens (an int in [1, vocab_size]) before
                sampling.
            generator: every random draw comes from it (same seed, same tokens).

        Returns:
            GenerationOutput with tokens int64 (B, L) in [0, vocab_size) on the generator's device.

        Raises:
            TypeError / ValueError: naming the argument.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor's keyword arguments, written to a saved folder's ``config.json``.

        Args:
            self: the generator; no other argument.

        Returns:
            a JSON-able dict, wiring included (``vocab_size``, ``seq_len``, ``num_classes``):
            ``type(self)(**self.config())`` builds the same architecture.
        """

    # ------------------------------------------------------------------ shared helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def null_class(self) -> int:
        """The learned null class's index (num_classes): the unconditional input for CFG."""
        return self.num_classes

    def check_tokens(self, tokens: Any, name: str = "tokens") -> Tensor:
        """``tokens`` as int64 (B, seq_len) in [0, vocab_size) on the generator's device."""
        return check_index_tensor(tokens, name, (None, self.seq_len), f"(B, {self.seq_len})", self.vocab_size,
                                  "token indices", self.device)

    def check_labels(self, labels: Any, batch: Optional[int], name: str = "labels") -> Optional[Tensor]:
        """``labels`` as int64 (batch,) in [0, num_classes), or None where allowed: always for an
        unconditional generator (where only None is allowed)."""
        if self.num_classes == 0 and labels is not None:
            raise ValueError(f"{name} must be None: this generator is unconditional (num_classes = 0)")
        if labels is None:
            return None
        layout = "(B,)" if batch is None else f"({batch},)"
        return check_index_tensor(labels, name, (batch,), layout, self.num_classes, "class labels", self.device)

    def training_labels(self, labels: Any, batch: int) -> Tensor:
        """The labels of a training batch: int64 (batch,), the null class when unconditional.

        Raises:
            ValueError: labels missing for a class-conditional generator, or malformed.
        """
        if self.num_classes and labels is None:
            raise ValueError(f"labels must be an int64 ({batch},) tensor of classes in [0, {self.num_classes}), got None")
        labels = self.check_labels(labels, batch)
        if labels is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=self.device)
        return labels

    def training_inputs(self, tokens: Any, labels: Any, generator: Any) -> tuple[Tensor, Tensor]:
        """Check ``loss``'s common arguments: ``(tokens, labels)``, tokens int64 (B, seq_len) with
        B >= 1 and labels as :meth:`training_labels` gives them.

        Raises:
            TypeError / ValueError: naming the argument (also a generator on another device type).
        """
        tokens = self.check_tokens(tokens)
        check_generator(generator, tokens.device)
        if tokens.shape[0] == 0:
            raise ValueError("tokens must hold at least one sample (B >= 1), got B = 0")
        return tokens, self.training_labels(labels, tokens.shape[0])

    def sampling_inputs(self, labels: Any, batch_size: Any, temperature: Any, cfg_scale: Any, top_k: Any,
                        generator: Any) -> tuple[Tensor, bool, float, float, Optional[int]]:
        """Check ``generate``'s common arguments.

        Returns:
            (labels int64 (B,) with the null class where unconditional, guided (cfg_scale != 1),
            temperature, cfg_scale, top_k).
        """
        labels = self.check_labels(labels, None)
        conditional = labels is not None
        b = None if batch_size is None else check_int(batch_size, "batch_size", minimum=0)
        if b is None and not conditional or b is not None and conditional and b != labels.shape[0]:
            raise ValueError(f"batch_size must be given without labels, and None or len(labels) with them, got {b}")
        if not conditional:
            labels = torch.full((b,), self.null_class, dtype=torch.long, device=self.device)
        temperature = check_real(temperature, "temperature", low=0.0)
        cfg_scale = check_real(cfg_scale, "cfg_scale", low=0.0)
        if cfg_scale != 1.0 and not conditional:
            raise ValueError(f"cfg_scale must be 1 without labels (it contrasts a class with the null class), got {cfg_scale}")
        top_k = None if top_k is None else check_int(top_k, "top_k", maximum=self.vocab_size)
        check_generator(generator, self.device)
        return labels, cfg_scale != 1.0, temperature, cfg_scale, top_k

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, directory: PathLike, *, metadata: Optional[Mapping[str, Any]] = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created), each atomically.

        Args:
            directory: the folder.
            metadata: JSON-able facts to record beside the configuration (e.g. the tokenizer's
                fingerprint and token layout); read back by :func:`read_generator_config`.
                None: the generator's own :attr:`metadata` (what it was loaded with, else {}).

        A generator registered outside flowmo has the module that registered it recorded under
        ``"imports"`` (:func:`generator_modules`; one defined in ``__main__`` is not recorded,
        with a warning: the folder then loads only where it is registered again).

        Raises:
            TypeError: ``metadata`` not a JSON-able mapping.
            ValueError: ``directory`` holds another kind of folder's ``config.json`` (a tokenizer
                model folder, a training run, a file flowmo does not know:
                :func:`flowmo.data.folder_kinds.check_folder_kind`); a generator folder is overwritten.
        """
        return save_generator_folder(self, directory, metadata)

    @classmethod
    def from_pretrained(cls, directory: PathLike, *, device: Union[str, torch.device, None] = None):
        """Load a folder written by :meth:`save_pretrained` of this class; returned in eval mode.

        Raises:
            FileNotFoundError: the folder or one of its files is missing.
            ValueError: a damaged or foreign config (another generator's name, a configuration
                the constructor refuses) or weights that do not fit (missing, unexpected,
                mis-shaped, other-dtype or non-finite tensors; the shapes are compared with the
                weights file's header before the generator is allocated: on the ``"meta"``
                device, so the constructor must not compute with tensor values).
        """
        return load_generator_folder(cls, directory, device)


def check_constructed(generator: TokenGenerator, vocab_size: int, seq_len: int, num_classes: int) -> None:
    """Check what a generator's constructor must set (``GENERATORS.build`` calls it with the wiring).

    Raises:
        TypeError: ``vocab_size``, ``seq_len`` or ``num_classes`` not set or not a python int, or
            the class's ``name`` is not a non-empty string; the message names the attribute.
        ValueError: an attribute differs from the wiring it was built with, or the class's
            ``name`` is not the name it is registered under (a saved folder names its generator
            by it, and :func:`flowmo.generators.load_generator` finds the class by it).
    """
    from flowmo.registry import GENERATORS

    cls = type(generator)
    what = cls.__qualname__
    for attr, want in (("vocab_size", vocab_size), ("seq_len", seq_len), ("num_classes", num_classes)):
        try:
            v = object.__getattribute__(generator, attr)
        except AttributeError:
            raise TypeError(f"{what} does not set {attr}; set self.{attr} in its constructor") from None
        if isinstance(v, bool) or not isinstance(v, int) or v != want:
            error = ValueError if isinstance(v, int) and not isinstance(v, bool) else TypeError
            raise error(f"{what}.{attr} is {v!r} but it was built with {attr}={want} (a python int)")
    name = cls.name
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what}.name must be the name it is registered under (a class attribute), got {name!r}")
    registered = [e.name for e in GENERATORS.entries() if e.factory is cls]
    if registered and name not in registered:
        raise ValueError(f"{what}.name is {name!r} but the class is registered as {registered[0]!r}: set it to that")
