"""Scores and the context a method scores against.

A method's ``score(context, params)`` is a generator: it yields partial
``Scores`` (one dependency group or block at a time, detached, on the CPU) as
soon as each exists, so the window can draw heatmaps while the method runs.
The host merges them, checks their shapes, and checks cancellation between
yields. A method never modifies ``context.model``; whatever it needs to change
(gradients, masks, training) it does on ``context.copy_model()``.
"""

from __future__ import annotations

import copy
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader

from secateur.core.blocks import BlockInfo
from secateur.core.data import DataBundle
from secateur.core.errors import InputError, SecateurError, WorkError
from secateur.core.groups import GroupInfo
from secateur.core.progress import Progress


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


@dataclass
class ScoringContext:
    """Everything a method may use while it scores."""

    model: nn.Module
    example: torch.Tensor
    graph: tp.DependencyGraph  # Torch-Pruning's graph over context.model
    groups: list[GroupInfo]  # the prunable groups (locked ones are left out)
    blocks: list[BlockInfo]
    data: DataBundle | None
    device: torch.device
    seed: int = 0
    batch_size: int = 128
    num_workers: int = 0
    progress: Progress = field(default_factory=Progress)
    on_partial: Callable[[Scores], None] | None = None
    classifier: str | None = None  # the final classifier's module path, when the model has one

    def members(self, group: GroupInfo) -> Iterator[Member]:
        """Every layer of a channel group, with the dimension and positions the group's channels occupy in it."""
        layers = set(self.model.modules())
        for item in group.handle:
            if item.dep.target.module not in layers:  # Torch-Pruning's own nodes (additions, concatenations)
                continue
            yield Member(
                module=item.dep.target.module,
                is_output=self.graph.is_out_channel_pruning_fn(item.dep.handler),
                indices=list(item.idxs),
                group_indices=list(item.root_idxs),
            )

    def publish(self, scores: Scores) -> None:
        """Hand partial scores to whoever watches (the window's heatmaps)."""
        if self.on_partial is not None:
            self.on_partial(scores)

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


def collect_scores(stream: Iterator[Scores] | Scores, context: ScoringContext, method_id: str) -> Scores:
    """Run a method's scoring to the end: publish partial scores, check them, honour cancellation."""
    widths = {group.id: group.channels for group in context.groups}
    removable = {block.name for block in context.blocks if block.removable}
    merged = Scores()
    partials = iter([stream] if isinstance(stream, Scores) else stream)
    while True:
        context.progress.check()
        try:
            partial = next(partials)
        except StopIteration:
            break
        except SecateurError:
            raise
        except Exception:  # a plugin's bug: report it with its traceback, never crash the host
            raise WorkError(f"method {method_id} failed while scoring:\n{traceback.format_exc()}") from None
        if not isinstance(partial, Scores):
            raise WorkError(f"method {method_id} yielded {type(partial).__name__}, expected Scores")
        clean = Scores()
        for group_id, values in partial.groups.items():
            if group_id not in widths:
                raise WorkError(f"method {method_id} scored unknown group {group_id!r}")
            values = torch.as_tensor(values).detach().float().cpu().flatten()
            if values.numel() != widths[group_id]:
                raise WorkError(
                    f"method {method_id} gave {values.numel()} scores for group {group_id!r}"
                    f" of {widths[group_id]} channels"
                )
            if not torch.isfinite(values).all():
                raise WorkError(f"method {method_id} gave non-finite scores for group {group_id!r}")
            clean.groups[group_id] = values
        for block, value in partial.blocks.items():
            if block not in removable:
                raise WorkError(f"method {method_id} scored {block!r}, which is not a removable block")
            clean.blocks[block] = float(value)
        merged.update(clean)
        context.publish(clean)
    context.progress.check()
    return merged
