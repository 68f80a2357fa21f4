"""The layer tree as a Qt item model: one row per module, sortable columns, an importance bar."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from PySide6.QtCore import QModelIndex, QRect, QSortFilterProxyModel, Qt
from PySide6.QtGui import QColor, QPainter, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import QStyledItemDelegate, QStyleOptionViewItem

from secateur.app.report import human_count
from secateur.core.graph.layer_tree import LayerTree

COLUMNS = ("layer", "type", "output", "params", "MACs", "kept", "importance", "override")
NAME_ROLE = Qt.ItemDataRole.UserRole + 1  # the full module path of a row
SORT_ROLE = Qt.ItemDataRole.UserRole + 2  # the number a column sorts by
BAR_ROLE = Qt.ItemDataRole.UserRole + 3  # importance in [0, 1], or None
GROUP_ROLE = Qt.ItemDataRole.UserRole + 4  # the prunable group a row's layer belongs to, or None
LOCKED_ROLE = Qt.ItemDataRole.UserRole + 5  # whether that group is locked
OVERRIDE_ROLE = Qt.ItemDataRole.UserRole + 6  # that group's override ratio (fraction removed), or None


def _item(text: str, sort_value: object = None) -> QStandardItem:
    item = QStandardItem(text)  # read-only through the view's edit triggers: one Qt call less per cell
    item.setData(sort_value if sort_value is not None else text, SORT_ROLE)
    return item


@dataclass
class TreeRows:
    """A layer tree's rows, built apart from the model: on a job's worker, off the Qt thread (``build_rows``)."""

    tree: LayerTree
    rows: dict[str, list[QStandardItem]]  # module path -> its row's cells
    top_level: list[list[QStandardItem]]
    group_of: dict[str, str]
    channels: dict[str, int]
    prunable: set[str]
    shown: dict[tuple[str, str], object]  # (module path, what) -> the value it shows (``_changed``)


def build_rows(tree: LayerTree) -> TreeRows:
    """Every layer's row, under its parent's; items are plain data, so any thread may build them.

    Building resnet50's 150 rows takes about 5 ms; on a job's worker that time is not a stall of the window.
    """
    group_of = {layer.name: layer.group for layer in tree.layers if layer.group}
    channels = {group.id: group.channels for group in tree.groups}
    prunable = {group.id for group in tree.groups if group.prunable}
    built = TreeRows(tree, {}, [], group_of, channels, prunable, {})
    parents: dict[str, QStandardItem] = {}
    for layer in tree.layers:
        shape = "×".join(str(v) for v in layer.output_shape[1:]) if layer.output_shape else ""
        count = channels.get(layer.group or "", 0)
        kept = f"{count} / {count}" if count else ""
        row = [
            _item(layer.name.rsplit(".", 1)[-1], layer.name),
            _item(layer.type),
            _item(shape),
            _item(human_count(layer.params), layer.params),
            _item(human_count(layer.macs), layer.macs),
            _item(kept, count),
            _item("", -1.0),
            _item("", ""),
        ]
        row[0].setData(layer.name, NAME_ROLE)
        row[0].setData(layer.group if layer.group in prunable else None, GROUP_ROLE)
        row[0].setData(False, LOCKED_ROLE)
        row[0].setToolTip(layer.name + (f"\ngroup {layer.group}" if layer.group else ""))
        parent = parents.get(layer.parent)
        if parent is None:
            built.top_level.append(row)
        else:
            parent.appendRow(row)
        parents[layer.name] = row[0]
        built.rows[layer.name] = row
        shown = {"kept": kept, "bar": None, "override": None, "choice": "", "locked": False}
        built.shown.update({(layer.name, what): value for what, value in shown.items()})
    return built


class LayerTreeModel(QStandardItemModel):
    """Rows mirror ``LayerTree.layers`` (hierarchy kept); kept/total and importance come from the plan and scores."""

    def __init__(self) -> None:
        super().__init__()
        self.setHorizontalHeaderLabels(list(COLUMNS))
        self._rows: dict[str, list[QStandardItem]] = {}
        self._group_of: dict[str, str] = {}
        self._channels: dict[str, int] = {}
        self._prunable: set[str] = set()
        self.has_choices = False  # whether any group is locked or overridden (the view shows the column then)
        # what each row shows, kept on the Python side: asking Qt (row.data(), row.text()) costs a GIL hand-over
        # per call, milliseconds each while a job's worker thread runs Python, so redraws compare against these
        self._shown: dict[tuple[str, str], object] = {}

    def set_tree(self, rows: TreeRows) -> None:
        """Show ``rows`` (``build_rows`` of a tree), replacing what the model held."""
        self.removeRows(0, self.rowCount())
        self._rows, self._shown = rows.rows, rows.shown
        self._group_of, self._channels, self._prunable = rows.group_of, rows.channels, rows.prunable
        # the rows were built under their parents and join the model last, top-level rows only: the views
        # hear of one insertion per top-level row instead of one per layer (616 cells on the demo)
        for row in rows.top_level:
            self.invisibleRootItem().appendRow(row)

    def group_of(self, layer: str) -> str | None:
        return self._group_of.get(layer)

    def show_scores(self, group_means: dict[str, float], block_scores: dict[str, float]) -> None:
        """Every row's importance bar: its group's mean (already in [0, 1]), its block's score, or none."""
        top = max(block_scores.values(), default=1.0) or 1.0
        with self._one_notice() as changed:
            for name, row in self._rows.items():
                group = self._group_of.get(name)
                if group in group_means:
                    value, sort, tip = (
                        group_means[group],
                        group_means[group],
                        f"mean normalised importance {group_means[group]:.3f}",
                    )
                elif name in block_scores:
                    score = block_scores[name]
                    value, sort, tip = (
                        max(0.0, score / top),
                        score,
                        f"block score {score:.4g} (higher: removing the block changes more)",
                    )
                else:
                    value, sort, tip = None, -1.0, ""
                if self._changed(name, "bar", value):
                    row[6].setData(value, BAR_ROLE)
                    row[6].setData(sort, SORT_ROLE)
                    row[6].setToolTip(tip)
                    changed.append(row[6])

    def show_plan(self, kept: dict[str, tuple[int, int]], removed_blocks: list[str] | tuple[str, ...] = ()) -> None:
        """Kept / total channels per layer from a plan ({} for none: total / total), and its removed blocks."""
        removed = set(removed_blocks)
        with self._one_notice() as changed:
            for name, row in self._rows.items():
                group = self._group_of.get(name)
                if name in removed:
                    text, sort, colour = "removed", 0.0, "#c0392b"
                elif group is not None:
                    total = self._channels.get(group, 0)
                    count = kept.get(group, (total, total))[0]
                    text, sort = f"{count} / {total}", count / total if total else 1.0
                    colour = "#c0392b" if count < total else "#2c3e50"
                else:
                    text, sort, colour = "", -1.0, "#2c3e50"
                if self._changed(name, "kept", text):
                    row[5].setText(text)
                    row[5].setData(sort, SORT_ROLE)
                    row[5].setForeground(QColor(colour))
                    changed.append(row[5])

    def show_choices(self, locked: frozenset[str] | set[str], overrides: dict[str, float]) -> None:
        """The override column: "locked" or the group's own ratio on every row of a locked or overridden group."""
        self.has_choices = bool(locked or overrides)
        with self._one_notice() as changed:
            for name, row in self._rows.items():
                group = self._group_of.get(name)
                ratio = overrides.get(group) if group else None
                if group in locked:
                    text, tip = "locked", f"group {group} is locked: never pruned (--lock {group})"
                elif ratio is not None:
                    channels = self._channels.get(group, 0)
                    text = f"prune {ratio:.0%}"
                    tip = f"group {group}: {ratio:.0%} of its {channels} channels removed, whatever the target"
                    tip += f" (--override {group}={ratio:g})"
                else:
                    text, tip = "", ""
                if self._changed(name, "locked", group in locked):  # each setData repaints: only what changed
                    row[0].setData(group in locked, LOCKED_ROLE)
                    changed.append(row[0])
                if self._changed(name, "override", ratio):
                    row[0].setData(ratio, OVERRIDE_ROLE)
                    changed.append(row[0])
                if self._changed(name, "choice", text):
                    row[7].setText(text)
                    row[7].setData(text, SORT_ROLE)
                    row[7].setToolTip(tip)
                    row[7].setForeground(QColor("#8e44ad"))
                    changed.append(row[7])

    @contextmanager
    def _one_notice(self) -> Iterator[list[QStandardItem]]:
        """Collect the items a redraw changes, silently, then tell the views once per parent and column.

        Each ``setData`` would otherwise notify the views (and the sorting proxy) on its own: a redraw of the
        demo's 77 rows took 2-3 ms with one notice per item and 0.2 ms without.
        """
        changed: list[QStandardItem] = []
        blocked = self.blockSignals(True)
        try:
            yield changed
        finally:
            self.blockSignals(blocked)
            spans: dict[tuple[int, int], tuple[QModelIndex, int, int]] = {}  # (parent, column) -> rows
            for item in changed:
                parent, row, column = item.parent(), item.row(), item.column()
                key = (id(parent), column)
                start = spans.get(key, (parent.index() if parent is not None else QModelIndex(), row, row))
                spans[key] = (start[0], min(start[1], row), max(start[2], row))
            for (_, column), (parent_index, first, last) in spans.items():
                self.dataChanged.emit(self.index(first, column, parent_index), self.index(last, column, parent_index))

    def _changed(self, name: str, what: str, value: object) -> bool:
        """Whether row ``name`` shows something other than ``value`` in ``what``; records ``value`` as shown."""
        key = (name, what)
        if key in self._shown and self._shown[key] == value:
            return False
        self._shown[key] = value
        return True


class SortProxy(QSortFilterProxyModel):
    """Sorts by each column's number (params, MACs...) rather than its text."""

    def __init__(self) -> None:
        super().__init__()
        self.setSortRole(SORT_ROLE)


class ImportanceBarDelegate(QStyledItemDelegate):
    """Draws the importance column as a small horizontal bar."""

    def paint(self, painter: QPainter, option: QStyleOptionViewItem, index: QModelIndex) -> None:
        super().paint(painter, option, index)
        value = index.data(BAR_ROLE)
        if value is None:
            return
        rect: QRect = option.rect.adjusted(4, 5, -4, -5)
        painter.save()
        painter.fillRect(rect, QColor("#e8e8e8"))
        filled = QRect(rect.left(), rect.top(), int(rect.width() * max(0.0, min(1.0, float(value)))), rect.height())
        painter.fillRect(filled, QColor("#e67e22"))
        painter.restore()
