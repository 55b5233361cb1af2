"""Spec rules stated as declarative constraints (pydantic Field) still give one clear line
naming the field, the rule and the value."""

from __future__ import annotations

import pytest

from flowmo.spec import FSQSpec, KnotsGridSpec, MMDiTSpec, SamplerSpec


@pytest.mark.parametrize("make, words", [
    (lambda: FSQSpec(levels=(8, 1)), r"levels\[1\]: input should be greater than or equal to 2, got 1"),
    (lambda: MMDiTSpec(width=32, heads=2, depth=1, axes_dim=(0, 8, 8)), r"axes_dim\[0\]: input should be greater than 0"),
    (lambda: MMDiTSpec(width=32, heads=2, depth=1, axes_dim=(4, 6, 8)), r"axes_dim \[4, 6, 8\] must be even and sum to "
                                                                         r"the head dim 16"),
    (lambda: KnotsGridSpec(times=(1.0,)), "times: tuple should have at least 2 items"),
    (lambda: SamplerSpec(guidance={"interval_sigma": [2.0, 1.0]}), r"interval_sigma must be a pair \[lo, hi\] of numbers "
                                                                    r"with 0 <= lo <= hi < inf"),
    (lambda: SamplerSpec.model_validate("nope"), "unknown sampler preset 'nope'; available: release, fast"),
])
def test_one_line_naming_the_field(make, words):
    with pytest.raises(ValueError, match=words) as e:
        make()
    assert "\n" not in str(e.value)
