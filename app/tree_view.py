"""The layer tree's view: the name column takes the room left and elides, so kept and importance stay visible.

Its context menu locks a row's group or gives it its own pruning ratio (the CLI's
``--lock`` and ``--override``); the view only asks, the window records the choice
in the session, and the override column shows it once any group has one.
"""

from __future__ import annotations

from PySide6.QtCore import QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QContextMenuEvent, QResizeEvent
from PySide6.QtWidgets import QHeaderView, QMenu, QTreeView, QWidget

from secateur.app.tree_model import COLUMNS, GROUP_ROLE, LOCKED_ROLE, OVERRIDE_ROLE, ImportanceBarDelegate

VISUAL_ORDER = ("layer", "kept", "override", "importance", "params", "MACs", "type", "output")  # what matters first
BAR_WIDTH = 74
MIN_NAME_WIDTH = 90


class LayerTreeView(QTreeView):
    """Columns after the name size to their contents; the name gets the rest (at least ``MIN_NAME_WIDTH``)."""

    lock_requested = Signal(str, bool)  # group id, lock (True) or unlock
    ratio_requested = Signal(str)  # group id: ask for its own ratio
    clear_requested = Signal(str)  # group id: back to the target's ratio

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIndentation(12)
        self.setEditTriggers(QTreeView.EditTrigger.NoEditTriggers)  # a row shows the model; it is never edited
        self.setSortingEnabled(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setItemDelegateForColumn(COLUMNS.index("importance"), ImportanceBarDelegate(self))
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.DefaultContextMenu)

    def setModel(self, model) -> None:
        super().setModel(model)
        header = self.header()
        header.setStretchLastSection(False)
        header.setMinimumSectionSize(36)
        for visual, name in enumerate(VISUAL_ORDER):
            header.moveSection(header.visualIndex(COLUMNS.index(name)), visual)
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Interactive)
        header.setSectionResizeMode(COLUMNS.index("importance"), QHeaderView.ResizeMode.Fixed)
        header.resizeSection(COLUMNS.index("importance"), BAR_WIDTH)
        header.setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # module order until a header is clicked
        header.sectionResized.connect(lambda index, *_: index != 0 and self.fit_name_column())
        self.show_override_column(False)

    def show_override_column(self, visible: bool) -> None:
        """The override column takes room only once some group is locked or has its own ratio."""
        column = COLUMNS.index("override")
        if self.header().isSectionHidden(column) == visible:
            self.header().setSectionHidden(column, not visible)
            self.fit_name_column()

    def choices_menu(self, index: QModelIndex) -> QMenu | None:
        """The row's menu: lock or unlock its group, set or clear its ratio; None for a row without a group."""
        row = index.siblingAtColumn(0)
        group = row.data(GROUP_ROLE) if row.isValid() else None
        if not group:
            return None
        locked, ratio = bool(row.data(LOCKED_ROLE)), row.data(OVERRIDE_ROLE)
        menu = QMenu(self)
        menu.setToolTipsVisible(True)
        lock = menu.addAction(f"Unlock group {group}" if locked else f"Lock group {group}")
        lock.setToolTip("never prune this group's channels (--lock)")
        lock.triggered.connect(lambda: self.lock_requested.emit(group, not locked))
        ratio_action = menu.addAction("Set prune ratio…")
        ratio_action.setToolTip("remove this fraction of the group's channels, whatever the target (--override)")
        ratio_action.triggered.connect(lambda: self.ratio_requested.emit(group))
        ratio_action.setEnabled(not locked)
        clear = menu.addAction("Clear override" if ratio is not None else "Clear override (none set)")
        clear.triggered.connect(lambda: self.clear_requested.emit(group))
        clear.setEnabled(ratio is not None)
        return menu

    def contextMenuEvent(self, event: QContextMenuEvent) -> None:
        menu = self.choices_menu(self.indexAt(event.pos()))
        if menu is None:
            return
        menu.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        menu.popup(event.globalPos())

    def fit_name_column(self) -> None:
        """Give the name column the width the other columns leave (they keep their content widths)."""
        header = self.header()
        others = sum(header.sectionSize(i) for i in range(1, header.count()) if not header.isSectionHidden(i))
        header.resizeSection(0, max(MIN_NAME_WIDTH, self.viewport().width() - others))

    def minimumSizeHint(self) -> QSize:
        """Room for an elided name, kept and the importance bar: the tree is never squeezed below them."""
        header = self.header()
        kept = max(header.sectionSize(COLUMNS.index("kept")), 64)
        width = MIN_NAME_WIDTH + kept + BAR_WIDTH + self.verticalScrollBar().sizeHint().width() + 2 * self.frameWidth()
        return QSize(width, super().minimumSizeHint().height())

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self.fit_name_column()
