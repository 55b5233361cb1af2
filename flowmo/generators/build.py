"""Building a token generator from a configuration: ``{"name": "maskgit", "width": ..., ...}``.

The configuration names a generator registered in :data:`flowmo.GENERATORS` and gives its spec's
fields (its constructor's options); what the token set fixes (``vocab_size``, ``seq_len``,
``num_classes``: the kind's wiring arguments) is passed separately and never part of it. A
generator a user registers (``@flowmo.GENERATORS.register("my_gen")``) is built the same way.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .base import TokenGenerator

__all__ = ["DERIVED_OPTIONS", "generator_class", "check_generator_config", "build_generator"]

DERIVED_OPTIONS = ("vocab_size", "seq_len", "num_classes")
"""Constructor arguments that come from the token set, never from the configuration (the
generator kind's wiring arguments)."""


def _registry():
    from flowmo.registry import GENERATORS

    return GENERATORS


def generator_class(name: Any) -> type[TokenGenerator]:
    """The generator class registered as ``name``; ValueError listing the known names otherwise."""
    reg = _registry()
    if not isinstance(name, str) or name not in reg:
        raise ValueError(f"generator.name must be one of {reg.names()}, got {name!r}")
    return reg.get(name).factory


def _spec(config: Any) -> Any:
    if not isinstance(config, Mapping):
        raise TypeError(f"the generator config must be a mapping such as {{'name': 'maskgit'}}, got {type(config).__name__}")
    generator_class(config.get("name"))
    derived = sorted(set(config) & set(DERIVED_OPTIONS))
    if derived:
        raise ValueError(f"generator.{derived[0]} comes from the token set; remove it from the generator config")
    try:
        return _registry().spec_base.model_validate(dict(config))
    except ValueError as e:  # pydantic's ValidationError, naming the field
        raise ValueError(f"generator: {e}") from None


def check_generator_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a generator configuration without a token set: the name, the fields (through the
    generator's spec) and their values (the generator is built on the ``meta`` device, which
    allocates nothing, with placeholder vocab_size=2, seq_len=1, num_classes=1). Returns the
    spec as a plain dict (every field, defaults filled in).

    Raises:
        TypeError / ValueError: naming the field (``generator.<option>``) and what is expected.
    """
    spec = _spec(config)
    try:
        with torch.device("meta"):
            _registry().build(spec, vocab_size=2, seq_len=1, num_classes=1)
    except (TypeError, ValueError) as e:
        raise type(e)(f"generator ({spec.name}): {e}") from None
    return spec.model_dump(mode="json")


def build_generator(config: Mapping[str, Any], *, vocab_size: int, seq_len: int, num_classes: int) -> TokenGenerator:
    """Build the generator a configuration names, for a token set, through
    :data:`flowmo.GENERATORS` (``GENERATORS.build(config, vocab_size=..., seq_len=..., num_classes=...)``).

    Args:
        config: ``{"name": <a registered generator>, <field>: <value>, ...}``, the fields of its
            spec (its constructor's keyword arguments), defaults filling the rest.
        vocab_size: V, the token set's layout's vocabulary (tokens in [0, V)).
        seq_len: L, the layout's sequence length (tokens x groups).
        num_classes: C, the token set's classes (0: unconditional).

    Returns:
        the generator (freshly initialised from torch's global RNG, on the CPU, in training mode).

    Raises:
        TypeError / ValueError: an unknown name or field, a field that comes from the token set,
            or a value the constructor refuses (named).
    """
    return _registry().build(_spec(config), vocab_size=vocab_size, seq_len=seq_len, num_classes=num_classes)
