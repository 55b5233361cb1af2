"""The interface every token generator implements, its one result type, and its folder format.

A token generator models sequences of L discrete tokens (a tokenizer's indices, each in
[0, vocab_size)), optionally conditioned on a class label in [0, num_classes). It trains with
:meth:`TokenGenerator.loss` and samples with :meth:`TokenGenerator.generate`. A class-conditional
generator has a learned null class (index ``num_classes``) for classifier-free guidance.

A saved generator is a folder: ``config.json`` (``{"format": "flowmo-generator", "version": 1,
"generator": <name>, "config": <constructor arguments>, "metadata": {...}}``; ``metadata`` holds
what the caller records, e.g. the tokenizer's fingerprint and token layout) and
``model.safetensors`` (the state dict). Loading reads JSON and safetensors only.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from flowmo.data.files import atomic_write
from flowmo.objectives import LossOutput
from flowmo.state_dicts import check_finite, check_state_dict

from ._checks import check_generator, check_index_tensor, check_int, check_real, check_top_k

__all__ = ["GenerationOutput", "TokenGenerator", "GENERATOR_FORMAT", "GENERATOR_CONFIG_NAME",
           "GENERATOR_WEIGHTS_NAME", "read_generator_config"]

GENERATOR_FORMAT = "flowmo-generator"
GENERATOR_CONFIG_NAME = "config.json"
GENERATOR_WEIGHTS_NAME = "model.safetensors"
_VERSION = 1

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

    Attributes a subclass sets in its constructor (after ``super().__init__()``):
        vocab_size (int): V >= 2, tokens lie in [0, V).
        seq_len (int): L >= 1, the tokens per sample.
        num_classes (int): C >= 0 class labels in [0, C); 0 = unconditional (labels are None).

    Class attributes:
        name (str): the generator's name, written to and checked in a saved folder.
        default_steps (int | None): ``generate``'s steps when none is given (None: the generator's own
            fixed count, e.g. L for an autoregressive one).

    Subclasses implement :meth:`loss`, :meth:`generate` and :meth:`config` (the constructor's
    keyword arguments, JSON-able: ``type(g)(**g.config())`` builds the same architecture).
    Generators may add keyword-only options with defaults to ``generate`` (MaskGiT:
    ``choice_temperature``).
    """

    name: ClassVar[str] = ""
    default_steps: ClassVar[Optional[int]] = None
    vocab_size: int
    seq_len: int
    num_classes: int

    # ------------------------------------------------------------------ the interface
    @abstractmethod
    def loss(self, tokens: Tensor, labels: Optional[Tensor] = None, *,
             generator: Optional[torch.Generator] = None) -> LossOutput:
        """The training loss of a batch.

        Args:
            tokens: int64 (B, L), values in [0, vocab_size), on the generator's device.
            labels: int64 (B,) class labels in [0, num_classes) for a class-conditional generator;
                None for an unconditional one (num_classes = 0). Training may replace labels by
                the null class (label dropout for classifier-free guidance).
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
        """Sample token sequences (in eval mode, without gradients).

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
        """The constructor's keyword arguments (JSON-able): ``type(self)(**self.config())``
        builds the same architecture."""

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
        if self.num_classes == 0:
            if labels is not None:
                raise ValueError(f"{name} must be None: this generator is unconditional (num_classes = 0)")
            return None
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
            raise ValueError(f"labels must be an int64 ({batch},) tensor of classes in [0, {self.num_classes}): "
                             f"this generator is class-conditional (num_classes = {self.num_classes})")
        labels = self.check_labels(labels, batch)
        if labels is None:
            return torch.full((batch,), self.null_class, dtype=torch.long, device=self.device)
        return labels

    def sampling_inputs(self, labels: Any, batch_size: Any, temperature: Any, cfg_scale: Any, top_k: Any,
                        generator: Any) -> tuple[Tensor, bool, float, float, Optional[int]]:
        """Check ``generate``'s common arguments.

        Returns:
            (labels int64 (B,) with the null class where unconditional, guided (cfg_scale != 1),
            temperature, cfg_scale, top_k).
        """
        labels = self.check_labels(labels, None)
        if labels is None:
            if batch_size is None:
                raise ValueError("batch_size is required when labels is None (unconditional generation)")
            b = check_int(batch_size, "batch_size", minimum=0)
            labels = torch.full((b,), self.null_class, dtype=torch.long, device=self.device)
            conditional = False
        else:
            if batch_size is not None and check_int(batch_size, "batch_size", minimum=0) != labels.shape[0]:
                raise ValueError(f"batch_size ({batch_size}) must be None or len(labels) = {labels.shape[0]}")
            conditional = True
        temperature = check_real(temperature, "temperature", low=0.0)
        cfg_scale = check_real(cfg_scale, "cfg_scale", low=0.0)
        if cfg_scale != 1.0 and not conditional:
            raise ValueError(f"cfg_scale must be 1 without labels (guidance contrasts a class with the null class), "
                             f"got {cfg_scale}")
        top_k = check_top_k(top_k, self.vocab_size)
        check_generator(generator, self.device)
        return labels, cfg_scale != 1.0, temperature, cfg_scale, top_k

    # ------------------------------------------------------------------ folders
    def save_pretrained(self, directory: PathLike, *, metadata: Optional[Mapping[str, Any]] = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``directory`` (created), each atomically.

        Args:
            directory: the folder.
            metadata: JSON-able facts to record beside the configuration (e.g. the tokenizer's
                fingerprint and token layout); read back by :func:`read_generator_config`.

        Raises:
            TypeError: ``metadata`` not a JSON-able mapping.
        """
        from safetensors.torch import save_file

        if metadata is not None and not isinstance(metadata, Mapping):
            raise TypeError(f"metadata must be a mapping or None, got {type(metadata).__name__}")
        doc = {"format": GENERATOR_FORMAT, "version": _VERSION, "generator": type(self).name,
               "config": self.config(), "metadata": dict(metadata or {})}
        try:
            text = json.dumps(doc, indent=2, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"metadata must be JSON-able: {e}") from None
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        atomic_write(d / GENERATOR_WEIGHTS_NAME,
                     lambda p: save_file(state, str(p), metadata={"format": "pt", "library": "flowmo"}))
        atomic_write(d / GENERATOR_CONFIG_NAME, lambda p: Path(p).write_text(text + "\n", encoding="utf-8"))
        return d

    @classmethod
    def from_pretrained(cls, directory: PathLike, *, device: Union[str, torch.device, None] = None):
        """Load a folder written by :meth:`save_pretrained` of this class; returned in eval mode.

        Raises:
            FileNotFoundError: the folder or one of its files is missing.
            ValueError: a damaged or foreign config (another generator's name, a configuration
                the constructor refuses) or weights that do not fit (missing, unexpected,
                mis-shaped or non-finite tensors).
        """
        from safetensors.torch import load_file

        d = Path(directory)
        doc = read_generator_config(d)
        if doc["generator"] != cls.name:
            raise ValueError(f"{d / GENERATOR_CONFIG_NAME} holds a {doc['generator']!r} generator, not "
                             f"{cls.name!r}: load it with that generator's class")
        try:
            model = cls(**doc["config"])
        except (TypeError, ValueError) as e:
            raise ValueError(f"{d / GENERATOR_CONFIG_NAME}: its config does not build a {cls.name}: {e}") from None
        weights = d / GENERATOR_WEIGHTS_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"{str(weights)!r} is missing; a generator folder holds "
                                    f"{GENERATOR_CONFIG_NAME} and {GENERATOR_WEIGHTS_NAME}")
        try:
            state = load_file(str(weights))
        except Exception as e:  # safetensors raises several types for damaged files
            raise ValueError(f"{weights} is not a readable safetensors file: {type(e).__name__}: {e}") from None
        check_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()}, state, str(weights))
        check_finite(state, str(weights))
        model.load_state_dict(state, strict=True)
        if device is not None:
            model.to(device)
        return model.eval()


def read_generator_config(directory: PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a generator folder: a dict with keys ``format``,
    ``version``, ``generator`` (the name), ``config`` (constructor arguments) and ``metadata``.

    Raises:
        FileNotFoundError: no folder or no config.json.
        ValueError: not JSON, or not a generator folder's config (the message says what is wrong).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory must be a folder path (str or os.PathLike), got {type(directory).__name__}")
    d = Path(directory)
    if d.is_file():
        raise ValueError(f"directory {str(d)!r} is a file; pass the generator folder holding {GENERATOR_CONFIG_NAME}")
    path = d / GENERATOR_CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} is missing; a generator folder holds {GENERATOR_CONFIG_NAME} and "
                                f"{GENERATOR_WEIGHTS_NAME}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != GENERATOR_FORMAT:
        raise ValueError(f"{path} is not a generator folder's config (its \"format\" is not {GENERATOR_FORMAT!r})")
    if doc.get("version") != _VERSION:
        raise ValueError(f"{path} has version {doc.get('version')!r}; this flowmo reads version {_VERSION}")
    if not isinstance(doc.get("generator"), str) or not isinstance(doc.get("config"), dict):
        raise ValueError(f"{path} must hold \"generator\" (a name) and \"config\" (an object)")
    if not isinstance(doc.get("metadata", {}), dict):
        raise ValueError(f"{path}: \"metadata\" must be an object")
    doc.setdefault("metadata", {})
    return doc
