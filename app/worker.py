"""Running core jobs off the Qt thread: one worker per job, with its own signals and a typed result.

A job is a plain function ``func(progress) -> R`` that calls core code (a
Session method). ``Job`` runs it in Qt's thread pool (superqt's ``WorkerBase``,
the worker napari uses) and turns the core's progress callback and the way the
function ended into that job's own signals, which Qt delivers queued to the
window's thread: torch never runs on the Qt thread and widgets are only
touched there. Nothing is connected to a shared object per job; a job's
signals die with it.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Generic, TypeVar

from PySide6.QtCore import QTimer, Signal
from superqt.utils import WorkerBase
from superqt.utils._qthreading import WorkerBaseSignals

from secateur.core.common.errors import Cancelled, SecateurError
from secateur.core.common.progress import Progress

R = TypeVar("R")
COLLECT_DELAY_MS = 1  # the collection before a job: after the start's own redraw and paint, before the worker
START_DELAY_MS = 40  # the job's worker starts after the window has painted its start
MIN_PROGRESS_INTERVAL = 0.05  # seconds between two progress signals of one stage
GIL_SWITCH_INTERVAL = 0.0002  # seconds a worker running Python holds the GIL while the Qt thread waits (default 0.005)


def favour_the_event_loop() -> None:
    """Let the Qt thread take the GIL back from a worker within 0.2 ms instead of Python's default 5 ms.

    A worker running pure Python (Torch-Pruning's tracing when a model opens)
    keeps the GIL for a whole switch interval each time the Qt thread asks for
    it, and painting asks many times per frame (each pyqtgraph item paints in
    Python). Measured with bench/gui_responsiveness.py (demo, 1 thread, three
    runs each, interleaved): at 1 ms the longest stall while a model opens fell
    from 16–176 ms to 9 ms. At 0.2 ms against 1 ms, interleaved: resnet50's first
    l1 score (partial scores drawn while the job plans), five pairs, 16–42 ms
    (median 19) against 27–43 ms (median 34); the demo's fine-tuning, four
    pairs, 21–37 ms against 18–122 ms. The jobs took as long (within the noise).
    """
    sys.setswitchinterval(GIL_SWITCH_INTERVAL)


class JobSignals(WorkerBaseSignals):
    progressed = Signal(str, int, int)  # stage, done, total
    succeeded = Signal(object)  # the function's result
    failed = Signal(str, str)  # message, details (traceback)
    cancelled = Signal()


class Job(WorkerBase[R], Generic[R]):
    """One core job: ``start()`` runs it in a pool thread, ``cancel()`` asks it to stop at its next check.

    Exactly one of ``succeeded``, ``failed`` and ``cancelled`` is emitted when it ends.
    """

    progressed: Signal
    succeeded: Signal
    failed: Signal
    cancelled: Signal

    def __init__(self, name: str, func: Callable[[Progress], R], quiet: bool = False) -> None:
        super().__init__(SignalsClass=JobSignals)
        self.name = name
        self.quiet = quiet  # a short job the user did not ask for (the plan preview): controls stay as they are
        self._func = func
        self._stop = threading.Event()
        self._last_report = ("", 0.0)

    @property
    def cancel_requested(self) -> bool:
        return self._stop.is_set()

    def cancel(self) -> None:
        """Ask the job to stop: the core checks this between batches, probes and groups."""
        self._stop.set()

    def start(self) -> None:
        """Start in the thread pool, a moment from now (``START_DELAY_MS``).

        Pending cyclic garbage is collected on the Qt thread first, in a turn
        of its own a moment after this call: Python collects cycles in whichever
        thread happens to allocate, and a Qt object (a closed window, a dialog)
        destroyed from a worker thread aborts the process.

        The delay lets the window lay out and paint what the job's start
        changed (the status, the progress bar, disabled controls, a tab) before
        the worker competes for the GIL: painted alongside a worker that runs
        Python, that first frame took 30–55 ms instead of about 10.
        """
        # in a turn of its own: the 5-18 ms it takes need not hold up the paint of the job's start
        QTimer.singleShot(COLLECT_DELAY_MS, gc.collect)
        QTimer.singleShot(START_DELAY_MS, self._begin)

    def _begin(self) -> None:
        if self._stop.is_set():  # cancelled before it ran: it still ends with exactly one signal
            self.cancelled.emit()
            return
        super().start()

    def _report(self, stage: str, done: int, total: int) -> None:
        """Progress at most every 50 ms per stage (the first and last of a stage always)."""
        now = time.monotonic()
        last_stage, last_time = self._last_report
        if stage != last_stage or done >= total or now - last_time >= MIN_PROGRESS_INTERVAL:
            self._last_report = (stage, now)
            self.progressed.emit(stage, done, total)

    def work(self) -> None:
        progress = Progress(report=self._report, cancelled=self._stop.is_set)
        try:
            result = self._func(progress)
        except Cancelled:
            self.cancelled.emit()
        except SecateurError as error:
            self.failed.emit(str(error), traceback.format_exc())
        except Exception as error:  # anything else is a bug, shown with its details, never a crash
            self.failed.emit(f"{type(error).__name__}: {error}", traceback.format_exc())
        else:
            self.succeeded.emit(result)
