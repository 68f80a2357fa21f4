"""Torch-Pruning's group lookups through an index, so that collecting a group is linear in its size.

While Torch-Pruning 1.6 collects a group, each dependency it reaches is checked
against the group's items (``Group.has_pruning_op``: is this layer already in it
with these indices?) and, when the group is merged, each item is folded into the
one on the same layer (``Group.add_and_merge``). Both scan every item so far:
n²/2 comparisons in Python for n items. timm's dpn68 grows groups to the
10 000-item cap one after the other, and its groups took about ten minutes to
collect, 91 % of it in that scan. The answers here are the same; a set and a
dict find them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from torch_pruning.dependency import group as tp_group

from secateur.core.graph.tp_patch import patch_once

Group = tp_group.Group


class _Seen:
    """The (layer, handler, indices) a group holds, read from its item list as it grows."""

    __slots__ = ("count", "items", "keys")

    def __init__(self, items: list) -> None:
        self.items = items
        self.count = 0
        self.keys: set[Hashable] = set()

    def current(self, items: list) -> bool:
        """Whether this index can be brought up to date with ``items`` by reading what was appended since."""
        return items is self.items and len(items) >= self.count

    def catch_up(self) -> None:
        for dep, idxs in self.items[self.count :]:
            self.keys.add((dep.target, dep.handler, tuple(idxs)))
        self.count = len(self.items)


def _seen(group: Group) -> _Seen:
    index = getattr(group, "_secateur_seen", None)
    if index is None or not index.current(group._group):
        index = _Seen(group._group)
        group._secateur_seen = index
    index.catch_up()
    return index


def _indexed_check(has_pruning_op: Callable[[Group, object, list], bool]) -> Callable[[Group, object, list], bool]:
    """``Group.has_pruning_op`` through a set; indices that cannot be hashed take Torch-Pruning's scan."""

    def indexed(group: Group, dep: object, idxs: list) -> bool:
        try:
            return (dep.target, dep.handler, tuple(idxs)) in _seen(group).keys  # type: ignore[attr-defined]
        except TypeError:  # an unhashable index: Torch-Pruning's own comparison
            group._secateur_seen = None
            return has_pruning_op(group, dep, idxs)

    return indexed


def _indexed_merge(add_and_merge: Callable[[Group, object, list], None]) -> Callable[[Group, object, list], None]:
    """``Group.add_and_merge`` handed only the item on the same layer (or none), found through a dict.

    Torch-Pruning's own method then merges the indices as it always does: it is
    called on a one-item view of the group whose item list is the real one's
    matching slot, so its scan finds that item at once.
    """

    def indexed(group: Group, dep: object, idxs: list) -> None:
        positions = getattr(group, "_secateur_positions", None)
        if positions is None or positions[0] is not group._group or positions[1] != len(group._group):
            slots = {(item.dep.target, item.dep.handler): i for i, item in reversed(list(enumerate(group._group)))}
            positions = [group._group, len(group._group), slots]
        slots = positions[2]
        key = (dep.target, dep.handler)  # type: ignore[attr-defined]
        slot = slots.get(key)
        if slot is None:
            group.add_dep(dep, idxs)
            slots[key] = len(group._group) - 1
        else:
            alone = Group()
            alone._group = [group._group[slot]]
            add_and_merge(alone, dep, idxs)
            group._group[slot] = alone._group[0]
        positions[1] = len(group._group)
        group._secateur_positions = positions

    return indexed


def _forgetting(setitem: Callable[[Group, int, object], None]) -> Callable[[Group, int, object], None]:
    """``Group.__setitem__``, which may replace an item: the set of what the group holds is read again."""

    def forgetting(group: Group, k: int, v: object) -> None:
        group._secateur_seen = None
        setitem(group, k, v)

    return forgetting


patch_once(Group, "has_pruning_op", _indexed_check)
patch_once(Group, "add_and_merge", _indexed_merge)
patch_once(Group, "__setitem__", _forgetting)
