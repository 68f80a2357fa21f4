"""Progress reporting and cancellation, as plain callables the core calls.

Long core jobs take a ``Progress`` and call it as they go; the CLI prints it
on stderr, the window turns it into Qt signals. Cancellation is a callable
returning True when the user asked to stop; jobs check it between batches and
raise ``Cancelled`` before they change anything the caller owns.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from secateur.core.common.errors import Cancelled


@dataclass
class Progress:
    """Reports ``(stage, done, total)`` to an optional callback and checks cancellation."""

    report: Callable[[str, int, int], None] | None = None
    cancelled: Callable[[], bool] | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self.report is not None:
            self.report(stage, done, total)
        self.check()

    def check(self) -> None:
        """Raise ``Cancelled`` if the user asked to stop."""
        if self.cancelled is not None and self.cancelled():
            raise Cancelled("cancelled by the user")


SILENT = Progress()
