"""``l2``: the L2 norm of a channel's weights, averaged over its group."""

from __future__ import annotations

from secateur.core.api import API_VERSION, MethodInfo, hookimpl, magnitude_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="l2",
            title="L2 magnitude",
            description="Ranks channels by the L2 norm of their weights, averaged over every layer of the "
            "dependency group. Needs no data.",
            granularity="channel",
            score=lambda context, params: magnitude_scores(context, p=2),
        )
    ]
