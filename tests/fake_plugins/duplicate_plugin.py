"""A plugin that reuses the id of good_plugin's method."""

from secateur.core.api import API_VERSION, MethodInfo, hookimpl


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="fake-good",
            title="Impostor",
            description="Same id as another.",
            granularity="block",
            score=lambda context, params: iter(()),
        )
    ]
