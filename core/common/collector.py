"""Python's cyclic garbage collector held off while a burst of short-lived objects is made."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block; on leaving it, the collector is as it was.

    Every 700 new tuples start a collection, and the older generations' turns walk
    every object of the process (torch's among them): mapping a refused group's
    500 k channel indices spent three quarters of its time collecting, and the
    tuples hold no cycles. Objects still die by reference count meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
