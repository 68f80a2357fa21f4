"""Start-up: the splash is on screen before torch is imported, and closes on a refused launch."""

from __future__ import annotations

import os
import subprocess
import sys

_PROBE = """
import sys
from PySide6.QtWidgets import QApplication, QSplashScreen

seen = []

class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            app = QApplication.instance()
            seen.append([type(w).__name__ for w in app.topLevelWidgets() if w.isVisible()] if app else None)
        return None

sys.meta_path.insert(0, Watch())
from secateur.app import launcher
assert "torch" not in sys.modules, "importing the launcher imported torch"
code = launcher.main(["gui", "--size", "huge"])
app = QApplication.instance()
print("visible at torch import:", seen[0])
print("visible at exit:", [type(w).__name__ for w in app.topLevelWidgets() if w.isVisible()])
print("exit code:", code)
"""


def test_the_splash_shows_before_torch_loads_and_closes_when_the_launch_is_refused() -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "visible at torch import: ['QSplashScreen']" in run.stdout
    assert "visible at exit: []" in run.stdout and "exit code: 2" in run.stdout
    assert "--size 'huge': expected WIDTHxHEIGHT" in run.stderr


def test_the_window_is_no_larger_than_the_screen_unless_rendered_off_screen() -> None:
    from PySide6.QtCore import QSize

    from secateur.app.gui import window_size

    assert window_size((1280, 800), QSize(1024, 700), None) == (1024, 700)  # found on a 1024×700 display
    assert window_size((1280, 800), QSize(1920, 1080), None) == (1280, 800)
    assert window_size((1280, 800), QSize(1024, 700), "shot.png") == (1280, 800)  # a screenshot keeps its size
