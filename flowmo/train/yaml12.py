"""YAML as the training configuration reads it (config files and ``--set`` values): PyYAML's
safe loader with YAML 1.2 (core schema) booleans, integers and floats (:func:`parse_yaml`).
Importable from :mod:`flowmo.train.config` too."""

from __future__ import annotations

import re
from typing import Any

import yaml

__all__ = ["parse_yaml"]


class _Yaml12BoolLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 (core schema) booleans, integers and floats (see parse_yaml)."""


_YAML_SCALARS = ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Yaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in _YAML_SCALARS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
# YAML 1.2 integers: decimal (a leading zero is still decimal: 010 is 10; '_' may group digits,
# as PyYAML allows), 0o octal, 0x hexadecimal. No YAML 1.1 octal (0777), binary (0b101) or
# base 60 (1:00): those stay strings, which a number field refuses.
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9][0-9_]*|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
# YAML 1.2 floats: a dot and/or an exponent (1.5, .5, -.5, 1e-3, 5E+2), .inf, .nan; no base 60
_Yaml12BoolLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = loader.construct_scalar(node).replace("_", "")
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # 010 -> 10 (YAML 1.1 read it as octal 8)


_Yaml12BoolLoader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)


def parse_yaml(text: str) -> Any:
    """Parse config YAML (files and ``--set`` values) with YAML 1.2 (core schema) scalars
    instead of PyYAML's YAML 1.1 rules:

    - booleans: ``true``/``false`` only (``on``/``off``/``yes``/``no`` stay strings; YAML 1.1
      would turn ``autocast: off`` into ``False`` and fail validation);
    - integers: decimal, and a leading zero does not make octal (``010`` is 10, ``0777`` is
      777; YAML 1.1 read them as 8 and 511); ``0o17`` is octal and ``0x10`` hexadecimal (16),
      as in YAML 1.2; ``_`` may group digits (``100_000``); base 60 (``1:00``, YAML 1.1's 60)
      and ``0b101`` stay strings, which number fields refuse;
    - floats: ``1e-3`` and ``-.5`` are floats (YAML 1.1 reads them as strings), ``1:30.5`` is
      a string.
    """
    return yaml.load(text, Loader=_Yaml12BoolLoader)


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A one-line description of a YAML error."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if not problem:
        return " ".join(str(e).split())
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem


def read_config_source(source: Any, sections: str) -> dict:
    """The raw mapping of a training config: ``source`` a path (str or os.PathLike) of a
    ``.yaml``/``.yml``/``.json`` file, a dict (returned as is), or None (an empty config).
    ``sections`` names the sections the file must hold, for the message (e.g. "'model' and 'train'").

    Raises TypeError for another kind of ``source``, FileNotFoundError / IsADirectoryError for a
    missing file / a folder, ValueError for a file that is not UTF-8, not valid JSON / YAML, or
    does not hold a mapping."""
    import json
    import os
    from pathlib import Path

    if source is None:
        return {}
    if isinstance(source, dict):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a config file path (str or pathlib.Path), a dict or None, "
                        f"got {type(source).__name__} {source!r}")
    p = Path(source)
    if p.is_dir():
        raise IsADirectoryError(f"config file {str(p)!r} is a folder, not a file")
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        raw = json.loads(text) if p.suffix == ".json" else parse_yaml(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"config file {str(p)!r} is not valid JSON ({e.msg} at line {e.lineno}, "
                         f"column {e.colno})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"config file {str(p)!r} is not valid YAML ({_yaml_problem(e)})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{p} must hold a mapping with {sections} sections")
    return raw
