"""Modules that register your own components: importing them by name, recording them in saved models.

A component registered in your own module (``@flowmo.QUANTIZERS.register("my_vq")`` in
``my_pkg/vq.py``) is known once that module is imported. So:

- every ``flowmo`` command takes ``--import MODULE`` (repeatable), and a training config
  file can list ``imports: [my_pkg.vq]``; :func:`import_modules` imports them;
- :meth:`flowmo.FlowMo.save_pretrained` records in ``config.json`` (key ``"imports"``, absent
  when every component is built in) the modules that registered the model's non-built-in
  components (:func:`component_modules`);
- loading a folder whose component is unknown raises a ValueError naming the module(s) to
  import (:func:`unknown_component_message`). Loading never imports a module by itself: a
  ``config.json`` may come from anywhere, and importing runs the module's code.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Mapping
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ValidationError

from flowmo.registry import RegistryError, UnknownComponentError

__all__ = ["import_modules", "component_modules", "check_recorded_modules", "unknown_components",
           "unknown_component_message",
           "check_module_names", "add_import_argument", "IMPORTS_KEY"]

IMPORTS_KEY = "imports"
"""The key of ``config.json`` listing the modules that register a model's non-built-in components."""


def check_module_names(names: Any, what: str = "imports") -> list[str]:
    """``names`` as a list of dotted module names; TypeError / ValueError naming ``what`` otherwise.

    A module is named as Python imports it (``my_pkg.vq``), not by its file: a name ending in
    ``.py`` or holding a path separator is refused with the module name to write instead
    (``mygrid.py`` -> ``mygrid``, ``my_pkg/vq.py`` -> ``my_pkg.vq``)."""
    if not isinstance(names, (list, tuple)):
        raise TypeError(f"{what} must be a list of module names, got {type(names).__name__} {names!r}")
    for n in names:
        if isinstance(n, str) and (n.endswith(".py") or "/" in n or "\\" in n):
            module = ".".join(part for part in re.split(r"[/\\]+", n.removesuffix(".py")) if part not in ("", "."))
            raise ValueError(f"{what}: {n!r} is a file name; give the module name instead: {module} (drop the .py, "
                             "write folders as dots)")
        if not isinstance(n, str) or not n or not all(part.isidentifier() for part in n.split(".")):
            raise ValueError(f"{what}: {n!r} is not a module name (dotted Python identifiers, e.g. my_pkg.vq)")
    return list(dict.fromkeys(names))


def import_modules(names: Iterable[str], *, what: str = "--import") -> list[str]:
    """Import each module of ``names`` (in order), so that the components it registers are known.

    Modules are found as ``python -m`` finds them: installed, on PYTHONPATH, or in the current
    working directory. So that the ``flowmo`` console script (whose ``sys.path`` does not hold
    the current folder, unlike ``python -m flowmo``'s) and the Python API agree, the current
    folder is put at the front of ``sys.path`` (as ``python -m`` does) when ``names`` is not
    empty and ``sys.path`` holds neither it nor ``""``.

    Args:
        names: dotted module names (``my_pkg.vq``, not a file name such as ``vq.py``).
        what: how the caller names the argument in messages (``--import``, ``imports``).

    Returns:
        The names imported, without repeats.

    Raises:
        TypeError / ValueError: a name that is not a dotted module name.
        ValueError: a module that cannot be found (naming it and where Python looked).
        ImportError: importing the module raised an error (chained to it).
    """
    if names is None or isinstance(names, (str, bytes, Mapping)):  # a dict would be iterated as its keys
        raise TypeError(f"{what} must be a list of module names, got {type(names).__name__} {names!r}")
    mods = check_module_names(list(names), what)
    if mods:
        _search_current_folder()
    for name in mods:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            parents = {name.rsplit(".", k)[0] for k in range(name.count(".") + 1)}
            if e.name in parents:
                raise ValueError(f"{what} {name}: no module named {e.name!r}; install it or add it to PYTHONPATH") from None
            raise ImportError(f"{what} {name}: importing it failed: {e}") from e
        except RegistryError as e:
            raise ValueError(f"{what} {name}: a registration in it was refused: {e}") from e
        except Exception as e:
            raise ImportError(f"{what} {name}: importing it raised {type(e).__name__}: {e}") from e
    return mods


def _search_current_folder() -> None:
    """Put the current working directory at the front of ``sys.path`` unless it (or ``""``,
    which stands for it) is there: what ``python -m`` does at start-up."""
    try:
        cwd = os.getcwd()
    except OSError:  # the current folder was deleted
        return
    here = os.path.realpath(cwd)
    for entry in sys.path:
        if entry == "" or (isinstance(entry, str) and os.path.realpath(entry) == here):
            return
    sys.path.insert(0, cwd)
    importlib.invalidate_caches()


