"""The pruning plan: which channels of which group go, decided from scores and a target.

A plan is plain data (group id → kept channel indices, blocks to remove), so
it can be shown, edited and stored in reports. Its predicted params and MACs
are computed from the layer sizes, independently of the surgery, and the
surgery must land on exactly those numbers.

Targets: ``ratio`` removes that fraction of the prunable channels (per group,
or of all channels at once with global ranking); ``macs`` removes that
fraction of the model's MACs, found by bisection on the ratio and reached
within ±2 points. For block methods, ``ratio`` is the fraction of the scored
removable blocks, ``blocks`` a number of blocks, and ``macs`` takes the
least important blocks until the reduction is reached.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import FrozenInstanceError, dataclass, field, replace
from types import MappingProxyType
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.graph.attention import head_scaled
from secateur.core.graph.blocks import BlockInfo, stage_of
from secateur.core.graph.constraints import Blocks
from secateur.core.graph.groups import GroupInfo
from secateur.core.graph.indices import covers_in_order
from secateur.core.pruning.scoring import Scores

MACS_TOLERANCE = 0.02


@dataclass(frozen=True)
class Target:
    """What to remove: a fraction of the channels (``ratio``) or of the MACs (``macs``)."""

    kind: str
    value: float

    def __post_init__(self) -> None:
        if self.kind not in ("ratio", "macs", "blocks", "latency"):
            raise InputError(f"target kind {self.kind!r}: expected ratio, macs, blocks or latency")
        if self.kind == "blocks":
            if self.value != int(self.value) or self.value < 1:
                raise InputError(f"--blocks {self.value}: must be a whole number of blocks, at least 1")
            return
        option = {"ratio": "--ratio", "macs": "--macs-reduction", "latency": "--latency-reduction"}[self.kind]
        if not 0.0 < self.value < 1.0:
            raise InputError(f"{option} {self.value}: must be strictly between 0 and 1")

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value}


@dataclass
class PlanOptions:
    """How scores become a plan. Locks and overrides name a group id or any layer of a group."""

    global_ranking: bool = False
    max_layer_ratio: float = 0.9
    min_channels: int = 1
    round_to: int = 1
    locked: tuple[str, ...] = ()
    overrides: dict[str, float] = field(default_factory=dict)
    min_stage_blocks: int = 2  # a stage keeps at least this many residual blocks (the CKA paper's code)
    raw_scores: bool = False  # global ranking compares raw scores (methods whose scores are comparable across layers)
    latency_batch_size: int = 1  # the batch a latency target is measured at
    latency_rounds: int = 15  # interleaved timed runs per candidate plan of a latency target
    latency_table: bool = False  # plan from the device's latency table (snapping; a latency target by knapsack)
    snap_widths: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # group id → widths to round up to

    def __post_init__(self) -> None:
        if self.min_stage_blocks < 1:
            raise InputError(f"--min-stage-blocks {self.min_stage_blocks}: a stage keeps at least 1 block")
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise InputError(f"per-layer cap {self.max_layer_ratio}: must be strictly between 0 and 1")
        if self.latency_batch_size < 1 or self.latency_rounds < 3:
            raise InputError("a latency target needs a batch of at least 1 and at least 3 timed runs")
        if self.latency_table and self.round_to > 1:
            raise InputError("--latency-table replaces --round-to: channel counts go to measured step-down widths")
        if self.min_channels < 1 or self.round_to < 1:
            raise InputError("minimum channels and rounding must be at least 1")
        for name, ratio in self.overrides.items():
            if not 0.0 <= ratio < 1.0:
                raise InputError(f"override {name}={ratio}: a ratio must be in [0, 1)")


class GroupPlan:
    """The channels a group keeps (ascending indices) out of its total. Immutable.

    ``kept`` and ``removed`` are fresh lists on every access, ready to index a
    tensor (a tuple would index several dimensions); changing them changes no plan.
    """

    __slots__ = ("_kept", "_removed", "total")

    def __init__(self, kept: Iterable[int], total: int) -> None:
        object.__setattr__(self, "_kept", tuple(int(index) for index in kept))
        object.__setattr__(self, "total", int(total))
        keep = set(self._kept)  # computed once: size predictions and edit records ask for it per layer
        object.__setattr__(self, "_removed", tuple(index for index in range(self.total) if index not in keep))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: a GroupPlan is immutable")

    @property
    def kept(self) -> list[int]:
        return list(self._kept)

    @property
    def removed(self) -> list[int]:
        return list(self._removed)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GroupPlan) and (self._kept, self.total) == (other._kept, other.total)

    def __hash__(self) -> int:
        return hash((self._kept, self.total))

    def __repr__(self) -> str:
        return f"GroupPlan(kept={list(self._kept)}, total={self.total})"


@dataclass(frozen=True)
class PruningPlan:
    """What goes: channels per group and whole blocks, with the size it predicts.

    Frozen: a method that changes what is removed returns a new plan
    (``dataclasses.replace``) as the effective plan of its ``Applied``.
    """

    method: str
    target: Target
    groups: Mapping[str, GroupPlan]
    blocks_removed: tuple[str, ...] = ()
    predicted_params: int = 0
    predicted_macs: int = 0
    notes: tuple[str, ...] = ()
    options: PlanOptions = field(default_factory=PlanOptions)  # how it was decided; iterative methods re-rank with it

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", MappingProxyType(dict(self.groups)))
        object.__setattr__(self, "blocks_removed", tuple(self.blocks_removed))
        object.__setattr__(self, "notes", tuple(self.notes))

    def with_notes(self, *notes: str) -> PruningPlan:
        """The same plan with more notes."""
        return replace(self, notes=(*self.notes, *notes))

    def __deepcopy__(self, memo: dict) -> PruningPlan:
        return self  # immutable all the way down (options aside, which nothing changes)

    def to_dict(self) -> dict[str, object]:
        return {
            "method": self.method,
            "target": self.target.to_dict(),
            "groups": {
                gid: {"kept": len(g.kept), "total": g.total, "kept_indices": g.kept} for gid, g in self.groups.items()
            },
            "blocks_removed": list(self.blocks_removed),
            "predicted_params": self.predicted_params,
            "predicted_macs": self.predicted_macs,
            "notes": list(self.notes),
        }


# --- deciding kept channels ---------------------------------------------------


def _resolve(names: list[str] | tuple[str, ...], groups: list[GroupInfo], what: str) -> dict[str, str]:
    """Map each user-given name (group id or layer) to its group id, refusing unknown names."""
    by_layer = {layer: group.id for group in groups for layer in group.layers}
    by_id = {group.id: group.id for group in groups}
    resolved = {}
    for name in names:
        if name in by_id:
            resolved[name] = by_id[name]
        elif name in by_layer:
            resolved[name] = by_layer[name]
        else:
            raise InputError(f"{what} {name!r}: no layer or group of that name; see `secateur inspect` for names")
    return resolved


def user_fixed_groups(groups: list[GroupInfo], options: PlanOptions) -> set[str]:
    """The ids of the groups the user locked or gave a ratio of their own: no ranking decides them."""
    return set(_resolve(options.locked, groups, "locked layer").values()) | set(
        _resolve(list(options.overrides), groups, "override").values()
    )


def fewest_kept(total: int, options: PlanOptions) -> int:
    """The fewest units a group may keep: the per-layer cap and the minimum."""
    return max(options.min_channels, math.ceil(total * (1.0 - options.max_layer_ratio)))


def rounded(group: GroupInfo, kept: int, options: PlanOptions) -> int:
    """A channel count made hardware-friendly.

    With a latency table, it goes up to the next width where the measured
    latency steps down (keeping more channels costs nothing until there);
    otherwise to the nearest multiple of ``round_to``. Heads are not rounded.
    """
    widths = options.snap_widths.get(group.id)
    if widths:
        return min((width for width in widths if width >= kept), default=group.channels)
    if options.round_to > 1 and group.kind == "channels":
        kept = max(options.round_to, options.round_to * round(kept / options.round_to))
    return min(group.channels, kept)


def snapped_steps(
    groups: list[GroupInfo], scores: Scores, counts: Mapping[str, int], options: PlanOptions
) -> list[tuple[float, str, int]]:
    """Each group's next snapped width below its count, cheapest first: (score lost per channel, group, width).

    The score lost is that of the channels between the two widths, normalised
    by the group's mean score (as global ranking compares groups).
    """
    steps = []
    for group in groups:
        kept = counts.get(group.id)
        lower = [
            w for w in options.snap_widths.get(group.id, ()) if fewest_kept(group.channels, options) <= w < (kept or 0)
        ]
        if kept is None or not lower or group.id not in scores.groups:
            continue
        width = max(lower)
        values = scores.groups[group.id].double().abs()
        ordered = torch.sort(values, descending=True).values
        lost = float(ordered[width:kept].sum()) / (float(values.mean()) or 1.0)
        steps.append((lost / (kept - width), group.id, width))
    return sorted(steps)


def _kept_count(group: GroupInfo, ratio: float, options: PlanOptions) -> int:
    """Units kept when ``ratio`` of the group is removed, after the cap, minimum and rounding."""
    total = group.channels
    return rounded(group, max(total - math.floor(total * ratio), fewest_kept(total, options)), options)


def _top(scores: torch.Tensor, count: int) -> list[int]:
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[:count].tolist())


def choose_kept(scores: torch.Tensor, count: int, blocks: Blocks | None) -> list[int]:
    """The ``count`` best channels, or, for a group in blocks, the best per block with every block alike.

    Aligned blocks keep the offsets whose mean score over the blocks is
    highest (Torch-Pruning's rule for grouped convs); balanced blocks keep
    their own best channels. Each block keeps ``round(count / blocks)``, at
    least one.
    """
    if blocks is None:
        return _top(scores, count)
    size = len(scores) // blocks.count
    per_block = min(size, max(1, round(count / blocks.count)))
    table = scores.reshape(blocks.count, size)
    if blocks.aligned:
        offsets = _top(table.mean(0), per_block)
        return [block * size + offset for block in range(blocks.count) for offset in offsets]
    return [block * size + offset for block in range(blocks.count) for offset in _top(table[block], per_block)]


def _block_note(group: GroupInfo, kept: list[int], wanted: list[int]) -> str:
    """What the block rule changed against the method's own top channels ("" when nothing)."""
    if kept == wanted or group.blocks is None:
        return ""
    size = group.channels // group.blocks.count
    counts = [sum(1 for index in wanted if index // size == block) for block in range(group.blocks.count)]
    shown = "/".join(map(str, counts)) if len(counts) <= 16 else f"{min(counts)}..{max(counts)}"
    return (
        f"group {group.id}: kept {len(kept)} channels chosen per block, {group.blocks.describe()}; "
        f"the method's top {len(wanted)} fell {shown} across the blocks"
    )


def decide_channels(
    groups: list[GroupInfo],
    scores: Scores,
    ratio: float,
    options: PlanOptions,
    counts: Mapping[str, int] | None = None,
) -> tuple[dict[str, GroupPlan], list[str]]:
    """Kept channels per group for a channel ratio; notes say which groups were left whole and why.

    ``counts`` (group id → channels kept), when given, replaces the ratio for
    the groups it names (a latency knapsack decides them); groups it does not
    name stay whole unless overridden.
    """
    notes: list[str] = []
    locked = set(_resolve(options.locked, groups, "locked layer").values())
    overrides = {_resolve([name], groups, "override")[name]: value for name, value in options.overrides.items()}
    eligible = []
    plans: dict[str, GroupPlan] = {}
    for group in groups:
        if group.plan_note:
            notes.append(group.plan_note)
        if not group.prunable or group.id in locked:
            continue
        if group.id not in scores.groups:
            notes.append(f"group {group.id} was not scored by the method: kept whole")
            continue
        eligible.append(group)
    ranked = [g for g in eligible if g.id not in overrides]
    if counts is not None:
        counts = {g.id: counts.get(g.id, g.channels) for g in ranked}
    elif options.global_ranking:
        counts = _global_counts(ranked, scores, ratio, options)
    else:
        counts = {g.id: _kept_count(g, ratio, options) for g in ranked}
    for group in eligible:
        if group.id in overrides:
            counts[group.id] = _kept_count(group, overrides[group.id], options)
        values = scores.groups[group.id]
        if len(values) != group.channels:
            raise InputError(
                f"group {group.id}: the method gave {len(values)} scores for its {group.channels} channels"
            )
        kept = choose_kept(values, counts[group.id], group.blocks)
        note = _block_note(group, kept, _top(values, counts[group.id]))
        if note:
            notes.append(note)
        plans[group.id] = GroupPlan(kept, group.channels)
    return plans, notes


def _global_counts(groups: list[GroupInfo], scores: Scores, ratio: float, options: PlanOptions) -> dict[str, int]:
    """Remove the globally least important channels, scores normalised by each group's mean unless raw."""
    entries = []
    for group in groups:
        values = scores.groups[group.id]
        mean = 1.0 if options.raw_scores else float(values.abs().mean()) or 1.0
        entries.extend((float(v) / mean, group.id) for v in values)
    entries.sort(key=lambda entry: entry[0])
    budget = math.floor(ratio * len(entries))
    kept = {group.id: group.channels for group in groups}
    floor_kept = {group.id: fewest_kept(group.channels, options) for group in groups}
    for _, group_id in entries:
        if budget == 0:
            break
        if kept[group_id] > floor_kept[group_id]:
            kept[group_id] -= 1
            budget -= 1
    return {group.id: rounded(group, kept[group.id], options) for group in groups}


# --- deciding removed blocks ---------------------------------------------------


def rank_blocks(blocks: list[BlockInfo], scores: Scores, options: PlanOptions) -> tuple[list[str], list[str]]:
    """Blocks in the order they may go (least important first), and notes on those that may not.

    A block may go when it is removable, scored, not locked, and its stage
    (the container it sits in) still holds more than ``min_stage_blocks``
    residual blocks after the blocks before it in the order are gone.
    """
    notes = []
    left_in_stage: dict[str, int] = {}
    for block in blocks:
        left_in_stage[stage_of(block.name)] = left_in_stage.get(stage_of(block.name), 0) + 1
    locked = set(options.locked)
    candidates = []
    for block in blocks:
        if not block.removable:
            continue
        if block.name in locked:
            notes.append(f"block {block.name} is locked: kept")
        elif block.name not in scores.blocks:
            notes.append(f"block {block.name} was not scored by the method: kept")
        else:
            candidates.append(block.name)
    candidates.sort(key=lambda name: scores.blocks[name])
    order = []
    for name in candidates:
        stage = stage_of(name)
        if left_in_stage[stage] > options.min_stage_blocks:
            left_in_stage[stage] -= 1
            order.append(name)
    return order, notes


def block_count(target: Target, order: list[str], scored: int, options: PlanOptions) -> int:
    """How many blocks a ``blocks`` or ``ratio`` target removes; refused when the order is too short."""
    wanted = int(target.value) if target.kind == "blocks" else max(1, round(target.value * scored))
    if wanted > len(order):
        option = f"--blocks {wanted}" if target.kind == "blocks" else f"--ratio {target.value} ({wanted} blocks)"
        raise InputError(
            f"{option}: only {len(order)} blocks can be removed (scored, removable, and each stage keeping "
            f"{options.min_stage_blocks} blocks); ask for fewer or lower --min-stage-blocks"
        )
    return wanted


def predict_without_blocks(
    model: nn.Module, removed: list[str], own_macs: dict[str, int], total_macs: int
) -> tuple[int, int]:
    """Params and MACs once ``removed`` blocks are replaced by their parameter-free, MAC-free bypass."""
    params = sum(p.numel() for p in model.parameters())
    macs = total_macs
    for name in removed:
        params -= sum(p.numel() for p in model.get_submodule(name).parameters())
        macs -= sum(value for module, value in own_macs.items() if module == name or module.startswith(name + "."))
    return params, macs


def with_removed_blocks(plan: PruningPlan, edits: list[dict[str, Any]] | tuple[dict[str, Any], ...]) -> PruningPlan:
    """The plan naming the blocks apply removed: an iterative method re-scores and may choose others."""
    removed = tuple(name for edit in edits if edit.get("kind") == "remove_blocks" for name in edit["blocks"])
    if not removed or removed == plan.blocks_removed:
        return plan
    note = f"planned blocks {list(plan.blocks_removed)}; re-scoring between removals chose {list(removed)}"
    return replace(plan, blocks_removed=removed, notes=(*plan.notes, note))


# --- predicting the pruned size -----------------------------------------------


@dataclass
class _LayerDims:
    out_total: int = 0
    in_total: int = 0
    out_removed: int = 0
    in_removed: int = 0


def _removed_per_layer(
    graph: tp.DependencyGraph, groups: list[GroupInfo], plans: dict[str, GroupPlan]
) -> dict[nn.Module, _LayerDims]:
    """How many input and output channels each layer loses under the plan (concatenations included)."""
    dims: dict[nn.Module, _LayerDims] = {}
    for group in groups:
        if group.id not in plans or group.handle is None:
            continue
        removed = set(plans[group.id].removed)
        for item in group.handle:
            module = item.dep.target.module
            if covers_in_order(item.root_idxs, group.channels):
                lost = len(removed)
            else:
                lost = sum(map(removed.__contains__, item.root_idxs)) if removed else 0  # a root may repeat: count all
            entry = dims.setdefault(module, _LayerDims())
            if graph.is_out_channel_pruning_fn(item.dep.handler):
                entry.out_removed += lost
            else:
                entry.in_removed += lost
    return dims


def _layer_factor(module: nn.Module, dims: _LayerDims) -> tuple[float, float]:
    """(weight scale, MACs scale) of one layer after losing channels."""
    if isinstance(module, nn.modules.conv._ConvNd):
        out_new = module.out_channels - dims.out_removed
        if module.groups == module.in_channels == module.out_channels:  # depthwise: in and out are tied
            scale = out_new / module.out_channels
            return scale, scale
        in_new = module.in_channels - dims.in_removed
        scale = (out_new / module.out_channels) * (in_new / module.in_channels)
        return scale, scale
    if isinstance(module, nn.Linear):
        scale = (module.out_features - dims.out_removed) / module.out_features
        scale *= (module.in_features - dims.in_removed) / module.in_features
        return scale, scale
    return 1.0, 1.0


def _head_fractions(
    model: nn.Module, groups: list[GroupInfo], plans: dict[str, GroupPlan]
) -> dict[nn.Module, tuple[float, bool]]:
    """Scale factor of every tensor and product that shrinks with an attention layer's kept heads.

    Each entry also says whether the module's bias stays whole (an output projection's does).
    """
    factors: dict[nn.Module, tuple[float, bool]] = {}
    for group in groups:
        if group.kind != "heads" or group.id not in plans:
            continue
        fraction = len(plans[group.id].kept) / group.channels
        for module, keeps_bias in head_scaled(model.get_submodule(group.layers[0])):
            factors[module] = (fraction, keeps_bias)
    return factors


def _bare_parameter_size(graph: tp.DependencyGraph, parameter: nn.Parameter, removed: int) -> int:
    """Elements left of a bare parameter once ``removed`` slices go along Torch-Pruning's pruning dimension."""
    dim = graph.module2node[parameter].pruning_dim
    return parameter.numel() // parameter.shape[dim] * (parameter.shape[dim] - removed)


def predict_size(
    model: nn.Module,
    graph: tp.DependencyGraph,
    groups: list[GroupInfo],
    plans: dict[str, GroupPlan],
    own_macs: dict[str, int],
) -> tuple[int, int]:
    """Params and MACs of the model once the plan is applied, from layer shapes alone.

    Exact for convolutions (depthwise included), linear layers, normalisation
    layers, other per-channel parameters and attention heads; ``own_macs``
    holds each module's own MACs before pruning. Removing heads scales every
    q/k/v projection output, the output projection's inputs and the
    attention products by the fraction of heads kept; the output
    projection's bias stays.
    """
    dims = _removed_per_layer(graph, groups, plans)
    heads = _head_fractions(model, groups, plans)
    params = 0
    macs = 0
    for name, module in model.named_modules():
        entry = dims.get(module, _LayerDims())
        weight_scale, macs_scale = _layer_factor(module, entry)
        head, keeps_bias = heads.get(module, (1.0, False))
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if parameter_name == "weight" and isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
                params += round(parameter.numel() * weight_scale * head)
            elif parameter in dims:  # a bare nn.Parameter in a group (a class token, ConvNeXt's 1-D gamma)
                params += _bare_parameter_size(graph, parameter, dims[parameter].out_removed)
            elif parameter.dim() == 1:  # biases and per-channel vectors run along the output channels
                params += round((parameter.numel() - entry.out_removed) * (1.0 if keeps_bias else head))
            else:
                params += round(parameter.numel() * head)
        macs += round(own_macs.get(name, 0) * macs_scale * head)
    return params, macs
