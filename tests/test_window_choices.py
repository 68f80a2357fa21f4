"""Per-group locks and overrides from the tree's context menu: kept in the session, honoured by the plan."""

from __future__ import annotations

import math

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QInputDialog

from conftest import scored_window
from secateur.app.tree_model import COLUMNS, NAME_ROLE
from secateur.app.window import MainWindow
from secateur.core.pruning.plan import PlanOptions, Target

TIMEOUT_MS = 600_000
OVERRIDE = COLUMNS.index("override")
KEPT = COLUMNS.index("kept")


def _row(window: MainWindow, name: str):
    """The proxy index of a layer's row (what the user right-clicks)."""
    matches = window.tree_model.match(
        window.tree_model.index(0, 0), NAME_ROLE, name, 1, Qt.MatchFlag.MatchExactly | Qt.MatchFlag.MatchRecursive
    )
    assert matches, name
    return window.proxy.mapFromSource(matches[0])


def _menu_action(qtbot, window: MainWindow, layer: str, text: str) -> None:
    """Trigger the context menu entry starting with ``text`` on the layer's row, and wait for the new plan."""
    menu = window.tree.choices_menu(_row(window, layer))
    assert menu is not None, f"{layer}: no context menu"
    action = next(a for a in menu.actions() if a.text().startswith(text))
    assert action.isEnabled(), action.text()
    with qtbot.waitSignal(window.preview_done, timeout=TIMEOUT_MS):
        action.trigger()
    window.draw_now()


def _group(window: MainWindow):
    """A prunable group with enough channels that 0.3 and 0.5 keep different counts."""
    return next(g for g in window.session.tree.groups if g.prunable and g.channels >= 16)


def test_locking_a_group_from_the_menu_keeps_it_whole_and_the_column_says_so(qtbot, window: MainWindow) -> None:
    scored_window(qtbot, window)
    group = _group(window)
    layer = group.layers[0]
    assert len(window.session.plan.groups[group.id].kept) < group.channels  # pruned before the lock
    assert window.tree.header().isSectionHidden(OVERRIDE)  # no choices yet: no column
    _menu_action(qtbot, window, layer, "Lock group")
    plan = window.session.plan
    assert window.session.locked == {group.id}
    assert group.id not in plan.groups  # a locked group is left out of the plan: all its channels stay
    reference = window.session.workspace().plan(
        window.session.scored.scores, Target("ratio", 0.3), PlanOptions(locked=(group.id,))
    )
    assert {g: p.kept for g, p in plan.groups.items()} == {g: p.kept for g, p in reference.groups.items()}
    row = _row(window, layer)
    assert row.siblingAtColumn(OVERRIDE).data() == "locked"
    assert row.siblingAtColumn(KEPT).data() == f"{group.channels} / {group.channels}"
    assert not window.tree.header().isSectionHidden(OVERRIDE)
    menu = window.tree.choices_menu(row)
    assert menu.actions()[0].text() == f"Unlock group {group.id}"
    _menu_action(qtbot, window, layer, "Unlock group")
    assert window.session.locked == frozenset() and group.id in window.session.plan.groups
    assert window.tree.header().isSectionHidden(OVERRIDE) and row.siblingAtColumn(OVERRIDE).data() == ""


def test_an_override_prunes_its_group_at_its_own_ratio_until_cleared(qtbot, window: MainWindow, monkeypatch) -> None:
    scored_window(qtbot, window)
    group = _group(window)
    layer = [layer.name for layer in window.session.tree.layers if layer.group == group.id][-1]  # e.g. its BatchNorm
    monkeypatch.setattr(QInputDialog, "getDouble", lambda *args, **kwargs: (0.5, True))
    _menu_action(qtbot, window, layer, "Set prune ratio")
    assert window.session.overrides == {group.id: 0.5}
    kept = window.session.plan.groups[group.id].kept
    assert len(kept) == group.channels - math.floor(group.channels * 0.5)
    scores = window.session.scored.scores.groups[group.id]
    assert kept == sorted(scores.argsort(descending=True, stable=True)[: len(kept)].tolist())  # the best half
    row = _row(window, layer)
    assert row.siblingAtColumn(OVERRIDE).data() == "prune 50%"
    assert row.siblingAtColumn(KEPT).data() == f"{len(kept)} / {group.channels}"
    _menu_action(qtbot, window, layer, "Clear override")
    assert window.session.overrides == {}
    assert len(window.session.plan.groups[group.id].kept) == group.channels - math.floor(group.channels * 0.3)


def test_opening_another_model_clears_locks_and_overrides(qtbot, window: MainWindow) -> None:
    scored_window(qtbot, window)
    group = _group(window)
    window.set_locked(group.id, True)
    window.set_override(_group(window).id, 0.5)
    window.draw_now()
    assert not window.tree.header().isSectionHidden(OVERRIDE)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo", "demo")
    window.draw_now()
    assert window.session.locked == frozenset() and window.session.overrides == {}
    assert window.tree.header().isSectionHidden(OVERRIDE)
    texts = {window.tree_model.index(r, OVERRIDE).data() for r in range(window.tree_model.rowCount())}
    assert texts == {""}


def test_the_session_refuses_a_bad_ratio_and_an_unknown_group(qtbot, window: MainWindow) -> None:
    from secateur.core.common.errors import InputError

    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo-vgg", "demo")
    group = _group(window).id
    with pytest.raises(InputError, match=r"override .*=1.2: a ratio must be in \[0, 1\)"):
        window.session.set_override(group, 1.2)
    with pytest.raises(InputError, match="not a prunable group"):
        window.session.set_locked("no.such.layer")
    assert window.session.overrides == {} and window.session.locked == frozenset()
