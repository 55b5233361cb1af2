"""The suite gives the same verdict on a loaded machine as on an idle one: no test fails for being
slow, and property tests draw the same examples on every run (see tests/conftest.py)."""

import ast
from pathlib import Path

from hypothesis import HealthCheck, settings

TESTS = Path(__file__).parent


def _calls(name: str):
    """(file, node) of every call to ``name`` (``f(...)`` or ``x.f(...)``) in the test sources."""
    for f in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call):
                fn = node.func
                called = fn.attr if isinstance(fn, ast.Attribute) else getattr(fn, "id", None)
                if called == name:
                    yield f, node


def test_the_default_hypothesis_profile_has_no_timing_limit_and_fixed_examples():
    assert settings.default.deadline is None
    assert HealthCheck.too_slow in settings.default.suppress_health_check
    assert settings.default.derandomize and settings.default.database is None


def test_no_property_test_sets_a_deadline_or_random_draws():
    bad = []
    for f, node in _calls("settings"):
        for kw in node.keywords:
            value = ast.unparse(kw.value)
            if kw.arg == "deadline" and value != "None":
                bad.append(f"{f.name}:{node.lineno} deadline={value}")
            if kw.arg == "derandomize" and value == "False":
                bad.append(f"{f.name}:{node.lineno} derandomize=False")
    assert not bad, bad


def test_no_fixed_sleep_outside_a_polling_loop():
    """A constant ``time.sleep`` is allowed only as the polling interval of a ``while`` loop that
    waits for an event; a sleep that stands for "long enough" is what a loaded machine misses."""
    bad = []
    for f in sorted(TESTS.rglob("*.py")):
        tree = ast.parse(f.read_text())
        in_while = {id(n) for w in ast.walk(tree) if isinstance(w, ast.While) for n in ast.walk(w)}
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "sleep"
                    and node.args and isinstance(node.args[0], ast.Constant) and id(node) not in in_while):
                bad.append(f"{f.name}:{node.lineno} {ast.unparse(node)}")
    assert not bad, bad
