"""A plugin that claims API 2 but whose apply still has API 1's signature (context, plan, params)."""

from secateur.core.api import API_VERSION, MethodInfo, hookimpl, magnitude_scores


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


def _apply(context, plan, params):
    raise AssertionError("never called: the host refuses this plugin when it loads")


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="fake-old-apply",
            title="Old apply",
            description="apply without the scored argument.",
            granularity="channel",
            score=lambda context, params: magnitude_scores(context, p=1),
            apply=_apply,
        )
    ]
