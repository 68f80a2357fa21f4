"""Finding method plugins through entry points, each one isolated from the others.

pluggy does not isolate errors, so every entry point is loaded and called on
its own: a plugin that fails to import, declares another API version, returns
the wrong type, has a function of the wrong signature or reuses an id is
reported with its reason and skipped; the host and the other plugins keep
working. Secateur's own plugins load first, so a built-in id always wins a
conflict with a third party.
"""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.metadata import EntryPoint, entry_points

import pluggy

from secateur.core.common.errors import InputError
from secateur.core.pruning import hookspecs
from secateur.core.pruning.contract import EditKind
from secateur.core.pruning.methods import MethodInfo

HOST_PACKAGE = "secateur"
MIGRATION = "see 'Migrating from API 1' in docs/plugins.md"
CORE_EDIT_KINDS = ("prune_channels", "remove_blocks", "prune_heads")

# The positional arguments each callable of a MethodInfo must accept (pluggy's _verify_hook checks hooks alike).
SIGNATURES = {
    "score": ("context", "params"),
    "apply": ("context", "plan", "params", "scored"),
    "replay": ("model", "edit", "example"),
}


@dataclass
class FailedPlugin:
    """A plugin (or one method of it) that could not be used, and why."""

    plugin: str
    error: str
    method_ids: tuple[str, ...] = ()  # the method ids this failure concerns, where known

    def to_dict(self) -> dict[str, object]:
        return {"plugin": self.plugin, "error": self.error, "methods": list(self.method_ids)}

    def summary(self) -> str:
        """The failure's last line: the reason without the traceback."""
        lines = self.error.strip().splitlines()
        return lines[-1] if lines else "unknown error"


@dataclass
class Registry:
    """The methods the installed plugins provide, by id, and the plugins that failed."""

    methods: dict[str, MethodInfo] = field(default_factory=dict)
    failed: list[FailedPlugin] = field(default_factory=list)

    def method(self, method_id: str) -> MethodInfo:
        """The installed method ``method_id``; a failed plugin's error, or the list of installed ids."""
        if method_id in self.methods:
            return self.methods[method_id]
        for failure in self.failed:
            if method_id in failure.method_ids:
                raise InputError(f"--method {method_id!r}: {failure.plugin} failed to load: {failure.summary()}")
        known = ", ".join(sorted(self.methods)) or "none"
        raise InputError(f"--method {method_id!r}: no such method; installed: {known} (see `secateur methods`)")

    def edit_kind(self, kind: str) -> tuple[EditKind, MethodInfo] | None:
        """The declaration of a plugin's edit kind, and the method that declares it."""
        for method in self.methods.values():
            for declared in method.edit_kinds:
                if declared.kind == kind:
                    return declared, method
        return None


@cache
def installed_registry() -> Registry:
    """The installed plugins, loaded once per process (replaying edit kinds, methods that wrap others)."""
    return load_registry()


def installed_method(method_id: str) -> MethodInfo:
    """An installed method by id: for a method that wraps another's criterion (intra-fusion)."""
    return installed_registry().method(method_id)


def _describe(entry_point: EntryPoint) -> str:
    return f"{entry_point.name} ({entry_point.value})"


