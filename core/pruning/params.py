"""Validating a method's parameters: one function for the CLI's strings and the GUI's values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from secateur.core.common.errors import InputError
from secateur.core.pruning.methods import ParamSpec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _describe_range(spec: ParamSpec) -> str:
    if spec.choices:
        return f"one of {', '.join(spec.choices)}"
    if spec.min is not None and spec.max is not None:
        return f"a {spec.type} in [{spec.min}, {spec.max}]"
    if spec.min is not None:
        return f"a {spec.type} ≥ {spec.min}"
    if spec.max is not None:
        return f"a {spec.type} ≤ {spec.max}"
    return f"a {spec.type}"


def coerce_value(spec: ParamSpec, value: Any, method_id: str) -> Any:
    """``value`` (a string from the CLI or a typed value from the GUI) as the declared type, checked."""
    where = f"method {method_id}: parameter {spec.name}={value!r}"
    expected = _describe_range(spec)
    try:
        if spec.type == "bool":
            if isinstance(value, bool):
                result: Any = value
            elif str(value).strip().lower() in _TRUE | _FALSE:
                result = str(value).strip().lower() in _TRUE
            else:
                raise ValueError
        elif spec.type == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            result = int(str(value).strip()) if isinstance(value, str) else int(value)
        elif spec.type == "float":
            if isinstance(value, bool):
                raise ValueError
            result = float(value)
            if result != result:  # NaN
                raise ValueError
        else:
            result = str(value)
    except (TypeError, ValueError):
        raise InputError(f"{where} is not {expected}") from None
    if spec.choices and result not in spec.choices:
        raise InputError(f"{where} is not {expected}")
    if (spec.min is not None and result < spec.min) or (spec.max is not None and result > spec.max):
        raise InputError(f"{where} is out of range; expected {expected}")
    return result


def validate_params(specs: Iterable[ParamSpec], given: Mapping[str, Any], method_id: str) -> dict[str, Any]:
    """Every declared parameter with its value: the given one checked, else the default."""
    declared = {spec.name: spec for spec in specs}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(declared) if declared else "none"
        raise InputError(f"method {method_id}: unknown parameter {unknown[0]!r}; its parameters are: {known}")
    return {
        name: coerce_value(spec, given[name], method_id) if name in given else spec.default
        for name, spec in declared.items()
    }


def parse_param_assignments(assignments: Iterable[str]) -> dict[str, str]:
    """``["name=value", ...]`` from ``--param`` options into a mapping."""
    result: dict[str, str] = {}
    for item in assignments:
        name, separator, value = item.partition("=")
        if not separator or not name.strip():
            raise InputError(f"--param {item!r}: expected name=value")
        result[name.strip()] = value.strip()
    return result
