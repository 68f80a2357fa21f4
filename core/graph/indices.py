"""Index lists of Torch-Pruning's group items, read without a pass in Python where they are plain.

Nearly every item of a group covers its layer's channels in order (all of
mobilenet_v2's, resnet50's); a list comparison in C tells so, and the caller
then skips a gather, an index tensor or a count over the list.
"""

from __future__ import annotations

from functools import cache


@cache
def _in_order(length: int) -> list[int]:
    """0, 1, …, length − 1 (shared: compared, never changed)."""
    return list(range(length))


def covers_in_order(idxs: list[int], length: int) -> bool:
    """Whether ``idxs`` are all ``length`` positions, in order."""
    return len(idxs) == length and idxs == _in_order(length)
