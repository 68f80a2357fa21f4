"""The session's locks and overrides (no Qt): honoured by every plan, kept across steps while their group lives."""

from __future__ import annotations

from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.workflow.session import Session

METHODS = load_registry().methods


def test_locks_and_overrides_shape_the_plan_and_outlive_a_channel_step() -> None:
    session = Session.open("demo-vgg")  # no data: nothing is measured
    groups = [g for g in session.tree.groups if g.prunable and g.channels >= 16]
    locked, overridden = groups[0].id, groups[1].id
    seen: list[str] = []
    session.events.connect(lambda info: seen.append(info.signal.name))
    session.set_locked(locked)
    session.set_override(overridden, 0.75)
    assert seen == ["choices", "choices"]
    session.score(METHODS["l1"], {})
    plan = session.make_plan(Target("ratio", 0.25), PlanOptions())
    assert locked not in plan.groups
    total = groups[1].channels
    assert len(plan.groups[overridden].kept) == total - int(total * 0.75)
    session.apply(METHODS["l1"], {})
    assert session.locked == {locked} and session.overrides == {overridden: 0.75}  # the groups are still there
    session.score(METHODS["l1"], {})
    again = session.make_plan(Target("ratio", 0.25), PlanOptions())
    assert locked not in again.groups
    kept_after_first = total - int(total * 0.75)
    assert len(again.groups[overridden].kept) == kept_after_first - int(kept_after_first * 0.75)


def test_removing_a_block_drops_the_choices_on_its_groups_and_says_so() -> None:
    session = Session.open("demo")
    inside = next(g.id for g in session.tree.groups if g.prunable and g.id.startswith("layer1.1."))
    outside = next(g.id for g in session.tree.groups if g.prunable and g.id.startswith("layer3.1."))
    session.set_locked(inside)
    session.set_override(outside, 0.5)
    notices: list[str] = []
    session.events.notice.connect(notices.append)
    session.plan = PruningPlan("manual", Target("blocks", 1), {}, blocks_removed=("layer1.1",))
    session.apply(None, {})
    assert session.locked == frozenset() and session.overrides == {outside: 0.5}
    assert notices == [f"locks and overrides on {inside} were cleared: the model has no such group now"]
    session.undo()  # the step's groups are back; the dropped lock is not restored behind the user's back
    assert session.locked == frozenset() and session.overrides == {outside: 0.5}
