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
