"""The layer tree's view: the name column takes the room left and elides, so kept and importance stay visible."""

from __future__ import annotations

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QResizeEvent
from PySide6.QtWidgets import QHeaderView, QTreeView, QWidget

from secateur.app.tree_model import COLUMNS, ImportanceBarDelegate

VISUAL_ORDER = ("layer", "kept", "importance", "params", "MACs", "type", "output")  # what matters most first
BAR_WIDTH = 74
MIN_NAME_WIDTH = 90


class LayerTreeView(QTreeView):
    """Columns after the name size to their contents; the name gets the rest (at least ``MIN_NAME_WIDTH``)."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setIndentation(12)
        self.setSortingEnabled(True)
        self.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.setItemDelegateForColumn(COLUMNS.index("importance"), ImportanceBarDelegate(self))
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.ActionsContextMenu)

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
