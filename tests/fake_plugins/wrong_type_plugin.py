"""A plugin whose hook returns plain dicts instead of MethodInfo."""

from secateur.core.api import API_VERSION, hookimpl


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list:
    return [{"id": "not-a-method-info"}]
