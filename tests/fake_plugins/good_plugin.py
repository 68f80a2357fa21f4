"""A well-formed plugin that declares one method."""

from secateur.core.hookspecs import API_VERSION, hookimpl
from secateur.core.methods import MethodInfo, ParamSpec


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


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
        )
    ]
