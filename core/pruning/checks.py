"""Checks around surgery: the plan against the groups before, the pruned model's forward pass after.

A plan can come from the planner, from a plugin that returns an effective
plan, or from a user's edit; surgery trusts its indices. ``check_plan``
refuses, before anything is cut, a plan whose indices are out of range, that
empties a group, or that breaks a group's block structure (grouped
convolutions), naming the group, the layer and the rule. ``check_runs``
proves the pruned model still runs on the example input (a large model's code
on meta tensors first, where every shape is checked and nothing computed), and
says that pruning broke it, with the groups cut, when it does not: the model
ran before.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.func import functional_call

from secateur.core.common.errors import InputError, WorkError, first_line
from secateur.core.graph.constraints import Blocks
from secateur.core.graph.groups import GroupInfo
from secateur.core.pruning.plan import GroupPlan, PruningPlan


def _block_problem(kept: list[int], total: int, blocks: Blocks) -> str:
    """How ``kept`` breaks the block rule ("" when it keeps it)."""
    size = total // blocks.count
    per_block = [sorted(index % size for index in kept if index // size == block) for block in range(blocks.count)]
    counts = [len(offsets) for offsets in per_block]
    if len(set(counts)) > 1:
        shown = "/".join(map(str, counts)) if len(counts) <= 16 else f"between {min(counts)} and {max(counts)}"
        return f"keeps {shown} channels across the {blocks.describe()}; every block must keep as many"
    if blocks.aligned and any(offsets != per_block[0] for offsets in per_block):
        return f"keeps different offsets in the {blocks.describe()}; every block must keep the same offsets"
    return ""


def check_group(group: GroupInfo, plan: GroupPlan) -> str:
    """What is wrong with one group's plan ("" when nothing): range, emptiness, block structure."""
    unit = "heads" if group.kind == "heads" else "channels"
    if plan.total != group.channels:
        return f"plans {plan.total} {unit} but the group has {group.channels}"
    kept = plan.kept
    outside = [index for index in kept if not 0 <= index < group.channels]
    if outside:
        return f"keeps {unit} {outside[:5]} outside 0..{group.channels - 1}"
    if len(set(kept)) != len(kept):
        return f"lists a kept {unit[:-1]} twice"
    if not kept:
        return f"keeps no {unit}: the group would be emptied"
    if group.blocks is not None:
        return _block_problem(kept, group.channels, group.blocks)
    return ""


def check_plan(groups: list[GroupInfo], plan: PruningPlan) -> None:
    """Refuse (InputError, exit 2) a plan that surgery cannot carry out, before anything is cut."""
    by_id = {group.id: group for group in groups}
    for group_id, group_plan in plan.groups.items():
        group = by_id.get(group_id)
        if group is None:
            raise InputError(f"plan: group {group_id!r} does not exist in this model; see `secateur inspect`")
        if not group_plan.removed:
            continue
        if not group.prunable:
            layers = ", ".join(group.layers[:3])
            raise InputError(f"plan: group {group_id} (layers {layers}) cannot be pruned: {group.locked_because}")
        problem = check_group(group, group_plan)
        if problem:
            raise InputError(f"plan: group {group_id} (layers {', '.join(group.layers[:3])}) {problem}")


def cut_groups(plan: PruningPlan) -> list[str]:
    """The groups a plan cuts, and the blocks it removes, for messages."""
    return [gid for gid, g in plan.groups.items() if g.removed] + list(plan.blocks_removed)


# Above this many MACs per example, the pruned model's forward pass on the CPU (0.1–0.7 s: resnet50, vit_b_16
# at one thread) costs more than running its code on the meta device (0.05–0.09 s, shapes only, no arithmetic).
META_CHECK_MACS = 2_000_000_000


def runs_on_meta(model: nn.Module, example: torch.Tensor) -> bool:
    """Whether the model's forward pass goes through on the meta device: every shape checked, nothing computed.

    False when anything fails, a shape or an op that has no meta kernel or
    reads values (``.item()``); the caller then runs the model for real.
    The model's own tensors are not touched (they are swapped for meta ones
    during the call only).
    """
    named = itertools.chain(model.named_parameters(remove_duplicate=False), model.named_buffers(remove_duplicate=False))
    tensors = {name: tensor.to("meta") for name, tensor in named}
    try:
        with torch.no_grad():
            functional_call(model.eval(), tensors, (example.to("meta"),))
    except Exception:  # a break, or code the meta device cannot run: the real forward pass decides
        return False
    return True


def check_runs(model: nn.Module, example: torch.Tensor, plan: PruningPlan, method: str) -> None:
    """Run the pruned model on the example input; if it fails, pruning broke it (the model ran before).

    A large model on the CPU is first run on the meta device, which checks the
    same shapes at a fraction of the time; only if that fails does it run for real.
    """
    if example.device.type == "cpu" and plan.predicted_macs >= META_CHECK_MACS and runs_on_meta(model, example):
        return
    try:
        with torch.no_grad():
            model.eval()(example)
    except Exception as error:
        cut = cut_groups(plan)
        shown = ", ".join(cut[:8]) + (f" and {len(cut) - 8} more" if len(cut) > 8 else "")
        first = first_line(error)
        raise WorkError(
            f"pruning with {method or 'the plan'} broke the model: it ran before, but after cutting "
            f"{shown or 'nothing'} it fails on the example input ({type(error).__name__}: {first[:300]}). "
            "This is a bug in Secateur's handling of this architecture, not in the model or the data; "
            "nothing was saved "
            "(rerun with --debug for the traceback)"
        ) from error