def _package_of(entry_point: EntryPoint) -> tuple[str, str]:
    """The distribution that installed an entry point, and its version ('' where unknown)."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "", ""
    return dist.metadata["Name"] or "", dist.version or ""


def _is_builtin(entry_point: EntryPoint) -> bool:
    return _package_of(entry_point)[0] == HOST_PACKAGE


def load_registry(entry_points_to_load: list[EntryPoint] | None = None) -> Registry:
    """Load every plugin of the ``secateur`` entry-point group (or the given ones), built-ins first."""
    if entry_points_to_load is None:
        entry_points_to_load = sorted(entry_points(group=hookspecs.ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    ordered = sorted(entry_points_to_load, key=lambda ep: not _is_builtin(ep))  # stable: otherwise in order
    registry = Registry()
    for entry_point in ordered:
        name = _describe(entry_point)
        package, version = _package_of(entry_point)
        try:
            plugin = entry_point.load()
            methods = _methods_of(plugin, name)
        except Exception:
            registry.failed.append(FailedPlugin(name, traceback.format_exc(), (entry_point.name,)))
            continue
        for method in methods:
            method = replace(method, package=package, version=version)
            problem = _conflict(registry, method)
            if problem:
                registry.failed.append(FailedPlugin(name, problem, (method.id,)))
                continue
            registry.methods[method.id] = method
    return registry


def _conflict(registry: Registry, method: MethodInfo) -> str:
    """Why ``method`` cannot join the registry (an id or edit kind already taken), or ''."""
    if method.id in registry.methods:
        other = registry.methods[method.id]
        return f"method id {method.id!r} of {_who(method)} is already provided by {_who(other)}; skipped"
    for declared in method.edit_kinds:
        if declared.kind in CORE_EDIT_KINDS:
            return f"method {method.id!r} declares the edit kind {declared.kind!r}, which is Secateur's own; skipped"
        taken = registry.edit_kind(declared.kind)
        if taken is not None:
            return (
                f"method {method.id!r} declares the edit kind {declared.kind!r}, already declared by "
                f"{taken[1].id} of {_who(taken[1])}; skipped"
            )
    return ""


def _who(method: MethodInfo) -> str:
    """The entry point that provided a method, with its package and version where installed."""
    return f"{method.plugin} ({method.package} {method.version})" if method.package else method.plugin


def _methods_of(plugin: object, name: str) -> list[MethodInfo]:
    """Call one plugin's hooks through its own PluginManager and check what they return."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    manager.register(plugin, name=name)
    versions = manager.hook.secateur_api_version()
    if not versions:
        raise TypeError(
            f"plugin {name} declares no plugin API version: implement secateur_api_version() "
            f"returning {hookspecs.API_VERSION}"
        )
    if versions[0] != hookspecs.API_VERSION:
        raise TypeError(
            f"plugin {name} was written for Secateur plugin API version {versions[0]}, "
            f"this Secateur provides version {hookspecs.API_VERSION}: {MIGRATION}"
        )
    found: list[MethodInfo] = []
    for result in manager.hook.secateur_methods():
        items = result if isinstance(result, (list, tuple)) else [result]
        for item in items:
            if not isinstance(item, MethodInfo):
                raise TypeError(f"plugin {name}: secateur_methods returned {type(item).__name__}, expected MethodInfo")
            if not callable(item.score):
                raise TypeError(f"plugin {name}: method {item.id!r} has no score function")
            verify_signatures(item, name)
            found.append(replace(item, plugin=name))
    return found


def verify_signatures(method: MethodInfo, name: str) -> None:
    """Refuse a method whose score, apply or edit replayers cannot take API 2's arguments."""
    _verify(method.score, "score", method.id, name)
    if method.apply is not None:
        _verify(method.apply, "apply", method.id, name)
    for declared in method.edit_kinds:
        if not isinstance(declared, EditKind):
            raise TypeError(f"plugin {name}: method {method.id!r}: edit_kinds holds {declared!r}, expected EditKind")
        _verify(declared.replay, "replay", f"{method.id}, edit kind {declared.kind}", name)


def _verify(function: Callable | None, role: str, what: str, name: str) -> None:
    arguments = SIGNATURES[role]
    if not callable(function):
        raise TypeError(f"plugin {name}: {what}: {role} is not callable")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C callable without a signature: nothing to check
    try:
        signature.bind(*arguments)
    except TypeError as error:
        raise TypeError(
            f"plugin {name}: method {what}: {role}{signature} cannot be called as "
            f"{role}({', '.join(arguments)}) ({error}); {MIGRATION}"
        ) from None
