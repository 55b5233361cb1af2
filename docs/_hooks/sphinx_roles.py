"""A griffe extension for the API reference: the package's docstrings use reST roles
(``:func:`~flowmo.blocks.patchify```, ``:class:`FlowMoSpec```) and ``::`` before literal
blocks, which Markdown would print as they are. Each role becomes a code span of its target
(the last dotted part after ``~``, as Sphinx shows it) and a trailing ``::`` becomes ``:``."""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|exc|obj|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(\S)::$", re.M)


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def markdown_docstring(text: str) -> str:
    """``text`` with reST roles as code spans and a line-ending ``::`` as ``:``."""
    return _LITERAL.sub(r"\1:", _ROLE.sub(_role, text))


class SphinxRoles(griffe.Extension):
    """Rewrites every docstring griffe loads with :func:`markdown_docstring`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
