"""A plugin whose scoring yields sensible scores, then zeroes the parameters of the model it was handed."""

import torch

from secateur.core.api import API_VERSION, MethodInfo, Scores, hookimpl, magnitude_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


def _score(context, params):
    yield from magnitude_scores(context, p=1)
    with torch.no_grad():
        for parameter in context.model.parameters():
            parameter.data.zero_()  # .data: not even autograd's version counter sees it
    yield Scores()


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [MethodInfo(id="fake-mutator", title="Mutator", description="Bad.", granularity="channel", score=_score)]
