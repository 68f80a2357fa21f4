"""The status bar's estimate of the time left: per phase, smoothed, and silent until it means something."""

from __future__ import annotations

from dataclasses import dataclass

MIN_SECONDS = 2.0  # a phase must have run this long ...
MIN_FRACTION = 0.05  # ... and be this far along ...
MIN_REPORTS = 3  # ... over this many reports before an estimate is shown
SMOOTHING = 0.3  # weight of the newest estimate in the running average


@dataclass
class TimeLeft:
    """Estimates the time left in the current phase (a job's stage: scoring, evaluating, fine-tuning...).

    A job's phases run at different speeds, so each starts afresh; within one,
    the rate is the average since the phase began, and the estimate is an
    exponential average of successive estimates, so it does not jump.
    """

    stage: str = ""
    started: float = 0.0
    first_done: int = 0
    reports: int = 0
    estimate: float | None = None
    estimated_at: float = 0.0

    def update(self, stage: str, done: int, total: int, now: float) -> float | None:
        """Feed one progress report; returns the seconds left in this phase, or None while not meaningful."""
        if stage != self.stage:
            self.stage, self.started, self.first_done, self.reports, self.estimate = stage, now, done, 0, None
            return None
        self.reports += 1
        elapsed, moved, fraction = now - self.started, done - self.first_done, done / max(1, total)
        if done >= total:
            self.estimate = None
            return None
        if elapsed < MIN_SECONDS or fraction < MIN_FRACTION or self.reports < MIN_REPORTS or moved <= 0:
            return self.estimate
        fresh = (total - done) * elapsed / moved
        current = self.left(now)
        self.estimate = fresh if current is None else SMOOTHING * fresh + (1 - SMOOTHING) * current
        self.estimated_at = now
        return self.estimate

    def left(self, now: float) -> float | None:
        """The estimate counted down since it was made (the clock ticks between reports)."""
        if self.estimate is None:
            return None
        return max(0.0, self.estimate - (now - self.estimated_at))

    def text(self, now: float) -> str:
        """The phase's name and the time left, for the status bar (no number until it means something)."""
        left = self.left(now)
        return self.stage if left is None else f"{self.stage}: about {left:.0f} s left"
