"""The session's psygnal events as Qt signals on the window's thread, throttled to about ten redraws a second.

Session events fire in whichever thread changed the session (usually a job's
worker thread). The bridge re-emits each one through a Qt signal to itself,
which Qt queues to the window's thread; there it collects the names of what
changed and hands them to the views ``INTERVAL`` seconds after the first of
them, and the last is never dropped. Views then redraw from the session's
state, so a burst of partial scores costs one redraw, not one each, and a job
that ends within ``INTERVAL`` of its first partial result (l1 on the demo:
40 ms) is drawn once, at its end, where a redraw of the partial scores and
another of the final ones had stalled the window for 30–55 ms in all.
"""

from __future__ import annotations

from psygnal import EmissionInfo
from PySide6.QtCore import QObject, QTimer, Signal, Slot

from secateur.core.workflow.session import Session

INTERVAL = 0.1  # seconds from the first change to its redraw, and so between two redraws
IMMEDIATE = ("job", "notice")  # events shown at once, with their argument


class SessionBridge(QObject):
    """Follows one session at a time; ``changed`` carries the set of event names since the last redraw."""

    changed = Signal(object)  # set[str]: "model", "scores", "plan", "metrics", "history", "training", "sweep", …
    notice = Signal(str)
    job = Signal(str)
    _relayed = Signal(str, object)  # event name, its arguments; queued when emitted from a worker thread

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session: Session | None = None
        self._dirty: set[str] = set()
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self._flush)
        self._relayed.connect(self._on_relayed)

    def follow(self, session: Session | None) -> None:
        """Listen to ``session`` (and no longer to the previous one); every view redraws."""
        if self.session is not None:
            self.session.events.disconnect(self._relay)
        self.session = session
        if session is not None:
            session.events.connect(self._relay)
        self._dirty |= {"model", "scores", "plan", "metrics", "history", "training", "sweep", "choices"}
        self._flush()

    def _relay(self, info: EmissionInfo) -> None:  # any thread
        self._relayed.emit(info.signal.name, info.args)

    @Slot(str, object)
    def _on_relayed(self, name: str, args: tuple) -> None:  # the window's thread
        if name == "notice":
            self.notice.emit(*args)
            return
        if name == "job":
            self.job.emit(*args)
            return
        self._dirty.add(name)
        if not self._timer.isActive():
            self._timer.start(int(INTERVAL * 1000))

    def flush(self) -> None:
        """Redraw now whatever changed (tests, and before a screenshot)."""
        self._timer.stop()
        self._flush()

    def _flush(self) -> None:
        if not self._dirty:
            return
        names, self._dirty = self._dirty, set()
        self.changed.emit(names)
