"""A plugin written for plugin API 1: its apply takes (context, plan, params) and returns a tuple."""

from secateur.core.api import hookimpl


@hookimpl
def secateur_api_version() -> int:
    return 1


@hookimpl
def secateur_methods() -> list:
    return []
