"""A plugin written for an API version this host does not provide."""

from secateur.core.hookspecs import hookimpl


@hookimpl
def secateur_api_version() -> int:
    return 0


@hookimpl
def secateur_methods() -> list:
    return []
