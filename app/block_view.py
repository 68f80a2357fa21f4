"""The block view: every residual block of the model by stage, its score, whether it can go, and the plan's cut.

Block methods (cka-layer) remove whole residual blocks rather than channels,
so the window shows this view in the centre instead of the channel heatmap.
It redraws from the session's layer tree (the blocks and why a block is not
removable), its block scores and its plan (the blocks removed); it keeps no
state of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from PySide6.QtCore import Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QLabel, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget

from secateur.core.graph.blocks import BlockInfo, stage_of
from secateur.core.pruning.plan import PlanOptions, rank_blocks
from secateur.core.pruning.scoring import Scores

COLUMNS = ("block", "score", "plan", "removable")  # the reason last: it elides in a narrow centre
PLAN, REMOVABLE = COLUMNS.index("plan"), COLUMNS.index("removable")
REMOVED = QColor("#f5b7b1")  # a block the plan removes
FIXED = QColor("#e5e7e9")  # a block that cannot be removed
EMPTY = "Run a block method (cka-layer) to score the residual blocks; then the plan's removals show here."
LEGEND = "red: removed by the plan · grey: cannot be removed (its shortcut goes through a layer) · hover for details"


def _removable(
    block: BlockInfo, scores: Mapping[str, float], may_go: set[str], options: PlanOptions, complete: bool
) -> str:
    """Whether the block can go, and if not, why: its shortcut, a lock, no score, or its stage's minimum."""
    if not block.removable:
        return "no: projection shortcut"  # a layer on the shortcut (the tooltip gives the whole reason)
    if block.name in options.locked:
        return "no: locked"
    if scores and block.name not in scores:
        return "no: not scored" if complete else "scoring…"
    if complete and scores and block.name not in may_go:
        return f"no: its stage keeps {options.min_stage_blocks}"
    return "yes"


def _tip(block: BlockInfo, score: float | None, removable: str, removed: bool) -> str:
    if not block.removable:
        removable = f"no: {block.reason}"  # the cell shows it shortened
    elif removable == "no: not scored":
        removable = "no: the method did not score it"
    elif removable.startswith("no: its stage"):
        removable += " residual blocks (--min-stage-blocks): a cheaper block of its stage goes first"
    lines = [
        f"block {block.name}",
        f"score {score:.4g} (higher: removing it changes the features more)" if score is not None else "not scored",
        f"removable: {removable} ({block.reason})" if removable == "yes" else f"removable: {removable}",
        "plan: removed" if removed else "plan: kept",
    ]
    return "\n".join(lines)


class BlockView(QWidget):
    """A tree of stages and their blocks; rows the plan removes are red and say "removed"."""

    block_clicked = Signal(str)  # a block's module path (the window selects its row in the layer tree)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.title = QLabel(EMPTY)
        self.title.setWordWrap(True)
        self.legend = QLabel(LEGEND)
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("color: #566573")
        self.table = QTreeWidget()
        self.table.setHeaderLabels(list(COLUMNS))
        self.table.setRootIsDecorated(True)
        self.table.setIndentation(12)
        self.table.setUniformRowHeights(True)
        header = self.table.header()
        header.setStretchLastSection(False)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(REMOVABLE, QHeaderView.ResizeMode.Stretch)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.title)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.legend)
        self.items: dict[str, QTreeWidgetItem] = {}  # block name → its row
        self.table.itemClicked.connect(
            lambda item, _: item.parent() is not None and self.block_clicked.emit(item.text(0))
        )

    def show_blocks(
        self,
        blocks: Iterable[BlockInfo],
        scores: Mapping[str, float],
        removed: Iterable[str],
        options: PlanOptions | None = None,
        complete: bool = True,
    ) -> None:
        """Redraw: the model's blocks by stage, their scores, why a block cannot go, and the plan's removed ones.

        ``complete`` is False while the method still scores: unscored blocks are waiting, not left out.
        """
        blocks, cut, options = list(blocks), set(removed), options or PlanOptions()
        may_go = set(rank_blocks(blocks, Scores(blocks=dict(scores)), options)[0]) if scores else set()
        self.table.clear()
        self.items = {}
        stages: dict[str, QTreeWidgetItem] = {}
        for block in blocks:
            stage = stage_of(block.name) or "(model)"
            if stage not in stages:
                stages[stage] = QTreeWidgetItem(self.table, [stage])
                stages[stage].setFirstColumnSpanned(True)  # "layer2: 1 of 3 removed" needs the whole row
            score = scores.get(block.name)
            gone = block.name in cut
            removable = _removable(block, scores, may_go, options, complete)
            item = QTreeWidgetItem(
                stages[stage],
                [block.name, f"{score:.4g}" if score is not None else "—", "removed" if gone else "kept", removable],
            )
            tip = _tip(block, score, removable, gone)
            colour = REMOVED if gone else (None if block.removable else FIXED)
            for column in range(len(COLUMNS)):
                item.setToolTip(column, tip)
                if colour is not None:
                    item.setBackground(column, QBrush(colour))
            self.items[block.name] = item
        for stage, item in stages.items():
            names = [item.child(i).text(0) for i in range(item.childCount())]
            gone = sum(1 for name in names if name in cut)
            item.setText(0, f"{stage}: {gone} of {len(names)} removed" if gone else f"{stage}: {len(names)} kept")
            item.setToolTip(0, f"stage {stage}: {len(names)} residual blocks")
        self.table.expandAll()
        self.title.setText(self._title(blocks, scores, cut))

    @staticmethod
    def _title(blocks: list[BlockInfo], scores: Mapping[str, float], cut: set[str]) -> str:
        if not blocks:
            return "This model has no residual blocks: block methods cannot prune it."
        removable = sum(1 for block in blocks if block.removable)
        if not scores:
            return f"{len(blocks)} residual blocks, {removable} removable. {EMPTY}"
        if not cut:
            return f"{len(scores)} of {len(blocks)} blocks scored; no plan yet (set a target)"
        return f"the plan removes {len(cut)} of {len(blocks)} blocks ({removable} removable): " + ", ".join(sorted(cut))
