"""Starting the window, and the scripted run behind ``--screenshot``."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PySide6.QtCore import QSettings, QSize, QTimer
from PySide6.QtWidgets import QApplication, QSplashScreen

from secateur.app.open_dialog import ModelRequest
from secateur.app.window import MainWindow, grab_png
from secateur.core.common.errors import InputError
from secateur.core.pruning.params import parse_param_assignments


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 1280x800") from None
    return width, height


def window_size(requested: tuple[int, int], available: QSize, screenshot: str | None) -> tuple[int, int]:
    """The window's size: as asked for a screenshot (rendered off screen), else no larger than the screen.

    A window larger than its screen hides its right and bottom edges (the method panel's buttons,
    the results table) behind the screen's border, seen on a 1024×700 display.
    """
    if screenshot:
        return requested
    return min(requested[0], available.width()), min(requested[1], available.height())


def run_gui(options: argparse.Namespace, splash: QSplashScreen | None = None) -> int:
    """Open the window on the given model and data; with --screenshot, run, render, and exit.

    ``splash``, shown by the launcher before torch was imported, closes as the window appears.
    """
    request = ModelRequest(options.model, options.data, options.weights, options.num_classes, options.input_size)
    try:
        width, height = _size(options.size)
        params = parse_param_assignments(options.param)
        request.check()
    except InputError as error:
        if splash is not None:
            splash.close()
        print(f"secateur gui: error: {error}", file=sys.stderr)
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Secateur")
    # A scripted screenshot uses the shipped layout, not the one the user's last session saved.
    settings = QSettings(str(Path(tempfile.mkdtemp()) / "layout.ini"), QSettings.Format.IniFormat)
    window = MainWindow(settings=settings if options.screenshot else None)
    window.confirm_unsaved = not options.screenshot  # a scripted run that renders and exits asks nothing
    window.device_picker.setCurrentText(options.device)
    window.resize(*window_size((width, height), app.primaryScreen().availableGeometry().size(), options.screenshot))
    window.show()
    if splash is not None:
        splash.finish(window)
    if options.method and options.method not in window.registry.methods:
        print(f"secateur gui: error: --method {options.method!r}: no such method", file=sys.stderr)
        return 2

    def next_step(finished: str) -> None:
        if finished == "open" and options.method:
            window.panel.picker.setCurrentText(options.method)
            for name, value in params.items():
                window.panel.set_param(name, value)
            window.run_method()
            return
        if options.apply and finished.startswith("score with"):
            window.apply_plan()
            return
        if options.select:
            window.select_layer(options.select)
        if options.screenshot:
            QTimer.singleShot(300, lambda: (grab_png(window, options.screenshot), app.quit()))

    if options.screenshot or options.method:
        window.job_done.connect(next_step)
    window.open(request)
    return app.exec()
