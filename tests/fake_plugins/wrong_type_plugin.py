"""A plugin whose hook returns plain dicts instead of MethodInfo."""

from secateur.core.hookspecs import hookimpl


@hookimpl
def secateur_methods() -> list:
    return [{"id": "not-a-method-info"}]
