"""How a method describes itself: id, title, granularity, needs and parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from secateur.core.pruning.contract import ApplyFn, EditKind, ScoreFn

GRANULARITIES = ("channel", "block")
NEEDS = ("calibration-data", "labels", "gradients", "training")
PARAM_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "choice": str}


@dataclass(frozen=True)
class ParamSpec:
    """One typed, documented parameter of a method; the CLI and GUI build on it."""

    name: str
    type: str
    default: Any
    help: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"parameter {self.name!r}: type {self.type!r} is not one of {sorted(PARAM_TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError(f"parameter {self.name!r}: a choice parameter needs its choices")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "help": self.help,
            "min": self.min,
            "max": self.max,
            "choices": list(self.choices) if self.choices else None,
        }


@dataclass(frozen=True)
class MethodInfo:
    """A pruning method as a plugin declares it.

    ``score`` is a ``ScoreFn``: ``score(context, params)`` yields partial
    ``Scores`` for the context's groups or blocks and may return a state
    object. ``apply``, when given, is an ``ApplyFn`` that takes over the apply
    step: ``apply(context, plan, params, scored)`` returns an ``Applied``.
    ``edit_kinds`` declares the edit records that ``apply`` writes, with the
    functions that replay them when a checkpoint loads.
    """

    id: str
    title: str
    description: str
    granularity: str
    needs: tuple[str, ...] = ()
    params: tuple[ParamSpec, ...] = field(default_factory=tuple)
    score: ScoreFn | None = field(default=None, compare=False, repr=False)
    apply: ApplyFn | None = field(default=None, compare=False, repr=False)
    edit_kinds: tuple[EditKind, ...] = ()
    comparable_scores: bool = False  # scores compare across layers (relevance, learned gates): rank them raw
    plugin: str = ""  # filled in by the host: the entry point that provided it
    package: str = ""  # filled in by the host: the distribution that installed it
    version: str = ""  # filled in by the host: that distribution's version

    @property
    def provider(self) -> str:
        """Who provides the method, for messages and reports: ``package version`` (or the entry point)."""
        return f"{self.package} {self.version}".strip() or self.plugin or "an unregistered plugin"

    def __post_init__(self) -> None:
        if not self.id or not self.id.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"method id {self.id!r} must be letters, digits, '-' or '_'")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"method {self.id!r}: granularity {self.granularity!r} is not one of {GRANULARITIES}")
        unknown = [need for need in self.needs if need not in NEEDS]
        if unknown:
            raise ValueError(f"method {self.id!r}: unknown needs {unknown}; expected some of {NEEDS}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "granularity": self.granularity,
            "needs": list(self.needs),
            "comparable_scores": self.comparable_scores,
            "params": [param.to_dict() for param in self.params],
            "edit_kinds": [edit.kind for edit in self.edit_kinds],
            "plugin": self.plugin,
            "package": self.package,
            "version": self.version,
        }
