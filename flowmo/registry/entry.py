"""What a registry holds (:class:`Entry`, one per registered component) and the errors it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, Optional, TypeVar

T = TypeVar("T")

MAX_NAME_LENGTH = 64
"""Longest registered name."""


class RegistryError(ValueError):
    """A registration that is refused, or an unknown name."""


class UnknownComponentError(RegistryError):
    """A name that is not registered in a registry (``kind``, ``name`` say which)."""

    def __init__(self, message: str, kind: str, name: Any):
        super().__init__(message)
        self.kind = kind
        self.name = name


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component.

    ``spec``: the spec class its configuration validates with (derived from the factory's
    keyword-only arguments when ``derived``, else the explicit class given at registration).
    ``fields``: for a derived spec, the spec fields passed to the factory as keyword arguments.
    ``module``: the module that defined the factory (``factory.__module__``).
    """

    name: str
    factory: T
    spec: Optional[type] = None
    module: str = ""
    derived: bool = False
    fields: tuple[str, ...] = ()

    @property
    def builtin(self) -> bool:
        """Whether flowmo itself registers this component (no module to import for it)."""
        return self.module == "flowmo" or self.module.startswith("flowmo.")
