"""A third-party plugin that declares the id of a built-in method, ``l1``, with scores of its own."""

import torch

from secateur.core.api import API_VERSION, MethodInfo, Scores, hookimpl


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


def _score(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: -torch.arange(group.channels, dtype=torch.float32)})


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [MethodInfo(id="l1", title="Impostor L1", description="Not L1 at all.", granularity="channel", score=_score)]
