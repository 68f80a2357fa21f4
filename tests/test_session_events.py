"""The evented core Session (no Qt): what each change announces, what it clears, and in which order."""

from __future__ import annotations

import copy

import pytest
import torch

from secateur.core.common.errors import Cancelled
from secateur.core.common.progress import Progress
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.testing import state_hash
from secateur.core.workflow.session import Session

METHODS = load_registry().methods


def _recorded(session: Session) -> list[str]:
    seen: list[str] = []
    session.events.connect(lambda info: seen.append(info.signal.name))
    return seen


@pytest.fixture(scope="module")
def opened() -> Session:
    return Session.open("demo-vgg")  # no data: nothing is measured, so each step is fast


@pytest.fixture
def session(opened: Session) -> Session:
    fresh = copy.copy(opened)
    fresh.events = type(opened.events)()
    fresh.history = []
    return fresh


def test_switching_method_clears_another_methods_scores_and_plan_and_says_so(session: Session) -> None:
    session.score(METHODS["l1"], {})
    session.make_plan(Target("ratio", 0.3), PlanOptions())
    seen = _recorded(session)
    notices: list[str] = []
    session.events.notice.connect(notices.append)
    assert session.select_method("l1") is None and seen == []  # the same method keeps its scores
    message = session.select_method("taylor")
    assert session.scores is None and session.plan is None
    assert {"scores", "plan", "notice"} <= set(seen)
    assert notices == [message] and "l1's scores, plan and heatmaps were cleared" in message


def test_changing_device_clears_scores_plan_and_measurements(session: Session) -> None:
    session.score(METHODS["l1"], {})
    message = session.set_device(torch.device("cpu", 0))
    assert message is not None and "device cpu:0" in message
    assert session.scores is None and session.plan is None and session.metrics_after is None


def test_partial_scores_are_announced_as_new_objects_while_a_method_runs(session: Session) -> None:
    sizes: list[int] = []
    objects: list[object] = []  # the snapshots themselves: the id of a freed one can be reused

    def watch() -> None:
        scores = session.scores
        if scores is not None:
            sizes.append(len(scores.groups))
            objects.append(scores)

    session.events.scores.connect(watch)
    session.score(METHODS["l1"], {})
    groups = len(session.scores.groups)
    assert sizes == [*range(1, groups + 1), groups]  # one announcement per group, then the final scores
    assert len({id(snapshot) for snapshot in objects[:-1]}) == groups  # a reader never sees a snapshot change


def test_apply_announces_the_new_model_and_tree_then_undo_restores_both(session: Session) -> None:
    session.score(METHODS["l1"], {})
    session.make_plan(Target("ratio", 0.5), PlanOptions())
    original, original_tree = session.model, session.tree
    seen = _recorded(session)
    trees = []
    session.events.model.connect(lambda: trees.append(session.tree))
    session.apply(METHODS["l1"], {})
    assert {"model", "scores", "plan", "history", "metrics"} <= set(seen)
    assert trees == [session.tree] and session.tree.params == sum(p.numel() for p in session.model.parameters())
    assert session.tree.params < original_tree.params and session.scores is None and session.plan is None
    assert session.undo() and session.model is original and session.tree is original_tree


def test_cancelled_measurements_after_a_step_undo_the_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A step whose measurements are cancelled is undone, so 'cancelled; nothing was changed' stays true."""
    from secateur.core.data.loading import load_data

    session = Session.open("demo-vgg")
    session.data = load_data("demo")
    session.data.train = session.data.train.subset(list(range(128)))
    before = state_hash(session.model)
    calls = {"count": 0}

    def cancel_in_measurement() -> bool:  # training has 1 step; cancel once the measurements start
        return calls["count"] > 0

    def report(stage: str, done: int, total: int) -> None:
        if stage.startswith("evaluate test"):
            calls["count"] += 1

    with pytest.raises(Cancelled):
        session.recalibrate(Progress(report=report, cancelled=cancel_in_measurement))
    assert not session.history and state_hash(session.model) == before


def test_a_training_method_draws_its_loss_curve_through_the_session() -> None:
    """PAAM reports its loss per step while it scores; the session keeps the curve over epochs and announces it."""
    session = Session.open("demo-vgg", "demo")
    announced: list[int] = []
    session.events.training.connect(lambda: announced.append(len(session.training.steps)))
    session.score(METHODS["paam"], {"epochs": 2, "max_steps": 3})
    steps = session.training.steps
    assert [step for step, _ in steps] == [1, 2, 3, 4, 5, 6] and session.training.steps_per_epoch == 3
    assert all(loss > 0 for _, loss in steps)
    assert announced[0] == 0 and announced[1:] == [1, 2, 3, 4, 5, 6]  # reset first, then one event per step
