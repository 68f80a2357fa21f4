"""Start-up: seconds from launch to the splash, to the window, and to the demo model open.

Each run is a fresh interpreter running ``secateur gui`` (offscreen) with the
launcher's own code; the probe wraps the splash and the window's ``show`` to
note when each appears, and quits once the model is open. The first run after
dropping the page cache (root only) is the cold start; the others are warm.

    .venv/bin/python bench/startup.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

_PROBE = """
import json, sys, time
started = float(sys.argv[1])
marks = {}
import secateur.app.splash as splash_module
show_splash = splash_module.show_splash

def timed_splash():
    splash = show_splash()
    marks["splash"] = time.time() - started
    patch_window()  # imports the window, as the launcher does next
    return splash

def patch_window():
    from PySide6.QtWidgets import QApplication
    from secateur.app.window import MainWindow
    show = MainWindow.show
    def timed_show(self):
        show(self)
        marks["window"] = time.time() - started
        def done(name):
            if name == "open":
                marks["model open"] = time.time() - started
                print(json.dumps(marks), flush=True)
                QApplication.instance().quit()
        self.job_done.connect(done)
    MainWindow.show = timed_show

splash_module.show_splash = timed_splash
from secateur.app import launcher
launcher.main(["gui"])
"""


def _drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def _launch() -> dict[str, float]:
    env = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}
    started = time.time()
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(started)], capture_output=True, text=True, env=env, timeout=600, check=True
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm runs after the cold one")
    options = parser.parse_args()
    cold = _drop_page_cache()
    rows = [("cold" if cold else "first", _launch())] + [("warm", _launch()) for _ in range(options.runs)]
    print(f"{'start':<6} {'splash s':>9} {'window s':>9} {'model open s':>13}")
    for name, marks in rows:
        print(f"{name:<6} {marks['splash']:>9.2f} {marks['window']:>9.2f} {marks['model open']:>13.2f}")
    warm = [marks for name, marks in rows if name == "warm"]
    if warm:
        medians = [statistics.median(m[key] for m in warm) for key in ("splash", "window", "model open")]
        print(f"{'warm median':<6} {medians[0]:>3.2f} {medians[1]:>9.2f} {medians[2]:>13.2f}")


if __name__ == "__main__":
    main()
