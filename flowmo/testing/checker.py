"""The kit's machinery, shared by every check: :class:`_Checker` runs named properties under
hypothesis and turns each failure into an ``AssertionError`` naming the property; small helpers
compare tensors, describe mismatches and build the component under test.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor

from ..registry import with_article


def _hypothesis():
    try:
        import hypothesis
        from hypothesis import strategies as st
    except ImportError as e:  # pragma: no cover - exercised only without hypothesis
        raise ImportError(
            "flowmo.testing needs the 'hypothesis' package for its property-based checks: "
            "pip install hypothesis  (or: pip install 'flowmo[test]')"
        ) from e
    return hypothesis, st


class _Checker:
    """Runs named properties under hypothesis and turns every failure into an AssertionError."""

    def __init__(self, kind: str, max_examples: int):
        if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
            raise ValueError(f"max_examples must be a positive int, got {max_examples!r}")
        self.hyp, self.st = _hypothesis()
        self.kind = kind
        self.max_examples = max_examples
        self.report: dict[str, int] = {}

    def message(self, name: str, detail: str) -> str:
        return f"{self.kind}: property {name!r} failed: {detail}"

    def fail(self, name: str, detail: str) -> None:
        raise AssertionError(self.message(name, detail))

    def run(self, name: str, strategy: Any, body: Callable[[Any], None],
            max_examples: Optional[int] = None, examples: Sequence[Any] = ()) -> None:
        """Run ``body(example)`` on ``examples`` (explicit ones, run first: e.g. a large input
        that every property must see, however few examples are drawn), then on
        ``max_examples`` examples drawn from ``strategy``."""
        hyp = self.hyp
        self.report[name] = 0
        prefix = self.message(name, "")

        def prop(example):
            self.report[name] += 1
            try:
                body(example)
            except AssertionError as e:
                if str(e).startswith(prefix):
                    raise
                raise AssertionError(self.message(name, str(e) or type(e).__name__)) from e
            except Exception as e:  # an error inside the component is a failure of this property
                raise AssertionError(self.message(name, f"raised {type(e).__name__}: {e}")) from e

        prop.__name__ = prop.__qualname__ = f"{self.kind}_{name}"
        settings = hyp.settings(
            max_examples=max_examples or self.max_examples,
            deadline=None,
            derandomize=True,
            database=None,
            report_multiple_bugs=False,
            suppress_health_check=list(hyp.HealthCheck),
            print_blob=False,
            # no shrinking: the inputs come from seeds, and shrinking a broken component's
            # failure can take far longer than finding it
            phases=(hyp.Phase.explicit, hyp.Phase.generate),
        )
        test = hyp.given(strategy)(prop)
        for ex in reversed(examples):  # hypothesis runs the outermost @example first
            test = hyp.example(ex)(test)
        test = settings(test)
        try:
            test()
        except AssertionError as e:
            notes = getattr(e, "__notes__", None)
            if notes:  # hypothesis' notes print the failing example whole: a large input tensor buries the message
                e.__notes__ = [n for n in notes if len(n) <= 400]
            raise
        except self.hyp.errors.Flaky as e:  # an example failed, then passed when hypothesis ran it again
            inner = [x for x in getattr(e, "exceptions", ()) if isinstance(x, BaseException)]
            detail = str(inner[0]) if inner else str(e)
            detail = detail[len(prefix):] if detail.startswith(prefix) else detail
            raise AssertionError(self.message(
                "deterministic", f"non-deterministic: while checking {name!r}, an example failed and then passed "
                                 f"when run again with the same input (the first failure: {detail})")) from None
        except Exception as e:  # hypothesis' own errors
            raise AssertionError(self.message(name, f"{type(e).__name__}: {e}")) from e

    def once(self, name: str, body: Callable[[], None]) -> None:
        """A property checked on one fixed case."""
        self.run(name, self.st.just(None), lambda _: body(), max_examples=1)


def _mismatch(a: Tensor, b: Tensor) -> str:
    """Describe the first position where a and b differ."""
    a, b = a.detach().cpu(), b.detach().cpu()
    if a.shape != b.shape:
        return f"shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    diff = (a != b) if not a.is_floating_point() else ~torch.isclose(a.double(), b.double(), rtol=0, atol=0,
                                                                      equal_nan=True)
    idx = diff.nonzero()
    if not len(idx):
        return "no mismatch"
    pos = tuple(int(i) for i in idx[0])
    return f"{int(diff.sum())} of {diff.numel()} entries differ, first at {pos}: {a[pos].item()!r} vs {b[pos].item()!r}"


def _shape(x: Any) -> Any:
    """A tensor's shape as a tuple, or the type name of anything else (for messages)."""
    return tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal shapes and values, NaN equal to NaN (a NaN in both is not non-determinism)."""
    a, b = a.detach(), b.detach()
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    same = a == b
    if a.is_floating_point():
        same = same | (a.isnan() & b.isnan())
    return bool(same.all())


def _instance(make: Any, cls: type, what: str) -> Any:
    """``make`` if it is a ``cls``, else ``make()`` (a zero-argument factory) checked to be one."""
    obj = make
    if not isinstance(make, cls) and callable(make) and not isinstance(make, torch.nn.Module):
        try:
            inspect.signature(make).bind()
        except TypeError:
            pass  # not a zero-argument factory: reported below
        except ValueError:
            obj = make()  # a builtin without a signature
        else:
            obj = make()
    if not isinstance(obj, cls):
        raise AssertionError(f"{what}: expected {with_article(f'{cls.__module__}.{cls.__qualname__}')} (or a "
                             f"zero-argument factory returning one), got {type(obj).__name__}")
    return obj
