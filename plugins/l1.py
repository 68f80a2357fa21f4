"""``l1``: the L1 norm of a channel's weights (Li et al. 2017), averaged over its group."""

from __future__ import annotations

from secateur.core.api import API_VERSION, MethodInfo, hookimpl, magnitude_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="l1",
            title="L1 magnitude",
            description="Ranks channels by the L1 norm of their weights, averaged over every layer of the "
            "dependency group (producers, BatchNorm and consumers). Needs no data.",
            granularity="channel",
            score=lambda context, params: magnitude_scores(context, p=1),
        )
    ]
