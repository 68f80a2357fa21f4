"""How long the window's event loop stalls while it opens, scores and prunes resnet50 on the CPU.

A 5 ms QTimer heartbeat runs on the Qt thread; the longest gap between two
beats is the longest time the window could not respond. The window opens
torchvision's resnet50 (weights=None, 224×224), scores it with l1 and applies
a 50% plan, all through its worker thread. Target: longest stall ≤ 50 ms.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_responsiveness.py
"""

from __future__ import annotations

import os
import statistics
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from secateur.app.window import MainWindow


class Heartbeat:
    """Records the gaps between 5 ms timer ticks on the Qt thread."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000.0)
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self.timer.start()


def _wait(window: MainWindow, start) -> float:
    loop = QEventLoop()
    window.job_done.connect(loop.quit)
    started = time.perf_counter()
    start()
    loop.exec()
    window.job_done.disconnect(loop.quit)
    return time.perf_counter() - started


def main() -> None:
    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    heartbeat = Heartbeat()
    window.panel.picker.setCurrentText("l1")
    window.panel.target_value.setValue(0.5)
    print(f"{'phase':<10} {'seconds':>8} {'beats':>6} {'median gap ms':>14} {'longest stall ms':>17}")
    for phase, start in (
        ("open", lambda: window.open("torchvision:resnet50", None)),
        ("score", window.run_method),
        ("apply", window.apply_plan),
    ):
        heartbeat.start()
        seconds = _wait(window, start)
        heartbeat.timer.stop()
        gaps = heartbeat.gaps or [0.0]
        print(f"{phase:<10} {seconds:>8.2f} {len(gaps):>6} {statistics.median(gaps):>14.1f} {max(gaps):>17.1f}")
        if window.statusBar().currentMessage().startswith(f"{phase} failed"):
            raise SystemExit(window.statusBar().currentMessage())
    params = sum(p.numel() for p in window.session.model.parameters())
    print(f"resnet50 after apply: {params / 1e6:.2f} M params (25.56 M before)")
    window.close()
    app.quit()


if __name__ == "__main__":
    main()
