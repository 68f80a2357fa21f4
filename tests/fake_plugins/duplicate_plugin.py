"""A plugin that reuses the id of good_plugin's method."""

from secateur.core.hookspecs import hookimpl
from secateur.core.methods import MethodInfo


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
