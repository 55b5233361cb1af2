"""One small generic registry per component kind: names -> factories, and the spec type each takes.

Registering a component takes one line, with its name written once::

    @QUANTIZERS.register("my_vq")
    class MyVQ(Quantizer):
        def __init__(self, *, codebook_size: int = 1024, beta: float = 0.25, channels: int):
            ...

The factory's keyword-only, annotated arguments are the component's configuration: the
registry derives the spec type from them (here a ``QuantizerSpec`` subclass with the fields
``name: Literal["my_vq"] = "my_vq"``, ``codebook_size`` and ``beta``), so
``{"name": "my_vq", "beta": 0.5}`` is usable wherever a FlowMoSpec takes a quantizer and
round-trips through JSON. Plain ``int``, ``float`` and ``bool`` annotations become the
strict spec types (:data:`flowmo.spec.SpecInt`, ...: no booleans or strings for numbers),
wherever they appear (inside Optional, Annotated, tuples, lists, dict values, Literal).
Annotations must describe JSON data (``Any``, ``object``, tensors, paths, ... are refused at
registration); a list or Sequence field holds a tuple, a set a frozenset and a dict an
immutable :class:`FrozenDict`, so specs stay frozen and hashable; defaults must be valid and
finite (no NaN / inf). Argument names that would shadow the spec's own attributes
(``replace``, ``loss_terms``, ``check_channels``, ``registry``, ``model_*``, ``_*``, ...) are
refused, naming the argument. Names are letters, digits, ``_`` and ``-`` (at most 64).
The kind's *wiring* arguments (``channels`` for a quantizer) are what the model passes in;
they are never part of the spec. ``build`` calls the factory with the spec's fields as
keyword arguments plus the wiring::

    QUANTIZERS.build({"name": "my_vq", "beta": 0.5}, channels=18)   # -> MyVQ(codebook_size=1024, beta=0.5, channels=18)

Where the configuration needs cross-field validation, register an explicit spec class (a
subclass of the kind's spec base, e.g. :class:`flowmo.spec.QuantizerSpec`, whose ``name``
defaults to the registered name); the factory is then called as ``factory(spec, **wiring)``::

    @QUANTIZERS.register("my_vq", spec=MyVQSpec)

Rules: a spec of another kind is refused at registration, naming the expected base class, and
so is a factory that cannot be called as ``factory(spec, **wiring)`` for an explicit spec; a
class that does not derive from the kind's interface (e.g. :class:`flowmo.quantizers.Quantizer`)
is refused at registration, and a factory whose result does not is refused by ``build``.
Registering the same object again under its name is harmless (so is re-running a notebook
cell or reloading a module: an object with the same module and qualified name replaces the
old entry); a different object under a taken name, or the same one with another spec, is
refused unless ``replace=True``. ``build`` checks the wiring sizes (positive ints).
Each entry records the module that defined it (``Entry.module``), so a saved model can name
the modules to import before it loads (see :mod:`flowmo.folders.imports`).

The package: :mod:`~flowmo.registry.core` (the :class:`Registry`), :mod:`~flowmo.registry.entry`
(:class:`Entry` and the errors), :mod:`~flowmo.registry.checks` (what a registration must
satisfy), :mod:`~flowmo.registry.derive` (the spec derived from a factory's arguments),
:mod:`~flowmo.registry.words` (naming things in messages) and :mod:`~flowmo.registry.kinds`
(the registries of the built-in kinds).
"""

from .core import Ref, Registry
from .derive import FrozenDict
from .entry import MAX_NAME_LENGTH, Entry, RegistryError, UnknownComponentError
from .kinds import (
    BACKBONES,
    FLOW_LOSSES,
    GENERATORS,
    PERCEPTUAL_DISTANCES,
    POSTTRAIN_OBJECTIVES,
    QUANTIZERS,
    REGISTRIES,
    SOLVERS,
    TIME_GRIDS,
    TIME_SAMPLERS,
)
from .words import with_article

__all__ = ["Registry", "RegistryError", "UnknownComponentError", "Entry", "REGISTRIES"]


# importable from here as before the split, though not in ``__all__`` (``import *`` is unchanged)
_REEXPORTED = (MAX_NAME_LENGTH, Ref, FrozenDict, with_article, BACKBONES, FLOW_LOSSES, GENERATORS, PERCEPTUAL_DISTANCES,
               POSTTRAIN_OBJECTIVES, QUANTIZERS, SOLVERS, TIME_GRIDS, TIME_SAMPLERS)
