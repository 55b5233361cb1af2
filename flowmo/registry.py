"""One small generic registry: names -> component factories (plus the spec type they take).

Every component kind (backbones, quantizers, time samplers, ...) has one ``Registry``.
A factory is registered with a decorator and found again by name::

    @QUANTIZERS.register("my_vq", spec=MyVQSpec)
    class MyVQ(Quantizer): ...

    QUANTIZERS.get("my_vq")          # -> the Entry (factory and spec class)
    QUANTIZERS.names("f*")           # wildcard listing

Registering a name twice is an error; an unknown name is an error that lists the
registered ones. The registry stores nothing else.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "RegistryError", "Entry"]


class RegistryError(ValueError):
    """An unknown or duplicate name in a registry."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: T
    spec: type | None  # the pydantic spec class this factory takes (None: takes none)


class Registry(Generic[T]):
    """A named collection of factories of one component kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, *, spec: type | None = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (taking an instance of ``spec``)."""
        if not isinstance(name, str) or not name:
            raise RegistryError(f"{self.kind} registry: name must be a non-empty string, got {name!r}")

        def decorator(obj: T) -> T:
            self.add(name, obj, spec=spec)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, spec: type | None = None) -> None:
        if name in self._entries:
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by {self._entries[name].factory!r}); "
                "pick another name"
            )
        if spec is not None:
            _check_spec_name(self.kind, name, spec)
        self._entries[name] = Entry(name, obj, spec)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (for tests and notebooks that re-run a registration)."""
        self.get(name)
        del self._entries[name]

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise RegistryError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Call the factory registered under ``name``."""
        return self.get(name).factory(*args, **kwargs)  # type: ignore[operator]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _check_spec_name(kind: str, name: str, spec: type) -> None:
    fields = getattr(spec, "model_fields", None)
    if fields is None or "name" not in fields:
        raise RegistryError(f"{kind} {name!r}: spec {spec.__name__} must be a pydantic model with a 'name' field")
    default = fields["name"].default
    if default != name:
        raise RegistryError(
            f"{kind} {name!r}: spec {spec.__name__}.name defaults to {default!r}; it must default to {name!r}"
        )


BACKBONES: Registry = Registry("backbone")
QUANTIZERS: Registry = Registry("quantizer")
TIME_SAMPLERS: Registry = Registry("time sampler")
FLOW_LOSSES: Registry = Registry("flow loss")
TIME_GRIDS: Registry = Registry("time grid")
SOLVERS: Registry = Registry("ODE solver")
POSTTRAIN_OBJECTIVES: Registry = Registry("post-training objective")
PERCEPTUAL_DISTANCES: Registry = Registry("perceptual distance")

REGISTRIES = {
    "backbone": BACKBONES,
    "quantizer": QUANTIZERS,
    "time_sampler": TIME_SAMPLERS,
    "flow_loss": FLOW_LOSSES,
    "time_grid": TIME_GRIDS,
    "solver": SOLVERS,
    "posttrain": POSTTRAIN_OBJECTIVES,
    "perceptual": PERCEPTUAL_DISTANCES,
}
