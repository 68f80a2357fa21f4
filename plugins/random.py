"""``random``: uniform random channel importance, the floor every method must beat."""

from __future__ import annotations

from secateur.core.api import API_VERSION, MethodInfo, hookimpl, random_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="random",
            title="Random",
            description="Scores every channel uniformly at random (seeded). A baseline: any criterion "
            "worth its cost should prune better than chance.",
            granularity="channel",
            score=lambda context, params: random_scores(context),
        )
    ]
