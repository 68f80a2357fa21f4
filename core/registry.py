"""Finding method plugins through entry points, each one isolated from the others.

pluggy does not isolate errors, so every entry point is loaded and called on
its own: a plugin that fails to import, declares another API version, returns
the wrong type or reuses an id is reported with its traceback and skipped;
the host and the other plugins keep working.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field, replace
from importlib.metadata import EntryPoint, entry_points

import pluggy

from secateur.core import hookspecs
from secateur.core.methods import MethodInfo


@dataclass
class FailedPlugin:
    """A plugin that could not be used, and why."""

    plugin: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"plugin": self.plugin, "error": self.error}


@dataclass
class Registry:
    """The methods the installed plugins provide, by id, and the plugins that failed."""

    methods: dict[str, MethodInfo] = field(default_factory=dict)
    failed: list[FailedPlugin] = field(default_factory=list)


def _describe(entry_point: EntryPoint) -> str:
    return f"{entry_point.name} ({entry_point.value})"


def load_registry(entry_points_to_load: list[EntryPoint] | None = None) -> Registry:
    """Load every plugin of the ``secateur`` entry-point group (or the given ones)."""
    if entry_points_to_load is None:
        entry_points_to_load = sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    registry = Registry()
    for entry_point in entry_points_to_load:
        name = _describe(entry_point)
        try:
            plugin = entry_point.load()
            methods = _methods_of(plugin, name)
        except Exception:
            registry.failed.append(FailedPlugin(name, traceback.format_exc()))
            continue
        for method in methods:
            if method.id in registry.methods:
                other = registry.methods[method.id].plugin
                registry.failed.append(
                    FailedPlugin(name, f"method id {method.id!r} is already provided by {other}; skipped")
                )
                continue
            registry.methods[method.id] = method
    return registry


def _methods_of(plugin: object, name: str) -> list[MethodInfo]:
    """Call one plugin's hooks through its own PluginManager and check what they return."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=name)
    versions = manager.hook.secateur_api_version()
    if versions and versions[0] != hookspecs.API_VERSION:
        raise TypeError(
            f"plugin {name} was written for Secateur plugin API version {versions[0]}, "
            f"this Secateur provides version {hookspecs.API_VERSION}"
        )
    found: list[MethodInfo] = []
    for result in manager.hook.secateur_methods():
        items = result if isinstance(result, (list, tuple)) else [result]
        for item in items:
            if not isinstance(item, MethodInfo):
                raise TypeError(f"plugin {name}: secateur_methods returned {type(item).__name__}, expected MethodInfo")
            if not callable(item.score):
                raise TypeError(f"plugin {name}: method {item.id!r} has no score function")
            found.append(replace(item, plugin=name))
    return found
