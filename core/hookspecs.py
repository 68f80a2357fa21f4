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

    A method's ``score(context, params)`` receives a ``ScoringContext``
    (``secateur.core.scoring``): the model (read it, never change it; use
    ``context.copy_model()`` to change a copy), the prunable dependency groups
    and residual blocks, the data loaders, the device, the seed, a progress
    reporter and a cancellation check. It yields ``Scores`` (one tensor of
    per-channel importance per group id, or one float per block name), as soon
    as each is known; the host checks their shapes, publishes them to the
    window, and stops between yields when the user cancels. ``params`` holds
    every declared ``ParamSpec``, validated and typed.

    A method may set ``apply(context, plan, params)`` to take over the apply
    step; it returns ``(pruned_model, edits)`` where every edit is a JSON-able
    dict whose ``kind`` has a replay function registered with
    ``secateur.core.surgery.register_edit``, so checkpoints reload.
    """
