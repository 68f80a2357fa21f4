"""Torch-Pruning's dependency groups, as plain records for the layer tree.

A group is the set of layers whose channels must be pruned together (a conv,
its BatchNorm, the next conv's inputs, and every layer tied to them by a
residual addition or a concatenation). Secateur never traces dependencies
itself: it asks ``torch_pruning.DependencyGraph``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial

import torch
import torch_pruning as tp
from torch import nn
from torch_pruning.dependency import group as tp_group
from torch_pruning.dependency import index_mapping

from secateur.core.common.collector import collector_paused
from secateur.core.common.errors import Cancelled, InputError, first_line
from secateur.core.graph import group_index  # noqa: F401  (Torch-Pruning's group lookups, indexed)
from secateur.core.graph.attention import ATTENTION_TYPES, HEADS_SUFFIX, head_internal, is_attention
from secateur.core.graph.constraints import (
    Blocks,
    concat_with_depthwise,
    group_blocks,
    index_past_width,
    passes_shuffle,
    passes_slice,
    passes_split,
    width_mismatch,
)
from secateur.core.graph.indices import gathered, spread
from secateur.core.graph.timm_layers import timm_attention_lock
from secateur.core.graph.tp_patch import patch_once
from secateur.core.graph.trace_spy import spying_trace


@dataclass
class GroupInfo:
    """One dependency group: its id (the root layer's name), width and members."""

    id: str
    channels: int
    layers: list[str]
    prunable: bool
    out_layers: list[str] = field(default_factory=list)  # layers whose outputs are these channels
    handle: tp.Group | None = field(default=None, repr=False)  # Torch-Pruning's group; None when locked
    locked_because: str = ""
    kind: str = "channels"  # or "heads": the units are an attention layer's heads
    blocks: Blocks | None = None  # channels kept in balanced blocks (grouped convs, GroupNorm)
    plan_note: str = ""  # said in every plan: a lock the user did not ask for, on a layer they may expect pruned

    def to_dict(self) -> dict[str, object]:
        result = {
            "id": self.id,
            "channels": self.channels,
            "layers": self.layers,
            "prunable": self.prunable,
            "kind": self.kind,
        }
        if self.locked_because:
            result["locked_because"] = self.locked_because
        if self.blocks is not None:
            result["blocks"] = self.blocks.to_dict()
        return result


def _attention_member(modules: Mapping[str, nn.Module], name: str | None) -> str | None:
    """The attention layer that ``name`` is, or whose projection it is; else None."""
    if name is None:
        return None
    for candidate in (name, name.rpartition(".")[0]):
        if candidate and isinstance(modules[candidate], ATTENTION_TYPES):
            return candidate
    return None


def _lock_reason(
    modules: Mapping[str, nn.Module], graph: tp.DependencyGraph, group: tp.Group, names: dict[nn.Module, str]
) -> str:
    """Why a group's channels cannot be cut one by one ("" when they can)."""
    for item in group:
        name = names.get(item.dep.target.module)
        attention = _attention_member(modules, name)
        if attention:
            return f"the attention embedding of {attention} (its channels go by whole heads)"
        fused = head_internal(modules, name, graph.is_out_channel_pruning_fn(item.dep.handler)) if name else None
        if fused and is_attention(modules[fused]):
            return f"the heads of {fused} (cut by whole heads in the {fused}{HEADS_SUFFIX} group)"
        if fused:
            return f"the heads of {fused}, whose per-head tensors (such as a position bias) Secateur cannot cut yet"
    if passes_shuffle(group, getattr(graph, "shuffles", [])):
        return "its channels pass through a channel shuffle, which Torch-Pruning maps as if it kept their order"
    if passes_split(group):
        return "its channels pass through a torch.split or chunk, whose sizes are fixed in the model's code"
    if passes_slice(group):
        return "its channels pass through a slice (x[:, a:b]), whose bounds are fixed in the model's code"
    past = index_past_width(group, graph)
    if past is not None:
        layer, width, index = past
        return (
            f"Torch-Pruning maps its channels past {names.get(layer, 'a layer')}'s {width} (index {index}): "
            "a transpose or reshape it does not follow"
        )
    if concat_with_depthwise(group):
        return (
            "its channels are concatenated with a depthwise convolution of themselves (GhostNet's ghost module), "
            "so cutting one channel would cut another with it"
        )
    return ""


def build_dependency_graph(model: nn.Module, example: torch.Tensor) -> tp.DependencyGraph:
    """Torch-Pruning's graph of ``model`` traced on ``example`` (the model is not changed).

    Tracing needs autograd, so it is enabled here even when the caller runs under ``torch.no_grad()``.
    The channel shuffles seen in that pass are kept on the graph (``shuffles``) so
    the groups that run through one can be told apart.
    """
    with warnings.catch_warnings(), torch.enable_grad(), spying_trace(model) as spy:
        warnings.simplefilter("ignore")  # tp warns about unwrapped parameters such as ViT's class token
        graph = tp.DependencyGraph()
        graph.trace_spy = spy  # read by the concatenation mapping while the graph is built
        try:
            # a tuple, so Torch-Pruning calls model(example) once instead of first trying model(*example)
            graph.build_dependency(model, example_inputs=(example,))
        except Exception as error:
            raise _trace_error(error, example, spy.forward_done) from error
    graph.shuffles = spy.shuffles()
    _detach_cached_tensors(model)
    return graph


def _trace_error(error: Exception, example: torch.Tensor, forward_done: bool) -> InputError:
    """Why tracing failed: the model's own forward pass on this input, or Torch-Pruning's analysis of it."""
    cause = f"{type(error).__name__}: {first_line(error)[:300]}"
    shape = tuple(example.shape[1:])
    if not forward_done:
        return InputError(
            f"the model cannot be traced on an input of shape {shape} ({cause}); "
            "check --input-size and that the model runs on it"
        )
    return InputError(
        f"the model runs on an input of shape {shape}, but Torch-Pruning cannot build its dependency graph "
        f"({cause}); a larger --input-size can change the traced shapes, otherwise this architecture "
        "cannot be pruned by Secateur yet"
    )


def _detach_cached_tensors(model: nn.Module) -> None:
    """Detach tensors a module cached during the traced forward pass (it ran with autograd on).

    timm's LeViT keeps its attention biases in a per-device dict in eval mode;
    traced, the cached tensor holds the whole tracing graph, and
    ``copy.deepcopy`` of the model (Intra-Fusion's apply) refused it ("Only
    Tensors created explicitly by the user … support the deepcopy protocol").
    The values stay the same; only the autograd history goes.
    """
    for module in model.modules():
        for name, value in vars(module).items():
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                setattr(module, name, value.detach())
            elif isinstance(value, dict) and not name.startswith("_"):
                for key, item in value.items():
                    if isinstance(item, torch.Tensor) and item.grad_fn is not None:
                        value[key] = item.detach()


def _tolerant(update: Callable[[tp.DependencyGraph, object], None]) -> Callable[[tp.DependencyGraph, object], None]:
    """Torch-Pruning 1.6's reshape mapping, skipping a reshape it cannot map instead of dividing by zero.

    ``update_reshape_index_mapping`` divides by an inferred channel count that
    is 0 for ShuffleNetV2's channel shuffle, on every ``get_pruning_group``.
    Skipping the mapping is what it does for every other reshape it does not
    understand (the identity); the groups through a shuffle are kept whole.
    """

    def tolerant(graph: tp.DependencyGraph, node: object) -> None:
        try:
            update(graph, node)
        except ZeroDivisionError:
            return

    return tolerant


def _sized(update: Callable[[tp.DependencyGraph, object], None]) -> Callable[[tp.DependencyGraph, object], None]:
    """Torch-Pruning 1.6's concatenation mapping, with the sizes it could not infer taken from the traced pass.

    ``update_concat_index_mapping`` adds up the inferred sizes of a concatenation's
    inputs, and an input it could not infer (None) raised a TypeError that stopped
    the whole trace (swin_s). The spy saw the real sizes; only the unknown ones are
    filled in, so every concatenation that mapped before maps the same way.
    """

    def sized(graph: tp.DependencyGraph, node: object) -> None:
        try:
            update(graph, node)
        except TypeError:
            spy = getattr(graph, "trace_spy", None)
            seen = spy.joined_sizes(node.grad_fn) if spy is not None else None  # type: ignore[attr-defined]
            inferred = node.module.concat_sizes  # type: ignore[attr-defined]
            if seen is None or inferred is None or len(seen) != len(inferred):
                raise
            filled = [size if size is not None else fill for size, fill in zip(inferred, seen, strict=True)]
            node.module.concat_sizes = filled  # type: ignore[attr-defined]
            update(graph, node)

    return sized


patch_once(index_mapping, "update_reshape_index_mapping", _tolerant)
patch_once(index_mapping, "update_concat_index_mapping", _sized)


# More indices than any real layer has: a flatten that maps a group past this is compounding
# reshapes it does not understand (Swin's window partition), not a Linear's input. The same
# bound holds for all the flattens one group's mapping goes through together: VGG-16's largest
# group passes 75 k indices through its flattens, AlexNet's 46 k.
MAX_MAPPED_INDICES = 1 << 19


@dataclass
class _Mapping:
    """One group's mapping under way: the indices its flattens mapped so far, and a cancellation check."""

    mapped: int = 0
    check: Callable[[], None] | None = None


_mapping: ContextVar[_Mapping | None] = ContextVar("mapping", default=None)


def _bounded(call: Callable[[object, list], list]) -> Callable[[object, list], list]:
    """Torch-Pruning 1.6's flatten mapping, made in C loops, and refusing to expand a group past ``MAX_MAPPED_INDICES``.

    Through Swin's window partition and patch merging every flatten multiplies
    the indices again: tracing swin_t's groups ran for more than 25 minutes and
    took 13.6 GB before it was stopped. Through MaxViT's window and grid
    partitions no single flatten is that large, but the mapping passes about
    100 k indices around and around (maxvit_t: over 16 minutes and 18 GB for
    one group). Refused, the root is reported and kept whole like any other
    root Torch-Pruning cannot map. The lists are Torch-Pruning's, made by
    ``indices.spread`` and ``indices.gathered`` (``call`` is not needed).
    """

    def bounded(mapping: object, idxs: list) -> list:
        stride = mapping._stride  # type: ignore[attr-defined]
        if mapping.reverse:  # type: ignore[attr-defined]
            return gathered(idxs, stride)
        expanded = len(idxs) * stride
        if expanded > MAX_MAPPED_INDICES:
            raise OverflowError(f"a flatten would map {len(idxs)} indices to {expanded}")
        mapping_now = _mapping.get()
        if mapping_now is not None:
            if mapping_now.check is not None:
                mapping_now.check()  # MaxViT's refused groups take seconds: Cancel lands between flattens
            mapping_now.mapped += expanded
            if mapping_now.mapped > MAX_MAPPED_INDICES:
                raise OverflowError(f"the group's flattens map more than {MAX_MAPPED_INDICES} indices in all")
        return spread(idxs, stride)

    return bounded


patch_once(index_mapping._FlattenIndexMapping, "__call__", _bounded)


# Far more dependencies than any real group holds (maxvit_t's largest has 3,122, vit_h_14's 1,324): a
# group past this is Torch-Pruning revisiting the same layers with ever new index sets.
MAX_GROUP_ITEMS = 10_000


def _capped(add_dep: Callable[[tp.Group, object, list], None]) -> Callable[[tp.Group, object, list], None]:
    """Torch-Pruning 1.6's ``Group.add_dep``, refusing to grow a group past ``MAX_GROUP_ITEMS`` while mapping it.

    timm's rexnet_100 adds each block's output to a slice of its input and
    concatenates the rest: each path through the blocks reaches the layers with
    other indices, so the group grows with the number of paths (50 k
    dependencies after 200 s for its first root, each checked against all the
    others), and collecting its groups ran for 45 minutes without an end.
    Refused, the root is reported and kept whole like any other root
    Torch-Pruning cannot map.
    """

    def capped(group: tp.Group, dep: object, idxs: list) -> None:
        if _mapping.get() is not None and len(group.items) >= MAX_GROUP_ITEMS:
            raise OverflowError(f"the group reaches more than {MAX_GROUP_ITEMS} layer dependencies")
        add_dep(group, dep, idxs)

    return capped


patch_once(tp_group.Group, "add_dep", _capped)


# The graphs whose index mappings are up to date while groups are collected (nothing is cut meanwhile).
_mapped_graphs: ContextVar[set[int] | None] = ContextVar("mapped_graphs", default=None)


def _once_while_collecting(update: Callable[[tp.DependencyGraph], None]) -> Callable[[tp.DependencyGraph], None]:
    """Torch-Pruning 1.6's ``update_index_mapping``, run once per graph while groups are collected.

    ``get_pruning_group`` recomputes every concatenation, split and reshape
    mapping of the whole graph on each call, so that it follows earlier cuts.
    While the groups are collected nothing is cut, and the mappings cannot
    change: recomputing them for each root made collecting DenseNet's groups
    quadratic (densenet121 2.2 s of 3.3 s, densenet201 28 s at 64×64). Outside
    ``dependency_groups``' collection (surgery cuts between two groups) it runs every
    time, as before; an update that fails is tried again, so a failing root is
    reported as before.
    """

    def once(graph: tp.DependencyGraph) -> None:
        mapped = _mapped_graphs.get()
        if mapped is not None and id(graph) in mapped:
            return
        update(graph)
        if mapped is not None:
            mapped.add(id(graph))

    return once


patch_once(index_mapping, "update_index_mapping", _once_while_collecting)


_ROOT_TYPES = (nn.modules.conv._ConvNd, nn.Linear)
UNMAPPED = "Torch-Pruning cannot map this group's channels"  # how a root it cannot map is locked
GROUPS_STAGE = "dependency groups"
Reporter = Callable[[str, int, int], None]  # (stage, done, total), as a Progress takes it


def _mapped_group(
    graph: tp.DependencyGraph, root: nn.Module, pruner: object, check: Callable[[], None] | None = None
) -> tuple[tp.Group | None, str]:
    """Torch-Pruning's group of ``root``'s output channels, or None and what failed (its flattens bounded in all)."""
    token = _mapping.set(_Mapping(check=check))
    try:
        channels = list(range(pruner.get_out_channels(root)))  # type: ignore[attr-defined]
        with collector_paused():  # a refused group makes 500 k index tuples, and no cycles
            return graph.get_pruning_group(root, pruner.prune_out_channels, channels), ""  # type: ignore[attr-defined]
    except Cancelled:
        raise
    except Exception as error:  # Torch-Pruning's index mapping failed on this root
        return None, f"{type(error).__name__} in its index mapping: {error}"
    finally:
        _mapping.reset(token)


def _all_groups(
    graph: tp.DependencyGraph, ignored: list[nn.Module], progress: Reporter | None = None
) -> Iterator[tuple[nn.Module, tp.Group | None, str]]:
    """Torch-Pruning's ``get_all_groups``, one root at a time, so that a root it cannot map is reported, not fatal.

    Yields (root, group, "") or (root, None, what failed). ``progress`` hears
    of each root (MaxViT's take seconds each; it may raise to stop).
    """
    visited: set[nn.Module] = set()
    ignored = ignored + list(graph.IGNORED_LAYERS_IN_TRACING)
    roots = [m for m in graph.module2node if m not in ignored and isinstance(m, _ROOT_TYPES)]
    for index, module in enumerate(roots):
        if progress is not None:
            progress(GROUPS_STAGE, index, len(roots))
        if module in visited:
            continue
        pruner = graph.get_pruner_of_module(module)
        if pruner is None or pruner.get_out_channels(module) is None:
            continue
        check = None if progress is None else partial(progress, GROUPS_STAGE, index, len(roots))
        group, failure = _mapped_group(graph, module, pruner, check)
        if group is None:
            visited.add(module)
            yield module, None, failure
            continue
        prunable = True
        for item in group:
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                visited.add(item.dep.target.module)
                prunable = prunable and item.dep.target.module not in ignored
        if prunable:
            yield module, group, ""


def dependency_groups(
    model: nn.Module, graph: tp.DependencyGraph, locked: list[str], progress: Reporter | None = None
) -> list[GroupInfo]:
    """Every prunable group, then one locked group per layer in ``locked`` (the classifier)."""
    names = {module: name for name, module in model.named_modules()}
    modules = dict(model.named_modules(remove_duplicate=False))  # by name, in a dict: get_submodule walks the path
    locked_modules = [model.get_submodule(name) for name in locked]
    groups: list[GroupInfo] = []
    token = _mapped_graphs.set(set())  # nothing is cut while the groups are collected
    try:
        collected = list(_all_groups(graph, locked_modules, progress))
    finally:
        _mapped_graphs.reset(token)
    for root, group, failure in collected:
        if group is None:
            width = int(graph.get_out_channels(root) or 0)
            reason = f"{UNMAPPED} ({failure})"
            groups.append(GroupInfo(names.get(root, "?"), width, [names.get(root, "?")], False, [], None, reason))
            continue
        root = group[0].dep.target.module
        members: list[str] = []
        out_layers: list[str] = []
        for item in group:
            module = item.dep.target.module
            name = names.get(module)
            if name is None:
                continue
            if name not in members:
                members.append(name)
            if graph.is_out_channel_pruning_fn(item.dep.handler) and name not in out_layers:
                out_layers.append(name)
        channels = len(group[0].idxs)
        reason = _lock_reason(modules, graph, group, names)
        blocks, unbalanced = (None, "") if reason else group_blocks(group, graph, names, channels)
        reason = reason or unbalanced
        if reason:
            groups.append(GroupInfo(names[root], channels, members, False, out_layers, None, reason))
            continue
        timm_lock = next(filter(None, (timm_attention_lock(modules, name) for name in members)), "")
        if timm_lock:
            note = f"group {names[root]} kept whole: {timm_lock}"
            groups.append(GroupInfo(names[root], channels, members, False, out_layers, None, timm_lock))
            groups[-1].plan_note = note
            continue
        mismatch = width_mismatch(group, graph)
        if mismatch is not None:  # last: a group another rule locks says that rule's reason
            layer, width, _ = mismatch
            reason = (
                f"Torch-Pruning maps its {channels} channels onto {names.get(layer, 'a layer')}'s {width}, with no "
                "concatenation, split or slice between: a transpose it reads as the identity"
            )
            groups.append(GroupInfo(names[root], channels, members, False, out_layers, None, reason))
            continue
        groups.append(GroupInfo(names[root], channels, members, True, out_layers, group, blocks=blocks))
    for name, module in model.named_modules():
        if is_attention(module):
            groups.append(
                GroupInfo(f"{name}{HEADS_SUFFIX}", int(module.num_heads), [name], True, [], None, "", "heads")
            )
    for name, module in zip(locked, locked_modules, strict=True):
        width = getattr(module, "out_features", None) or getattr(module, "out_channels", 0)
        groups.append(GroupInfo(name, int(width), [name], False, [name], None, "the classifier's outputs"))
    return groups
