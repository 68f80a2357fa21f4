"""One validation for every method parameter, shared by the CLI and the window."""

from __future__ import annotations

import pytest

from secateur.core.common.errors import InputError
from secateur.core.pruning.methods import ParamSpec
from secateur.core.pruning.params import parse_param_assignments, validate_params

SPECS = (
    ParamSpec("batches", "int", 8, "batches", min=1, max=100),
    ParamSpec("eps", "float", 1e-6, "epsilon", min=0.0),
    ParamSpec("fold", "bool", True, "fold BatchNorm"),
    ParamSpec("rule", "choice", "epsilon", "LRP rule", choices=("epsilon", "gamma")),
)


def test_defaults_and_coercion_from_strings() -> None:
    assert validate_params(SPECS, {}, "m") == {"batches": 8, "eps": 1e-6, "fold": True, "rule": "epsilon"}
    given = {"batches": "12", "eps": "0.5", "fold": "no", "rule": "gamma"}
    assert validate_params(SPECS, given, "m") == {"batches": 12, "eps": 0.5, "fold": False, "rule": "gamma"}
    assert validate_params(SPECS, {"batches": 3, "fold": False}, "m")["batches"] == 3  # typed values from a form


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"batches": "0"}, r"method m: parameter batches='0' is out of range; expected a int in \[1, 100\]"),
        ({"batches": "2.5"}, r"parameter batches='2.5' is not a int in \[1, 100\]"),
        ({"batches": 2.5}, r"parameter batches=2.5 is not a int"),
        ({"eps": "-1"}, r"parameter eps='-1' is out of range; expected a float ≥ 0.0"),
        ({"eps": "nan"}, r"parameter eps='nan' is not a float"),
        ({"fold": "maybe"}, r"parameter fold='maybe' is not a bool"),
        ({"rule": "alpha"}, r"parameter rule='alpha' is not one of epsilon, gamma"),
        ({"size": "3"}, r"unknown parameter 'size'; its parameters are: batches, eps, fold, rule"),
    ],
)
def test_bad_values_name_the_parameter_and_what_is_accepted(given: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_params(SPECS, given, "m")


def test_param_assignments() -> None:
    assert parse_param_assignments(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(InputError, match="expected name=value"):
        parse_param_assignments(["novalue"])
