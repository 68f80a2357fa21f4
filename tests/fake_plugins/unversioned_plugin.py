"""A plugin that never says which plugin API it was written for."""

from secateur.core.api import MethodInfo, hookimpl


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [MethodInfo(id="fake-unversioned", title="t", description="d", granularity="channel", score=lambda c, p: [])]
