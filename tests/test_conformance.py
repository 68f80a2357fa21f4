"""Every built-in method passes the conformance kit that third-party plugins use."""

from __future__ import annotations

import pytest

from secateur.core.pruning.methods import MethodInfo, ParamSpec
from secateur.core.pruning.scoring import Scores
from secateur.core.testing import check_method


@pytest.mark.parametrize(
    ("method", "params"), [("random", {}), ("l1", {}), ("l2", {}), ("bn-scale", {}), ("taylor", {"batches": 1})]
)
def test_builtin_methods_conform(method: str, params: dict) -> None:
    report = check_method(method, params, model="demo-vgg")
    assert report.partial_results == report.scored_groups > 0
    assert report.params_after < report.params_before


def _all_at_once(context, params):
    return Scores(groups={g.id: g.channels * [1.0] for g in context.groups})


def test_the_kit_catches_a_method_that_ignores_cancellation() -> None:
    method = MethodInfo(id="stubborn", title="t", description="d", granularity="channel", score=_all_at_once)
    with pytest.raises(AssertionError, match="scoring ignored cancellation"):
        check_method(method, model="demo-vgg")


def test_the_kit_catches_a_parameter_that_accepts_anything() -> None:
    sloppy = ParamSpec("level", "int", 50, "a level", min=0, max=10)  # default outside its own range
    method = MethodInfo(
        id="sloppy", title="t", description="d", granularity="channel", params=(sloppy,), score=_all_at_once
    )
    with pytest.raises(AssertionError, match="the default of parameter level is refused"):
        check_method(method, model="demo-vgg")
