"""An mkdocs hook that generates reference text from the code when the site is built, so the
documentation says what the code does:

- a line ``<!-- fields: package.module.Class prefix. -->`` becomes the reference of that pydantic
  config class (every field's dotted name, type, default, bounds and description; nested
  sections follow as their own tables);
- a line ``<!-- cli-help: COMMAND -->`` becomes ``flowmo COMMAND --help``'s text."""

from __future__ import annotations

import importlib
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

sys.path.insert(0, str(Path(__file__).parent))
from sphinx_roles import markdown_docstring  # noqa: E402  (beside this file)

_MARKER = re.compile(r"^<!-- fields: ([\w.]+) ([\w.]*) -->$", re.M)
_BOUNDS = (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<="))


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type(args[0])}"
        return "(" + ", ".join(_type(a) for a in args) + ")"
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: Any) -> str:
    out = []
    for item in field.metadata:
        for attr, word in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                out.append(f"{word} {value:g}" if isinstance(value, float) else f"{word} {value}")
    return ", ".join(out)


def _json(value: Any) -> str:
    """A default as a YAML/JSON config writes it (null, true, [0.9, 0.95])."""
    return json.dumps(value.model_dump(mode="json") if isinstance(value, BaseModel) else value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _anchor(root: str, path: str) -> str:
    return f"{root}-{path}".replace(".", "-").lower()


def _tables(cls: type[BaseModel], prefix: str, root: str) -> list[str]:
    rows, nested = [], []
    for name, field in cls.model_fields.items():
        path = f"{prefix}{name}"
        section = field.annotation if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) else None
        if section is not None and field.default_factory is section:
            nested.append((section, path))
            rows.append(f"| `{path}` | section | | | [`{path}`](#{_anchor(root, path)}) below |")
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        elif field.default_factory is not None:
            default = f"`{_json(field.default_factory())}`"
        else:
            default = f"`{_json(field.default)}`"
        rows.append(f"| `{path}` | {_cell(_type(field.annotation))} | {_cell(default)} | {_bounds(field)} | "
                    f"{_cell(field.description or '')} |")
    out = ["| field | type | default | bounds | meaning |", "|---|---|---|---|---|", *rows, ""]
    for section, path in nested:
        doc = markdown_docstring(" ".join((section.__doc__ or "").split()))
        out += [f"#### `{path}` {{#{_anchor(root, path)}}}", "", doc, ""] + _tables(section, f"{path}.", root)
    return out


def _reference(match: re.Match) -> str:
    module, _, name = match.group(1).rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return "\n".join(_tables(cls, match.group(2), name))


_CLI = re.compile(r"^<!-- cli-help: ([\w-]+) -->$", re.M)


def _cli_help(match: re.Match) -> str:
    """``flowmo <command> --help`` as the command prints it, 100 columns wide."""
    import contextlib
    import io
    import os

    from flowmo.cli import main

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            status = main([match.group(1), "--help"])
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before
    if status != 0:
        raise RuntimeError(f"flowmo {match.group(1)} --help exited with status {status}")
    return "```text\n" + buffer.getvalue().rstrip() + "\n```"


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    return _CLI.sub(_cli_help, _MARKER.sub(_reference, markdown))