def add_import_argument(parser: Any) -> None:
    """Add ``--import MODULE`` (repeatable; ``args.imports``, default []) to an argparse parser."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="import this module first, so that the components it registers are known "
                             "(repeatable; a module name as Python imports it, e.g. --import my_pkg.vq for "
                             "my_pkg/vq.py: installed, on PYTHONPATH or in the current folder)")


def _component_specs(value: Any) -> Iterator[Any]:
    """Every component spec inside ``value`` (a spec, or containers of specs), outermost first."""
    from flowmo.spec import ComponentSpec

    if isinstance(value, ComponentSpec):
        yield value
    if isinstance(value, BaseModel):
        for _, v in value:
            yield from _component_specs(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _component_specs(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _component_specs(v)


def _registrations(spec: Any) -> Iterator[tuple[str, str, str]]:
    """``(kind, name, module)`` of every non-built-in registered component named in ``spec``, in
    order of appearance (``module`` ``"__main__"`` for one defined in a script or notebook)."""
    for s in _component_specs(spec):
        registry = type(s).registry
        if registry is not None and s.name in registry and not registry.get(s.name).builtin:
            yield registry.kind, s.name, registry.get(s.name).module


def component_modules(spec: Any) -> list[str]:
    """The modules that registered the non-built-in components named in ``spec`` (a FlowMoSpec
    or any spec), in order of appearance, without repeats; ``"__main__"`` included when a
    component was defined in a script or notebook."""
    return list(dict.fromkeys(module for _, _, module in _registrations(spec)))


def check_recorded_modules(spec: Any, recorded: list[str], source: str) -> None:
    """Check that the components ``spec`` names are registered by the modules ``source`` (a
    saved ``config.json``) records in its ``"imports"`` list, as when it was saved.

    A module may register a component under a built-in name (``replace=True``); without that
    module imported the built-in component of the same name would be built silently, with
    another meaning. So this raises ValueError naming the module(s) when:

    - a recorded module is not imported (``sys.modules``): import it first;
    - a component is registered now by a module the file does not record (e.g. the file was
      saved with the built-in ``pow`` grid and a module imported now replaced it);
    - a recorded module registers none of the spec's components now (another registration
      replaced its component since).

    Components defined in ``__main__`` (a script or notebook) are never recorded and not checked.
    """
    missing = [m for m in recorded if m not in sys.modules]
    if missing:  # else the component of the same name (a built-in one the module replaced) would be built
        raise ValueError(f"{source} records the module{'s' if len(missing) > 1 else ''} {', '.join(missing)} (in "
                         f"'imports'), not imported: import it first (Python: import {missing[0]}; flowmo commands: "
                         f"--import {missing[0]})")
    now = [(kind, name, module) for kind, name, module in _registrations(spec) if module != "__main__"]
    for kind, name, module in now:
        if module not in recorded:  # the name now means another component
            was = f"records {recorded}" if recorded else f"was saved with flowmo's built-in {kind} {name!r}"
            raise ValueError(f"{source}: its {kind} {name!r} is registered now by the module {module}, but the "
                             f"file {was}; load it where {module} is not imported")
    unused = [m for m in recorded if m not in {module for _, _, module in now}]
    if unused:  # another registration replaced them: the names now mean other components
        raise ValueError(f"{source} records the module(s) {', '.join(unused)} (in 'imports'), but none of its "
                         f"components is registered by them now; import {unused[0]} after the modules that replaced them")


def unknown_components(error: BaseException) -> list[UnknownComponentError]:
    """The unknown-name errors inside ``error`` (a pydantic ValidationError or the error itself)."""
    if isinstance(error, UnknownComponentError):
        return [error]
    found: list[UnknownComponentError] = []
    if isinstance(error, ValidationError):
        for item in error.errors():
            inner = (item.get("ctx") or {}).get("error")
            if isinstance(inner, UnknownComponentError):
                found.append(inner)
    return found


def unknown_component_message(unknown: list[UnknownComponentError], recorded: list[str], source: str) -> str:
    """Why ``source`` cannot be read: the components it names that are not registered, and the
    modules to import (``recorded``: those the file lists; else a general hint)."""
    names = ", ".join(f"{u.kind} {u.name!r}" for u in unknown)
    if recorded:
        first = recorded[0]
        return (f"{source} names the {names}, which {'is' if len(unknown) == 1 else 'are'} not registered. It lists "
                f"the module(s) that register its components: {', '.join(recorded)}. Import them first "
                f"(Python: import {first}; flowmo commands: --import {first}); flowmo does not import "
                "modules named in a file by itself")
    return (f"{source} names the {names}, which {'is' if len(unknown) == 1 else 'are'} not registered (and the file "
            "lists no module registering it). Import the module that registers it first (Python: import it; "
            "flowmo commands: --import MODULE); a component defined in a script or notebook must be registered "
            "again, or moved into an importable module")
