"""The window's panes as dock widgets: their arrangement and sizes persist (QSettings) and can be reset."""

from __future__ import annotations

from PySide6.QtCore import QByteArray, QSettings, Qt
from PySide6.QtWidgets import QDockWidget, QFrame, QMainWindow, QScrollArea, QWidget

LAYOUT_VERSION = 2  # bump when the set of docks changes: an old saved state is then ignored
STATE_KEY = "layout/state"
LEFT_SHARE = 0.42  # of the window's width, for the layer tree
RIGHT_SHARE = 0.30  # for the method panel and results
METHOD_SHARE = 0.5  # of the right column's height, for the method panel


def scrolling(widget: QWidget) -> QScrollArea:
    """``widget`` in a vertical scroll area, so a long form never sets the window's minimum height."""
    area = QScrollArea()
    area.setWidget(widget)
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    area.setMinimumWidth(200)
    return area


class Docks:
    """Creates the docks, restores their saved arrangement, saves it, and puts it back as shipped."""

    def __init__(self, window: QMainWindow, settings: QSettings) -> None:
        self.window = window
        self.settings = settings
        self._docks: dict[str, QDockWidget] = {}
        self._default: QByteArray | None = None
        self.pending = False  # sized by the default shares when the window is first shown

    def add(self, name: str, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self.window)
        dock.setObjectName(f"dock-{name}")  # saveState/restoreState find docks by object name
        dock.setWidget(widget)
        dock.setFeatures(
            QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.window.addDockWidget(area, dock)
        self._docks[name] = dock
        return dock

    def all(self) -> list[QDockWidget]:
        return list(self._docks.values())

    def __getitem__(self, name: str) -> QDockWidget:
        return self._docks[name]

    def restore(self) -> None:
        """Remember the shipped arrangement, then put back the user's saved one (if any)."""
        self._default = self.window.saveState(LAYOUT_VERSION)
        saved = self.settings.value(STATE_KEY)
        if isinstance(saved, QByteArray) and not saved.isEmpty():
            self.window.restoreState(saved, LAYOUT_VERSION)
        else:
            self.pending = True

    def save(self) -> None:
        self.settings.setValue(STATE_KEY, self.window.saveState(LAYOUT_VERSION))

    def reset(self) -> None:
        """Every dock back where it started, visible, docked, sized by the default shares; forget the saved state."""
        if self._default is not None:
            self.window.restoreState(self._default, LAYOUT_VERSION)
        for dock in self._docks.values():
            dock.setFloating(False)
            dock.show()
        self.settings.remove(STATE_KEY)
        self.size_by_share()

    def size_by_share(self) -> None:
        self.pending = False
        width, height = self.window.width(), self.window.height()
        self.window.resizeDocks(
            [self._docks["layers"], self._docks["method"]],
            [int(width * LEFT_SHARE), int(width * RIGHT_SHARE)],
            Qt.Orientation.Horizontal,
        )
        self.window.resizeDocks(
            [self._docks["method"], self._docks["results"]],
            [int(height * METHOD_SHARE), int(height * (1 - METHOD_SHARE))],
            Qt.Orientation.Vertical,
        )
