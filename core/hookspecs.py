"""The plugin API: the hooks a Secateur method plugin implements.

Plugins are ordinary Python distributions with an entry point in the group
``secateur`` that names a module (or object) carrying ``@hookimpl`` functions.
Secateur's own methods are registered the same way, in its pyproject.

The docstrings here are the API reference.
"""

from __future__ import annotations

import pluggy

PROJECT = "secateur"
ENTRY_POINT_GROUP = "secateur"
API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def secateur_api_version() -> int:
    """Return the plugin API version the plugin was written for (``API_VERSION``).

    A plugin that declares another version is reported as incompatible and
    not used; the host and the other plugins keep working.
    """


@hookspec
def secateur_methods() -> list:
    """Return the pruning methods this plugin provides, as ``MethodInfo`` objects.

    Called once when the host loads plugins. Each method has a unique short
    id; a duplicate id is reported and the later one is skipped.
    """
