"""``activation``: rank channels by how strongly they fire on calibration data.

A channel whose output is small on real inputs contributes little downstream,
whatever its weights look like (Hu et al. 2016 prune by the share of zero
activations; this ranks by the mean absolute activation). For every
prunable dependency group, the outputs of the group's producer layers are
recorded with forward hooks over a few calibration batches; a channel's
score is its mean |activation| averaged over those layers.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from secateur.core.api import API_VERSION, MethodInfo, ParamSpec, Scores, ScoringContext, hookimpl

_PRODUCERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def score(context: ScoringContext, params: dict) -> Iterator[Scores]:
    """Yield one group's scores at a time, as soon as they are known."""
    # Which layers write each group's channels (and at which channel positions).
    producers: dict[nn.Module, list[tuple[str, list[int], list[int]]]] = {}
    for group in context.groups:
        if group.kind != "channels":
            continue
        for member in context.members(group):
            if member.is_output and isinstance(member.module, _PRODUCERS):
                producers.setdefault(member.module, []).append((group.id, member.indices, member.group_indices))

    totals = {group.id: torch.zeros(group.channels, dtype=torch.float64) for group in context.groups}
    counts = {group.id: torch.zeros(group.channels, dtype=torch.float64) for group in context.groups}

    def record(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        # mean |activation| per channel: average over batch and every non-channel dimension
        per_channel = output.detach().abs().transpose(0, 1).reshape(output.shape[1], -1).mean(1).double().cpu()
        for group_id, indices, roots in producers[module]:
            # index_add_, not totals[...][roots] += ...: a channel seen at several positions must add up
            positions = torch.as_tensor(roots, dtype=torch.long)
            totals[group_id].index_add_(0, positions, per_channel[indices])
            counts[group_id].index_add_(0, positions, torch.ones(len(roots), dtype=torch.float64))

    handles = [module.register_forward_hook(record) for module in producers]
    try:
        batches = params["batches"]
        with torch.no_grad():
            for step, (images, _) in enumerate(context.loader("calibration")):
                if step >= batches:
                    break
                context.model(images.to(context.device))
                context.progress("activations", step + 1, batches)
    finally:
        for handle in handles:
            handle.remove()

    for index, group in enumerate(context.groups):
        context.progress("activation scores", index + 1, len(context.groups))
        if counts[group.id].any():
            yield Scores(groups={group.id: (totals[group.id] / counts[group.id].clamp(min=1)).float()})


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="activation",
            title="Mean activation",
            description="Ranks channels by their mean absolute output on calibration images, averaged over the "
            "layers that produce them. Channels that barely fire go first.",
            granularity="channel",
            needs=("calibration-data",),
            params=(ParamSpec("batches", "int", 4, "calibration batches to average over", min=1, max=1000),),
            score=score,
        )
    ]
