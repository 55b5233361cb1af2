"""What a registration must satisfy: a valid name, an explicit spec of the kind (defaulting its
``name``), a factory that takes the spec and the kind's wiring, and the test for "the same
definition again" (a re-run notebook cell, a reloaded module)."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Any

from .entry import MAX_NAME_LENGTH, RegistryError
from .words import _describe, _short

if TYPE_CHECKING:
    from .core import Registry

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,%d}" % (MAX_NAME_LENGTH - 1))


def _check_name(kind: str, name: Any) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(f"{kind} registry: name must be a non-empty string of letters, digits, '_' and '-' (at most "
                            f"{MAX_NAME_LENGTH}), got {_short(name, 40)}")


def _check_spec(registry: Registry, name: str, spec: Any) -> None:
    base = registry.spec_base
    if not isinstance(spec, type) or not issubclass(spec, base):
        # a kind declared with "package.module:Class" names its spec base where users import it
        declared = registry._spec_base
        path = declared.replace(":", ".") if isinstance(declared, str) else f"{base.__module__}.{base.__name__}"
        shown = spec.__name__ if isinstance(spec, type) else repr(spec)
        raise RegistryError(f"{registry.kind} {name!r}: spec {shown} must be a subclass of {path}")
    default = spec.model_fields["name"].default if "name" in spec.model_fields else None
    if default != name:
        raise RegistryError(f"{registry.kind} {name!r}: {spec.__name__}.name defaults to {default!r}; it must default to {name!r}")


def _check_takes_spec(registry: Registry, name: str, obj: Any, spec: type) -> None:
    """An explicit spec: ``build`` calls ``obj(spec, **wiring)``; refuse a factory that cannot take that."""
    sig = _signature(registry.kind, name, obj)
    try:
        sig.bind(object(), **{w: None for w in registry.wiring})
    except TypeError as e:
        wiring = "".join(f", {w}=..." for w in registry.wiring)
        raise RegistryError(f"{registry.kind} {name!r}: registered with spec={spec.__name__}, {_describe(obj)} is called as "
                            f"{getattr(obj, '__name__', 'factory')}(spec{wiring}), but it takes {sig} ({e}): make spec its first "
                            "positional argument") from None


def _signature(kind: str, name: str, obj: Any) -> inspect.Signature:
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"{kind} {name!r}: cannot read the arguments of {_describe(obj)} ({e})") from None


def _same_definition(a: Any, b: Any) -> bool:
    """``b`` is ``a`` defined again (a re-run notebook cell, a reloaded module): same module and
    qualified name, not a lambda or a nested function (whose names are not unique)."""
    qa, qb = getattr(a, "__qualname__", None), getattr(b, "__qualname__", None)
    if not qa or qa != qb or "<" in qa:
        return False
    return getattr(a, "__module__", None) == getattr(b, "__module__", None)
