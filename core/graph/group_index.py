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


class _Slots:
    """Where each (layer, handler) sits in a group's item list, valid while the list keeps its length."""

    __slots__ = ("count", "items", "where")

    def __init__(self, items: list) -> None:
        self.items = items
        self.count = len(items)
        self.where = {(item.dep.target, item.dep.handler): i for i, item in reversed(list(enumerate(items)))}

    def current(self, items: list) -> bool:
        return items is self.items and len(items) == self.count


def _indexed_merge(add_and_merge: Callable[[Group, object, list], None]) -> Callable[[Group, object, list], None]:
    """``Group.add_and_merge`` handed only the item on the same layer (or none), found through a dict.

    Torch-Pruning's own method then merges the indices as it always does: it is
    called on a one-item group holding the matching item, so its scan finds it
    at once, and the merged item goes back into that slot. With two items on one
    layer (``add_dep`` allows it) the first takes the merge, as in Torch-Pruning.
    """

    def indexed(group: Group, dep: object, idxs: list) -> None:
        slots = getattr(group, "_secateur_slots", None)
        if slots is None or not slots.current(group._group):
            slots = _Slots(group._group)
            group._secateur_slots = slots
        key = (dep.target, dep.handler)  # type: ignore[attr-defined]
        slot = slots.where.get(key)
        if slot is None:
            group.add_dep(dep, idxs)
            slots.where[key] = len(group._group) - 1
        else:
            alone = Group()
            alone._group = [group._group[slot]]
            add_and_merge(alone, dep, idxs)
            group._group[slot] = alone._group[0]
        slots.count = len(group._group)

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
