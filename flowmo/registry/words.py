"""How the registries name things in their messages: "a quantizer" / "an LFQ", and a factory by
its module and qualified name."""

from __future__ import annotations

from typing import Any


_VOWEL_LETTERS = set("AEFHILMNORSX")  # letters whose names begin with a vowel sound ("an FSQ", "an LFQ")


def with_article(noun: str) -> str:
    """``noun`` with its indefinite article: "a quantizer", "an ODE solver", "an LFQ", "an
    FSQSpec", "an entropy group" (a word starting with two capitals is read letter by letter)."""
    noun = str(noun)
    word = noun.split(" ", 1)[0].split(".", 1)[0]
    if not word:
        return f"a {noun}"
    if len(word) > 1 and word[0].isupper() and word[1].isupper():
        vowel = word[0] in _VOWEL_LETTERS
    else:
        low = word.lower()
        vowel = low[0] in "aeio" or low.startswith("un") and not low.startswith("uni")
    return f"{'an' if vowel else 'a'} {noun}"


def _describe(obj: Any) -> str:
    module = getattr(obj, "__module__", None)
    qual = getattr(obj, "__qualname__", None) or repr(obj)
    return f"{module}.{qual}" if module else qual


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut after ``limit`` characters (the full length said)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"
