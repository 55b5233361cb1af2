"""A griffe extension for the API reference: the package's docstrings use reST roles
(``:func:`~flowmo.blocks.patchify```, ``:class:`FlowMoSpec```), ``::`` before literal blocks
and simple tables (columns under rules of ``=``), which Markdown would print as running text.
Each role becomes a code span of its target (the last dotted part after ``~``, as Sphinx shows
it), a trailing ``::`` becomes ``:``, and a simple table is kept as preformatted text."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::$", re.M)
_RULE = re.compile(r"^\s*=+( +=+)+\s*$")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _tables(text: str) -> str:
    """Each reST simple table (three rule lines: top, under the header, bottom) fenced as text."""
    lines, out, rules = text.split("\n"), [], 0
    for line in lines:
        if _RULE.match(line):
            rules += 1
            if rules == 1:
                out.append("```text")
            out.append(line)
            if rules == 3:
                out.append("```")
                rules = 0
            continue
        out.append(line.replace("`", "") if rules else line)  # inside a table: roles as plain names
    return "\n".join(out) if rules == 0 else text  # an unclosed table: left as it was


def markdown_docstring(text: str) -> str:
    """``text`` with reST roles as code spans, a line-ending ``::`` as ``:`` and simple tables
    as preformatted text."""
    return _tables(_LITERAL.sub(r"\1:", _ROLE.sub(_role, text)))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring griffe loads with :func:`markdown_docstring`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
