"""How a method describes itself: id, title, granularity, needs and parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
    """A pruning method as a plugin declares it."""

    id: str
    title: str
    description: str
    granularity: str
    needs: tuple[str, ...] = ()
    params: tuple[ParamSpec, ...] = field(default_factory=tuple)
    plugin: str = ""  # filled in by the host: the entry point that provided it

    def __post_init__(self) -> None:
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
            "params": [param.to_dict() for param in self.params],
            "plugin": self.plugin,
        }
