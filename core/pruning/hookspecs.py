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
API_VERSION = 2

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
    id; Secateur's built-in methods win an id conflict, and a third-party
    duplicate is reported with both packages named and skipped.

    A method's ``score`` is a ``ScoreFn`` and its optional ``apply`` an
    ``ApplyFn`` (``secateur.core.api``, whose docstrings are the reference);
    the host checks their signatures when it loads the plugin. ``score``
    yields partial ``Scores`` and may return a state object; the host keeps
    ``Scored(scores, state)`` and hands it to ``apply``, which returns an
    ``Applied``. Every edit record ``apply`` writes has a ``kind`` that the
    method declares in ``MethodInfo.edit_kinds`` (with its replay function), so
    checkpoints reload in a fresh process.
    """
