"""The block view: a block method's scores and the plan's removed blocks, in the centre of the window."""

from __future__ import annotations

from PySide6.QtGui import QColor

from secateur.app.block_view import PLAN, REMOVABLE, REMOVED, BlockView
from secateur.app.tree_model import NAME_ROLE
from secateur.app.window import MainWindow
from secateur.core.graph.blocks import BlockInfo, residual_blocks

TIMEOUT_MS = 600_000


def test_cka_layer_blocks_scores_and_removals_are_shown_in_the_centre(qtbot, window: MainWindow) -> None:
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.open("demo", "demo")
    assert window.centre.currentWidget() is window.heatmap  # l1 (a channel method) is the first method
    window.panel.picker.setCurrentText("cka-layer")
    assert window.centre.currentWidget() is window.block_view
    for name, value in (("samples", "64"), ("finetune_epochs", "0")):
        window.panel.set_param(name, value)
    with qtbot.waitSignal(window.job_done, timeout=TIMEOUT_MS):
        window.run_method()
    with qtbot.waitSignal(window.preview_done, timeout=TIMEOUT_MS):
        window.panel.target_kind.setCurrentIndex(2)  # "blocks"
        window.panel.target_blocks.setValue(2)
    window.draw_now()
    session, view = window.session, window.block_view
    removed = session.plan.blocks_removed
    assert len(removed) == 2
    expected = residual_blocks(session.model)  # found again, from the model itself
    assert list(view.items) == [block.name for block in expected]
    marked = [name for name, item in view.items.items() if item.text(PLAN) == "removed"]
    assert sorted(marked) == sorted(removed)
    assert all(view.items[name].background(0).color() == REMOVED for name in removed)
    assert all(item.background(0).color() != REMOVED for name, item in view.items.items() if name not in removed)
    scores = session.scores.blocks
    assert {name: float(view.items[name].text(1)) for name in scores} == {
        name: float(f"{value:.4g}") for name, value in scores.items()
    }
    fixed = [block for block in expected if not block.removable]
    assert fixed and all(view.items[b.name].text(REMOVABLE) == "no: projection shortcut" for b in fixed)
    unscored = [b.name for b in expected if b.removable and b.name not in scores]  # skip_first leaves layer1.0
    assert unscored and all(view.items[name].text(REMOVABLE) == "no: not scored" for name in unscored)
    for stage in {name.rpartition(".")[0] for name in view.items}:
        members = [name for name in view.items if name.rpartition(".")[0] == stage]
        free = [name for name in members if view.items[name].text(REMOVABLE) == "yes"]
        assert len(free) <= len(members) - 2  # a stage keeps min_stage_blocks (2): the rest say why not
    tip = view.items[removed[0]].toolTip(1)
    assert removed[0] in tip and f"{scores[removed[0]]:.4g}" in tip and "plan: removed" in tip
    assert "removable: yes" in tip
    assert f"removes 2 of {len(expected)} blocks" in view.title.text()
    view.table.itemClicked.emit(view.items[removed[-1]], 0)  # a click on a block selects it in the layer tree
    current = window.proxy.mapToSource(window.tree.currentIndex().siblingAtColumn(0))
    assert current.data(NAME_ROLE) == removed[-1]


def test_the_view_says_what_to_do_before_scores_and_marks_stages(qtbot) -> None:
    view = BlockView()
    qtbot.addWidget(view)
    blocks = [
        BlockInfo("layer1.0", True, "identity shortcut"),
        BlockInfo("layer1.1", True, "identity shortcut"),
        BlockInfo("layer2.0", False, "shortcut through a layer (downsampling or channel change)"),
    ]
    view.show_blocks(blocks, {}, ())
    assert "Run a block method" in view.title.text() and view.items["layer1.0"].text(1) == "—"
    view.show_blocks(blocks, {"layer1.1": 0.5}, (), complete=False)  # partial scores while the method runs
    assert view.items["layer1.0"].text(REMOVABLE) == "scoring…"
    assert view.items["layer1.1"].text(REMOVABLE) == "yes"
    view.show_blocks(blocks, {"layer1.0": 0.25, "layer1.1": 0.5}, ("layer1.1",))
    stage = view.table.topLevelItem(0)
    assert stage.text(0) == "layer1: 1 of 2 removed" and stage.isFirstColumnSpanned()
    assert view.table.topLevelItem(1).text(0) == "layer2: 1 kept"
    assert view.items["layer1.1"].text(PLAN) == "removed" and view.items["layer1.0"].text(PLAN) == "kept"
    assert view.items["layer2.0"].background(0).color() != QColor(REMOVED)
    tip = view.items["layer2.0"].toolTip(0)
    assert "removable: no: shortcut through a layer (downsampling or channel change)" in tip


def test_the_view_says_why_a_removable_block_cannot_go(qtbot) -> None:
    from secateur.core.pruning.plan import PlanOptions

    view = BlockView()
    qtbot.addWidget(view)
    blocks = [BlockInfo(f"stage.{i}", True, "identity shortcut") for i in range(4)]
    scores = {"stage.1": 0.3, "stage.2": 0.1, "stage.3": 0.2}  # stage.0 unscored
    view.show_blocks(blocks, scores, ("stage.2",), PlanOptions(min_stage_blocks=3, locked=("stage.3",)))
    texts = {name: item.text(REMOVABLE) for name, item in view.items.items()}
    assert texts == {
        "stage.0": "no: not scored",
        "stage.1": "no: its stage keeps 3",  # 4 blocks, 3 stay: only the least important may go
        "stage.2": "yes",
        "stage.3": "no: locked",
    }
    assert "--min-stage-blocks" in view.items["stage.1"].toolTip(0)
    assert "the method did not score it" in view.items["stage.0"].toolTip(0)
