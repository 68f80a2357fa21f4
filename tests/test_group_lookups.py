"""Secateur's faster Torch-Pruning lookups give Torch-Pruning's own answers: the same groups, items and indices."""

from __future__ import annotations

import gc
import random
import sys

import pytest
import torch
from torch import nn
from torch_pruning import _helpers
from torch_pruning.dependency import group as tp_group
from torch_pruning.dependency import index_mapping

from conftest import ARCHS
from secateur.core.common.collector import collector_paused
from secateur.core.graph import groups as groups_module
from secateur.core.graph.indices import gathered, spread

sys.path.insert(0, str(ARCHS))
import user_models

Group = tp_group.Group
FLATTEN_CALL = index_mapping._FlattenIndexMapping.__call__


def flatten_head_net() -> nn.Module:
    """Two convs, a flatten and two Linear layers: the flatten maps each channel onto 4×4 inputs and back."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(96, 12), nn.ReLU(), nn.Linear(12, 10),
    )  # fmt: skip


def all_group_items(model: nn.Module) -> list[list[tuple[str, str, list, list]]]:
    """Each layer's Torch-Pruning group as (layer, handler, indices, root indices), or what failed; layers by name."""
    model.eval()
    graph = groups_module.build_dependency_graph(model, torch.randn(1, 3, 32, 32))
    names = {module: name for name, module in model.named_modules()}
    result = []
    for name, root in model.named_modules():
        if not isinstance(root, (nn.Conv2d, nn.Linear)):
            continue
        group, failure = groups_module._mapped_group(graph, root, graph.get_pruner_of_module(root))
        items = [] if group is None else list(group)
        result.append([(name, failure, [], [])])
        result[-1] += [
            (
                names.get(item.dep.target.module, str(getattr(item.dep.target.module, "shape", "?"))),
                item.dep.handler.__name__,
                list(item.idxs),
                list(item.root_idxs),
            )
            for item in items
        ]
    return result


@pytest.mark.parametrize("build", [user_models.slice_residual_net, user_models.shuffle_net, flatten_head_net])
def test_the_groups_are_torch_pruning_s_own(build, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every group item and index, with Secateur's lookups and mapping, equals those made with Torch-Pruning's."""
    torch.manual_seed(0)
    model = build()
    ours = all_group_items(model)
    for name in ("has_pruning_op", "add_and_merge", "__setitem__"):
        monkeypatch.setattr(Group, name, getattr(Group, name).secateur_original)
    original = FLATTEN_CALL.secateur_original
    monkeypatch.setattr(groups_module, "spread", lambda idxs, stride: original(flat(stride), idxs))
    monkeypatch.setattr(groups_module, "gathered", lambda idxs, stride: original(flat(stride, True), idxs))
    theirs = all_group_items(model)
    assert sum(len(items) for items in ours) > 15
    assert ours == theirs


def flat(stride: int, reverse: bool = False) -> index_mapping._FlattenIndexMapping:
    return index_mapping._FlattenIndexMapping(stride=stride, reverse=reverse)


def hybrid(pairs: list[tuple[int, int]]) -> list:
    return [_helpers._HybridIndex(idx=idx, root_idx=root) for idx, root in pairs]


def test_a_flatten_spreads_and_gathers_indices_as_torch_pruning_does() -> None:
    """Same list, same order (the reverse's set order included), same type, on shuffled and repeated indices."""
    rng = random.Random(3)
    for stride in (1, 4, 49):
        idxs = hybrid([(rng.randrange(64), rng.randrange(8)) for _ in range(40)])
        forward = spread(idxs, stride)
        assert forward == FLATTEN_CALL.secateur_original(flat(stride), idxs)
        assert all(type(index) is _helpers._HybridIndex for index in forward)
        assert forward[stride] == (idxs[1].idx * stride, idxs[1].root_idx)
        backward = hybrid([(rng.randrange(64 * stride), rng.randrange(8)) for _ in range(300)])
        assert gathered(backward, stride) == FLATTEN_CALL.secateur_original(flat(stride, True), backward)
    assert spread([], 3) == [] and gathered([], 3) == []


class _Dep:
    """The parts of a Torch-Pruning dependency the lookups read."""

    def __init__(self, target: object, handler: object) -> None:
        self.target, self.handler = target, handler


def test_the_indexed_check_follows_the_group_as_it_grows_and_changes() -> None:
    """``has_pruning_op`` answers as Torch-Pruning's scan after each add and after an item is replaced."""
    layers, handlers = [object() for _ in range(3)], [len, repr]
    deps = [_Dep(layer, handler) for layer in layers for handler in handlers]
    queries = [(dep, hybrid(pairs)) for dep in deps for pairs in ([(0, 0), (1, 1)], [(1, 1), (0, 0)], [(0, 0)])]
    group = Group()
    original = Group.has_pruning_op.secateur_original
    for dep, idxs in queries[::2]:
        group.add_dep(dep, idxs)
        assert [group.has_pruning_op(*q) for q in queries] == [original(group, *q) for q in queries]
    assert sum(group.has_pruning_op(*q) for q in queries) == len(queries[::2])
    group[0] = _helpers.GroupItem(dep=queries[1][0], idxs=queries[1][1])  # replaced: the index must not go stale
    assert [group.has_pruning_op(*q) for q in queries] == [original(group, *q) for q in queries]
    assert group.has_pruning_op(*queries[1]) and not group.has_pruning_op(*queries[0])


def test_the_indexed_merge_folds_each_item_into_the_first_on_its_layer() -> None:
    """``add_and_merge`` makes the same items, in the same order, with the same merged indices."""
    rng = random.Random(5)
    layers, handlers = [object() for _ in range(4)], [len, repr]
    deps = [_Dep(rng.choice(layers), rng.choice(handlers)) for _ in range(30)]
    pairs = [(dep, hybrid([(rng.randrange(9), rng.randrange(3)) for _ in range(4)])) for dep in deps]
    ours, theirs = Group(), Group()
    for group in (ours, theirs):  # two items on one layer, as ``add_dep`` allows: the first takes the merges
        group.add_dep(deps[0], hybrid([(0, 0)]))
        group.add_dep(deps[0], hybrid([(1, 1)]))
    for dep, idxs in pairs:
        ours.add_and_merge(dep, idxs)
        Group.add_and_merge.secateur_original(theirs, dep, idxs)
    assert 3 < len(ours) < len(pairs) and len(ours[1].idxs) == 1
    assert [(item.dep, item.idxs) for item in ours] == [(item.dep, item.idxs) for item in theirs]


def test_the_collector_is_held_off_in_the_block_and_restored_after_it() -> None:
    assert gc.isenabled()
    with pytest.raises(ValueError, match="inside"), collector_paused():
        assert not gc.isenabled()
        raise ValueError("inside")
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()  # it was off before: it stays off
    finally:
        gc.enable()
