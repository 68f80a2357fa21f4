"""A method may take over the apply step; what it returns is checked."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from secateur.core.demo.architectures import DemoVGG
from secateur.core.errors import WorkError
from secateur.core.methods import MethodInfo
from secateur.core.plan import Target
from secateur.core.scoring import Scores
from secateur.core.surgery import apply_plan
from secateur.core.workspace import Workspace


def _score(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: torch.arange(group.channels, dtype=torch.float32)})


def test_apply_takeover_is_called_with_the_plan() -> None:
    seen = []

    def apply(context, plan, params):
        seen.append((plan, params))
        return apply_plan(context.model, plan, context.example)

    method = MethodInfo(id="ordered", title="t", description="d", granularity="channel", score=_score, apply=apply)
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    plan = workspace.plan(workspace.score(method), Target("ratio", 0.25))
    pruned, edits = workspace.apply(plan, method, {})
    assert seen == [(plan, {})] and edits[0]["kind"] == "prune_channels"
    assert pruned.features[0].out_channels == 24
    assert plan.groups["features.0"].kept == list(range(8, 32))  # the highest-scored channels stay


def test_a_takeover_returning_the_wrong_type_is_reported() -> None:
    method = MethodInfo(
        id="broken", title="t", description="d", granularity="channel", score=_score, apply=lambda c, p, q: "nope"
    )
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    plan = workspace.plan(workspace.score(method), Target("ratio", 0.25))
    with pytest.raises(WorkError, match=r"method broken: apply must return \(model, edits\), got str"):
        workspace.apply(plan, method, {})
    good = replace(method, apply=None)
    assert workspace.apply(plan, good, {})[0].features[0].out_channels == 24


def test_a_method_that_raises_is_reported_with_its_traceback() -> None:
    def broken(context, params):
        yield from ()
        raise ValueError("division by the wrong thing")

    method = MethodInfo(id="buggy", title="t", description="d", granularity="channel", score=broken)
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    with pytest.raises(WorkError, match=r"(?s)method buggy failed while scoring:.*ValueError: division by the wrong"):
        workspace.score(method)
    again = replace(method, id="ok", score=_score)
    assert workspace.score(again).groups  # the host keeps working
