"""The splash shown while torch and the model load, so the window answers within a second of launch.

This module imports Qt only: importing torch takes seconds on a cold machine,
and the launcher shows the splash before anything imports it.
"""

from __future__ import annotations

import sys

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QPainter, QPixmap
from PySide6.QtWidgets import QApplication, QSplashScreen

SPLASH_SIZE = (420, 180)


def _picture() -> QPixmap:
    """The splash image, drawn here (no image file to find): the name and what is loading."""
    pixmap = QPixmap(*SPLASH_SIZE)
    pixmap.fill(QColor("#1f2d3a"))
    painter = QPainter(pixmap)
    painter.setPen(QColor("#e8eef3"))
    title = QFont()
    title.setPointSize(22)
    title.setBold(True)
    painter.setFont(title)
    painter.drawText(24, 64, "Secateur")
    body = QFont()
    body.setPointSize(10)
    painter.setFont(body)
    painter.drawText(24, 92, "structured pruning workbench")
    painter.end()
    return pixmap


def show_splash() -> QSplashScreen:
    """Create the application and show the splash at once; the caller closes it when the window is up."""
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Secateur")
    splash = QSplashScreen(_picture())
    splash.showMessage("Loading torch…", Qt.AlignmentFlag.AlignBottom | Qt.AlignmentFlag.AlignLeft, QColor("#b8c7d3"))
    splash.show()
    app.processEvents()
    return splash
