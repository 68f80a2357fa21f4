"""A method may take over the apply step: it gets its scoring state and a frozen plan, and returns an Applied."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace

import pytest
import torch

from secateur.core.api import Applied, GroupPlan, MethodInfo, Scored, Scores, Target, apply_plan
from secateur.core.common.errors import InputError, WorkError
from secateur.core.model.demo_architectures import DemoVGG
from secateur.core.pruning.workspace import Workspace


def _score(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: torch.arange(group.channels, dtype=torch.float32)})
    return {"learned": "while scoring"}


def test_apply_gets_the_plan_and_the_state_scoring_returned() -> None:
    seen = []

    def apply(context, plan, params, scored):
        seen.append((plan, params, scored.state))
        pruned, edits = apply_plan(context.model, plan, context.example)
        return Applied(pruned, edits, plan, ["a note from apply"])

    method = MethodInfo(id="ordered", title="t", description="d", granularity="channel", score=_score, apply=apply)
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    scored = workspace.score(method)
    assert isinstance(scored, Scored) and scored.state == {"learned": "while scoring"}
    plan = workspace.plan(scored.scores, Target("ratio", 0.25))
    applied = workspace.apply(plan, method, {}, scored)
    assert seen == [(plan, {}, {"learned": "while scoring"})] and applied.edits[0]["kind"] == "prune_channels"
    assert applied.model.features[0].out_channels == 24
    assert plan.groups["features.0"].kept == list(range(8, 32))  # the highest-scored channels stay
    assert applied.plan.notes[-1] == "a note from apply" and "a note from apply" not in plan.notes


def test_a_plan_cannot_be_mutated_and_a_changed_plan_is_returned_as_the_effective_one() -> None:
    def apply(context, plan, params, scored):
        with pytest.raises(TypeError):
            plan.groups["features.0"] = GroupPlan([0], 32)
        with pytest.raises(FrozenInstanceError):
            plan.groups["features.0"].total = 3
        plan.groups["features.0"].kept.append(0)  # a copy: the plan keeps its own
        with pytest.raises(FrozenInstanceError):
            plan.notes = ("changed",)
        smaller = replace(plan, groups={**plan.groups, "features.0": GroupPlan(range(16), 32)})
        pruned, edits = apply_plan(context.model, smaller, context.example)
        return Applied(pruned, edits, smaller)

    method = MethodInfo(id="thresholded", title="t", description="d", granularity="channel", score=_score, apply=apply)
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    scored = workspace.score(method)
    plan = workspace.plan(scored, Target("ratio", 0.25))
    applied = workspace.apply(plan, method, {}, scored)
    assert len(plan.groups["features.0"].kept) == 24  # the given plan is as it was
    assert len(applied.plan.groups["features.0"].kept) == 16 == applied.model.features[0].out_channels


def test_a_takeover_returning_the_wrong_type_is_reported() -> None:
    method = MethodInfo(
        id="broken", title="t", description="d", granularity="channel", score=_score, apply=lambda c, p, q, s: "nope"
    )
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    scored = workspace.score(method)
    plan = workspace.plan(scored, Target("ratio", 0.25))
    with pytest.raises(WorkError, match=r"method broken: apply must return an Applied, got str"):
        workspace.apply(plan, method, {}, scored)
    with pytest.raises(InputError, match="applies its own plan from its scores: score with it first"):
        workspace.apply(plan, method, {})
    good = replace(method, apply=None)
    assert workspace.apply(plan, good, {}).model.features[0].out_channels == 24


def test_a_method_that_raises_is_reported_with_its_traceback() -> None:
    def broken(context, params):
        yield from ()
        raise ValueError("division by the wrong thing")

    method = MethodInfo(id="buggy", title="t", description="d", granularity="channel", score=broken)
    workspace = Workspace(DemoVGG(), (3, 32, 32))
    with pytest.raises(WorkError, match=r"(?s)method buggy failed while scoring:.*ValueError: division by the wrong"):
        workspace.score(method)
    again = replace(method, id="ok", score=_score)
    assert workspace.score(again).scores.groups  # the host keeps working
