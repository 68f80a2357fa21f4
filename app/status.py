"""A status bar whose message elides to the room it has (full text in the tooltip), never running into the
device selector and progress bar on its right."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QPaintEvent, QResizeEvent
from PySide6.QtWidgets import QLabel, QSizePolicy, QStatusBar, QWidget


class ElidedLabel(QLabel):
    """A one-line label that shows as much of its text as fits, ending in "…", with the whole text as tooltip."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._full = ""
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.NoTextInteraction)

    def full_text(self) -> str:
        return self._full

    def set_full_text(self, text: str) -> None:
        self._full = text
        self.setToolTip(text)
        self._elide()

    def resizeEvent(self, event: QResizeEvent) -> None:
        super().resizeEvent(event)
        self._elide()

    def _elide(self) -> None:
        width = max(0, self.contentsRect().width())
        self.setText(self.fontMetrics().elidedText(self._full, Qt.TextElideMode.ElideRight, width))


class StatusBar(QStatusBar):
    """``showMessage`` as usual (``currentMessage`` still answers); the text is drawn by an eliding label."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.message = ElidedLabel()
        self.addPermanentWidget(self.message, 1)
        self.messageChanged.connect(self.message.set_full_text)

    def paintEvent(self, event: QPaintEvent) -> None:
        """Draw nothing of the message itself: the eliding label shows it."""
