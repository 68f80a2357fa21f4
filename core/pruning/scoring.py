"""Scores and the context a method scores against.

A method's ``score(context, params)`` is a generator: it yields partial
``Scores`` (one dependency group or block at a time, detached, on the CPU) as
soon as each exists, so the window can draw heatmaps while the method runs,
and may ``return`` a state object for its ``apply``. The host merges the
partial scores, checks their shapes, checks cancellation between yields and
keeps ``Scored(scores, state)``. A method never modifies ``context.model``;
whatever it needs to change (gradients, masks, training) it does on
``context.copy_model()``.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import NamedTuple

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from secateur.core.common.errors import InputError, SecateurError, WorkError
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings, UsesSettings
from secateur.core.data.loading import DataBundle
from secateur.core.graph.blocks import BlockInfo
from secateur.core.graph.groups import GroupInfo
from secateur.core.pruning.contract import Scored


@dataclass
class Scores:
    """Importance per dependency group (one value per channel) and per residual block."""

    groups: dict[str, torch.Tensor] = field(default_factory=dict)
    blocks: dict[str, float] = field(default_factory=dict)

    def update(self, other: Scores) -> None:
        self.groups.update(other.groups)
        self.blocks.update(other.blocks)

    def to_dict(self) -> dict[str, object]:
        return {
            "groups": {key: [float(v) for v in value.tolist()] for key, value in self.groups.items()},
            "blocks": {key: float(value) for key, value in self.blocks.items()},
        }


class Member(NamedTuple):
    """One layer of a dependency group.

    ``indices[i]`` is a position in the layer's output dimension (``is_output``)
    or input dimension, and ``group_indices[i]`` the group channel it belongs
    to (a layer after a flatten sees each channel at several positions).
    """

    module: nn.Module
    is_output: bool
    indices: list[int]
    group_indices: list[int]
    name: str  # the layer's module path in the model


@dataclass
class ScoringContext(UsesSettings):
    """Everything a method may use while it scores."""

    model: nn.Module
    example: torch.Tensor
    graph: tp.DependencyGraph  # Torch-Pruning's graph over context.model
    groups: list[GroupInfo]  # the prunable groups (locked ones are left out)
    find_blocks: Callable[[], list[BlockInfo]]  # ``blocks``, found on first use (a trace per module)
    data: DataBundle | None
    settings: RunSettings = field(default_factory=RunSettings)
    progress: Progress = field(default_factory=Progress)
    on_partial: Callable[[Scores], None] | None = None
    on_loss: Callable[[int, int, float], None] | None = None
    classifier: str | None = None  # the final classifier's module path, when the model has one

    def members(self, group: GroupInfo) -> Iterator[Member]:
        """Every layer of a channel group, with the dimension and positions the group's channels occupy in it."""
        for item in group.handle:
            name = self.module_names.get(item.dep.target.module)
            if name is None:  # Torch-Pruning's own nodes (additions, concatenations)
                continue
            yield Member(
                module=item.dep.target.module,
                is_output=self.graph.is_out_channel_pruning_fn(item.dep.handler),
                indices=list(item.idxs),
                group_indices=list(item.root_idxs),
                name=name,
            )

    @cached_property
    def blocks(self) -> list[BlockInfo]:
        """The model's residual blocks (found when first asked for: most methods never need them)."""
        return self.find_blocks()

    @cached_property
    def module_names(self) -> dict[nn.Module, str]:
        """Every module of the model → its path (``layer1.0.conv1``)."""
        return {module: name for name, module in self.model.named_modules()}

    def producer_sum(self, group: GroupInfo, per_layer: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Per channel of ``group``: a per-layer value summed over the layers that produce its channels.

        ``per_layer`` maps module paths to one value per output channel of that
        layer. Repeated channel positions accumulate (``index_add_``, not
        ``t[idx] += v``, which would keep only the last). None when no producer
        of the group has a value.
        """
        values = torch.zeros(group.channels, dtype=torch.float64)
        found = False
        for member in self.members(group):
            if not member.is_output or member.name not in per_layer:
                continue
            local = per_layer[member.name].detach().double().cpu()[torch.as_tensor(member.indices, dtype=torch.long)]
            values.index_add_(0, torch.as_tensor(member.group_indices, dtype=torch.long), local)
            found = True
        return values if found else None

    def publish(self, scores: Scores) -> None:
        """Hand partial scores to whoever watches (the window's heatmaps)."""
        if self.on_partial is not None:
            self.on_partial(scores)

    def report_loss(self, step: int, steps_per_epoch: int, loss: float) -> None:
        """A method that trains reports its training loss after each step (counted from 1 over all epochs).

        The window plots it as it comes, over epochs (``step / steps_per_epoch``).
        """
        if self.on_loss is not None:
            self.on_loss(step, steps_per_epoch, loss)

    def cancelled(self) -> bool:
        return self.progress.cancelled is not None and self.progress.cancelled()

    def generator(self) -> torch.Generator:
        """A CPU random generator seeded with the run's seed."""
        return torch.Generator().manual_seed(self.seed)

    def loader(self, split: str = "calibration", shuffle: bool = False) -> DataLoader:
        """A loader over a split of the data; refused clearly when the method needs data and none was given."""
        if self.data is None:
            raise InputError("this method needs data: give --data SPEC")
        return self.data.loader(split, self.batch_size, shuffle, self.num_workers, self.seed)

    def copy_model(self) -> nn.Module:
        """A deep copy of the model to change freely (gradients, masks, training)."""
        return copy.deepcopy(self.model)


@contextmanager
def plugin_errors(method_id: str, stage: str) -> Iterator[None]:
    """Turn a plugin's bug into a ``WorkError`` with its traceback: the host never crashes on one."""
    try:
        yield
    except (SecateurError, StopIteration):  # the host's own errors, and the end of a score generator
        raise
    except Exception:
        raise WorkError(f"method {method_id} failed while {stage}:\n{traceback.format_exc()}") from None


def collect_scores(stream: Iterator[Scores] | Scores, context: ScoringContext, method_id: str) -> Scored:
    """Run a method's scoring to the end: publish partial scores, check them, honour cancellation.

    The generator's return value (``StopIteration.value``) is the method's state.
    """
    widths = {group.id: group.channels for group in context.groups}
    merged = Scores()
    state = None
    partials = iter([stream] if isinstance(stream, Scores) else stream)
    while True:
        context.progress.check()
        try:
            with plugin_errors(method_id, "scoring"):
                partial = next(partials)
        except StopIteration as stop:
            state = stop.value
            break
        clean = _checked(partial, widths, context, method_id)
        merged.update(clean)
        context.publish(clean)
    context.progress.check()
    return Scored(merged, state)


def _checked(partial: object, widths: dict[str, int], context: ScoringContext, method_id: str) -> Scores:
    """A partial result as plain CPU float scores, refused when it names unknown groups or has the wrong size."""
    if not isinstance(partial, Scores):
        raise WorkError(f"method {method_id} yielded {type(partial).__name__}, expected Scores")
    clean = Scores()
    for group_id, values in partial.groups.items():
        if group_id not in widths:
            raise WorkError(f"method {method_id} scored unknown group {group_id!r}")
        values = torch.as_tensor(values).detach().float().cpu().flatten()
        if values.numel() != widths[group_id]:
            raise WorkError(
                f"method {method_id} gave {values.numel()} scores for group {group_id!r} of {widths[group_id]} channels"
            )
        if not torch.isfinite(values).all():
            raise WorkError(f"method {method_id} gave non-finite scores for group {group_id!r}")
        clean.groups[group_id] = values
    removable = {block.name for block in context.blocks if block.removable} if partial.blocks else set()
    for block, value in partial.blocks.items():
        if block not in removable:
            raise WorkError(f"method {method_id} scored {block!r}, which is not a removable block")
        clean.blocks[block] = float(value)
    return clean
