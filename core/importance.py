"""Channel importance criteria shared by the baseline plugins (and by methods built on them).

Each criterion scores one dependency group: one value per channel, reduced
over every member layer of the group by the mean, without normalisation, the
way Torch-Pruning's group importances do (``group_reduction="mean"``,
``normalizer=None``). The planner normalises when it ranks globally.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from secateur.core.scoring import Scores, ScoringContext


def _per_group(context: ScoringContext, importance: tp.importance.Importance, stage: str) -> Iterator[Scores]:
    for index, group in enumerate(context.groups):
        values = importance(group.handle)
        context.progress(stage, index + 1, len(context.groups))
        if values is not None:  # None: the criterion has nothing to measure in this group
            yield Scores(groups={group.id: values.detach().float().cpu()})


def magnitude_scores(context: ScoringContext, p: int) -> Iterator[Scores]:
    """Lp norm of each channel's weights, averaged over the group's layers."""
    importance = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="mean", normalizer=None)
    yield from _per_group(context, importance, f"L{p} norms")


def batchnorm_scale_scores(context: ScoringContext) -> Iterator[Scores]:
    """|γ| of the group's BatchNorm layers; groups without BatchNorm are not scored (so not pruned)."""
    importance = tp.importance.GroupMagnitudeImportance(
        p=1, group_reduction="mean", normalizer=None, target_types=[nn.modules.batchnorm._BatchNorm]
    )
    yield from _per_group(context, importance, "BatchNorm scales")


def random_scores(context: ScoringContext) -> Iterator[Scores]:
    """Uniform random importance, from the run's seed."""
    generator = context.generator()
    for index, group in enumerate(context.groups):
        context.progress("random", index + 1, len(context.groups))
        yield Scores(groups={group.id: torch.rand(group.channels, generator=generator)})


def taylor_scores(context: ScoringContext, batches: int) -> Iterator[Scores]:
    """First-order Taylor importance |Σ g·w| per channel, gradients summed over labelled batches.

    Works on a copy of the model (with its graph's groups copied alongside), so
    the model the user holds never sees a gradient.
    """
    model, handles = copy.deepcopy((context.model, [group.handle for group in context.groups]))
    model.eval()
    model.zero_grad(set_to_none=True)
    loader = context.loader("calibration")
    total = min(batches, len(loader))
    for step, (images, labels) in enumerate(loader):
        if step >= total:
            break
        logits = model(images.to(context.device))
        F.cross_entropy(logits, labels.to(context.device), reduction="sum").backward()
        context.progress("gradients", step + 1, total)
    importance = tp.importance.GroupTaylorImportance(group_reduction="mean", normalizer=None, multivariable=True)
    for index, (group, handle) in enumerate(zip(context.groups, handles, strict=True)):
        with torch.no_grad():
            values = importance(handle)
        context.progress("Taylor scores", index + 1, len(context.groups))
        if values is not None:
            yield Scores(groups={group.id: values.detach().float().cpu()})
