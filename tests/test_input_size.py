"""--input-size: a square side or C×H×W, for every kind of model SPEC, and through checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import ARCHS, run_cli
from secateur.core.common.errors import InputError
from secateur.core.model.checkpoint import CheckpointInfo, read_checkpoint_info, save_checkpoint
from secateur.core.model.input_size import parse_input_size
from secateur.core.model.specs import build_model, parse_model_spec
from secateur.core.pruning.loading import load_checkpoint_model

GREY = """
import torch
from torch import nn

def grey(num_classes=10):
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, num_classes))
"""


@pytest.mark.parametrize(
    "text, value",
    [("224", 224), (224, 224), ("1x28x28", (1, 28, 28)), ("1×28×28", (1, 28, 28)), (" 3 X 32 X 48 ", (3, 32, 48))],
)
def test_accepted_forms(text: object, value: object) -> None:
    assert parse_input_size(text) == value


@pytest.mark.parametrize(
    "text, message",
    [
        ("28x28", "channels×height×width"),
        ("ax28x28", "channels×height×width"),
        ("4", "between 8 and 4096"),
        ("0x28x28", "channels must be between 1 and 64"),
        ("1x28x5000", "between 8 and 4096"),
    ],
)
def test_refused_forms(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_input_size(text)


def test_a_grey_scale_user_model_round_trips_through_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "grey.py").write_text(GREY)
    spec = parse_model_spec(f"{tmp_path / 'grey.py'}:grey", input_size="1x28x28")
    loaded = build_model(spec)
    assert loaded.input_shape == (1, 28, 28)
    path = tmp_path / "grey.safetensors"
    save_checkpoint(path, loaded.model, CheckpointInfo(spec, loaded.input_shape, []))
    assert read_checkpoint_info(path).base.input_size == (1, 28, 28)  # a tuple again after JSON
    reloaded, _ = load_checkpoint_model(path)
    example = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(reloaded.model(example), loaded.model(example))


def test_models_that_cannot_take_the_shape_say_so() -> None:
    with pytest.raises(InputError, match="torchvision:resnet18 takes 3 channels"):
        build_model(parse_model_spec("torchvision:resnet18", input_size="1x28x28"))
    with pytest.raises(InputError, match="takes 3×32×32 images"):
        build_model(parse_model_spec("demo", input_size="1x32x32"))
    assert build_model(parse_model_spec("demo", input_size="3x32x32")).input_shape == (3, 32, 32)
    user = build_model(parse_model_spec(f"{ARCHS / 'user_models.py'}:concat_net", input_size=48))
    assert user.input_shape == (3, 48, 48)


def test_the_command_line_reads_both_forms(tmp_path: Path) -> None:
    (tmp_path / "grey.py").write_text(GREY)
    result = run_cli("inspect", f"{tmp_path / 'grey.py'}:grey", "--input-size", "1x28x28", "--json")
    assert result.returncode == 0, result.stderr
    assert '"input_shape": [\n    1,\n    28,\n    28\n  ]' in result.stdout or "[1, 28, 28]" in result.stdout
    bad = run_cli("inspect", "demo", "--input-size", "28x28")
    assert bad.returncode == 2 and "--input-size 28x28: expected" in bad.stderr
