"""Running core jobs off the Qt thread: one QThread, one worker object, queued signals.

A job is a plain function ``job(progress, on_partial) -> result`` that calls
core code. The worker runs it in its thread and turns the core's callbacks
into signals, which Qt delivers to the window's thread (queued), so torch
never runs on the Qt thread and widgets are only touched there. Partial
results are throttled to about ten a second; the last one always arrives.
"""

from __future__ import annotations

import gc
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, QThread, Signal, Slot

from secateur.core.common.errors import Cancelled, SecateurError
from secateur.core.common.progress import Progress

Job = Callable[[Progress, Callable[[Any], None]], Any]
MIN_PARTIAL_INTERVAL = 0.1  # seconds between two partial results sent to the window


class _Runner(QObject):
    progressed = Signal(str, int, int)
    partial = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)  # message, details (traceback)
    cancelled = Signal()

    def __init__(self, job: Job, stop: threading.Event) -> None:
        super().__init__()
        self._job = job
        self._stop = stop
        self._last_partial = 0.0
        self._pending: Any = None

    def _on_partial(self, value: Any) -> None:
        now = time.monotonic()
        self._pending = value if self._pending is None else _merge(self._pending, value)
        if now - self._last_partial >= MIN_PARTIAL_INTERVAL:
            self.partial.emit(self._pending)
            self._pending = None
            self._last_partial = now

    @Slot()
    def run(self) -> None:
        progress = Progress(report=self.progressed.emit, cancelled=self._stop.is_set)
        try:
            result = self._job(progress, self._on_partial)
        except Cancelled:
            self.cancelled.emit()
        except SecateurError as error:
            self.failed.emit(str(error), traceback.format_exc())
        except Exception as error:  # anything else is a bug, shown with its details, never a crash
            self.failed.emit(f"{type(error).__name__}: {error}", traceback.format_exc())
        else:
            if self._pending is not None:
                self.partial.emit(self._pending)
            self.succeeded.emit(result)


def _merge(old: Any, new: Any) -> Any:
    """Partial scores not yet drawn are merged, so throttling never drops a group."""
    if hasattr(old, "update") and hasattr(new, "groups"):
        old.update(new)
        return old
    return new


class Worker(QObject):
    """Runs one core job at a time in a background thread; ``cancel`` asks it to stop."""

    progressed = Signal(str, int, int)
    partial = Signal(object)
    succeeded = Signal(object)
    failed = Signal(str, str)
    cancelled = Signal()
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._thread: QThread | None = None
        self._runner: _Runner | None = None
        self._stop = threading.Event()

    def busy(self) -> bool:
        return self._thread is not None

    def start(self, job: Job) -> None:
        """Run ``job`` in the background thread.

        Pending cyclic garbage is collected here, on the Qt thread, first:
        Python collects cycles in whichever thread happens to allocate, and a
        Qt object (a closed window, a dialog) destroyed from the worker thread
        aborts the process.
        """
        if self.busy():
            raise RuntimeError("a job is already running")
        gc.collect()
        self._stop = threading.Event()
        self._thread = QThread()
        self._runner = _Runner(job, self._stop)
        self._runner.moveToThread(self._thread)
        self._runner.progressed.connect(self.progressed)
        self._runner.partial.connect(self.partial)
        self._runner.succeeded.connect(self._on_success)
        self._runner.failed.connect(self._on_failure)
        self._runner.cancelled.connect(self._on_cancel)
        self._thread.started.connect(self._runner.run)
        self._thread.start()
        self.busy_changed.emit(True)

    def cancel(self) -> None:
        self._stop.set()

    def _finish(self) -> None:
        if self._thread is not None:
            self._thread.quit()
            self._thread.wait()
        self._thread = None
        self._runner = None
        self.busy_changed.emit(False)

    # The runner's signals arrive here queued, in the window's thread; the thread
    # is joined first, so a receiver already sees the worker idle.
    @Slot(object)
    def _on_success(self, result: Any) -> None:
        self._finish()
        self.succeeded.emit(result)

    @Slot(str, str)
    def _on_failure(self, message: str, details: str) -> None:
        self._finish()
        self.failed.emit(message, details)

    @Slot()
    def _on_cancel(self) -> None:
        self._finish()
        self.cancelled.emit()

    def wait(self, timeout_ms: int = 60_000) -> None:
        """Block until the thread ends (for shutdown and tests)."""
        if self._thread is not None:
            self._thread.wait(timeout_ms)
