"""Building a token generator from a configuration: ``{"name": "maskgit", "width": ..., ...}``.

The configuration names the generator and gives its constructor's options; what the token set
fixes (``vocab_size``, ``seq_len``, ``num_classes``) is passed separately and never part of it.
For now the names are looked up in :data:`GENERATOR_CLASSES`; the registry of the generator kind
will take this place.
"""

from __future__ import annotations

import inspect
from typing import Any, Mapping

import torch

from .autoregressive import AutoregressiveGenerator
from .base import TokenGenerator
from .maskgit import MaskGiT

__all__ = ["GENERATOR_CLASSES", "DERIVED_OPTIONS", "generator_class", "generator_options", "check_generator_config",
           "build_generator"]

GENERATOR_CLASSES: dict[str, type[TokenGenerator]] = {cls.name: cls for cls in (MaskGiT, AutoregressiveGenerator)}
"""name -> generator class."""

DERIVED_OPTIONS = ("vocab_size", "seq_len", "num_classes")
"""Constructor arguments that come from the token set, never from the configuration."""


def generator_class(name: Any) -> type[TokenGenerator]:
    """The generator class called ``name``; ValueError listing the known names otherwise."""
    if not isinstance(name, str) or name not in GENERATOR_CLASSES:
        raise ValueError(f"generator.name must be one of {sorted(GENERATOR_CLASSES)}, got {name!r}")
    return GENERATOR_CLASSES[name]


def generator_options(cls: type[TokenGenerator]) -> dict[str, Any]:
    """The configurable options of a generator class: its keyword-only constructor arguments
    other than :data:`DERIVED_OPTIONS`, each with its default (``inspect.Parameter.empty`` when it
    has none)."""
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in DERIVED_OPTIONS}


def _split(config: Any) -> tuple[type[TokenGenerator], dict[str, Any]]:
    if not isinstance(config, Mapping):
        raise TypeError(f"the generator config must be a mapping such as {{'name': 'maskgit', 'width': 256}}, "
                        f"got {type(config).__name__}")
    if "name" not in config:
        raise ValueError(f"generator.name is required (one of {sorted(GENERATOR_CLASSES)})")
    cls = generator_class(config["name"])
    options = {k: v for k, v in config.items() if k != "name"}
    derived = sorted(set(options) & set(DERIVED_OPTIONS))
    if derived:
        raise ValueError(f"generator.{derived[0]} comes from the token set (vocab_size and seq_len from its "
                         "layout, num_classes from its classes); remove it from the generator config")
    known = generator_options(cls)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"generator.{unknown[0]} is not an option of the {cls.name!r} generator; "
                         f"its options are {sorted(known)}")
    return cls, options


def check_generator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a generator configuration without a token set: the name, the option names, and
    the values (the constructor is run on the ``meta`` device, which allocates nothing, with
    placeholder vocab_size=2, seq_len=1, num_classes=1). Returns it as a plain dict.

    Raises:
        TypeError / ValueError: naming the field (``generator.<option>``) and what is expected.
    """
    cls, options = _split(config)
    try:
        with torch.device("meta"):
            cls(vocab_size=2, seq_len=1, num_classes=1, **options)
    except (TypeError, ValueError) as e:
        raise type(e)(f"generator ({cls.name}): {e}") from None
    return {"name": cls.name, **options}


def build_generator(config: Mapping[str, Any], *, vocab_size: int, seq_len: int, num_classes: int) -> TokenGenerator:
    """Build the generator a configuration names, for a token set.

    Args:
        config: ``{"name": <a key of GENERATOR_CLASSES>, <option>: <value>, ...}``; the options are
            the class's keyword-only constructor arguments (:func:`generator_options`), defaults
            filling the rest.
        vocab_size: V, the token set's layout's vocabulary (tokens in [0, V)).
        seq_len: L, the layout's sequence length (tokens x groups).
        num_classes: C, the token set's classes (0: unconditional).

    Returns:
        the generator (freshly initialised from torch's global RNG, on the CPU, in training mode).

    Raises:
        TypeError / ValueError: an unknown name or option, an option that comes from the token set,
            or a value the constructor refuses (named).
    """
    cls, options = _split(config)
    return cls(vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes, **options)
