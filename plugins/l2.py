"""``l2``: the L2 norm of a channel's weights, averaged over its group."""

from __future__ import annotations

from secateur.core.hookspecs import hookimpl
from secateur.core.importance import magnitude_scores
from secateur.core.methods import MethodInfo


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
