"""A well-formed plugin that declares one method."""

import torch

from secateur.core.api import API_VERSION, MethodInfo, ParamSpec, Scores, hookimpl


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


def _score(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: torch.arange(group.channels, dtype=torch.float32) * params["strength"]})


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="fake-good",
            title="A fake method",
            description="Used by the tests to prove that plugins are found.",
            granularity="channel",
            needs=("calibration-data",),
            params=(ParamSpec("strength", "float", 0.5, "how hard to prune", min=0.0, max=1.0),),
            score=_score,
        )
    ]
