"""Model SPECs and weight files: good input loads, bad input gets a specific message."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from conftest import ARCHS
from secateur.core.common.errors import InputError
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model


def _load(text: str, **options: object) -> nn.Module:
    return load_model(parse_model_spec(text, **options)).model


def test_demo_models_load_their_shipped_weights() -> None:
    for name in ("demo", "demo-vgg"):
        loaded = load_model(parse_model_spec(name))
        assert loaded.input_shape == (3, 32, 32)
        assert not loaded.model.training
        # trained weights, not a fresh initialisation: BatchNorm statistics moved away from (0, 1)
        running = [m.running_mean for m in loaded.model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert any(r.abs().max() > 0.05 for r in running)


def test_torchvision_architecture_with_classes_and_size() -> None:
    loaded = load_model(parse_model_spec("torchvision:resnet18", num_classes=7, input_size=64))
    assert loaded.input_shape == (3, 64, 64)
    assert loaded.model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_unknown_architecture_suggests_close_names() -> None:
    with pytest.raises(InputError, match=r"unknown architecture; did you mean resnet18"):
        _load("torchvision:resnet19")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resnet18", "is not recognised; expected demo, demo-vgg, torchvision:NAME"),
        ("torchvision:", "names no architecture"),
        ("model.py", "name the factory to call"),
    ],
)
def test_malformed_specs(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_model_spec(text)


def test_weights_round_trip_in_both_formats(tmp_path: Path) -> None:
    source = _load("torchvision:resnet18", num_classes=5)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "w.pt")
    for name in ("w.safetensors", "w.pt"):
        target = _load("torchvision:resnet18", num_classes=5, weights=str(tmp_path / name))
        for key, value in target.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_weights_that_do_not_fit_name_the_first_key_and_both_shapes(tmp_path: Path) -> None:
    state = _load("torchvision:resnet18", num_classes=5).state_dict()
    torch.save(state, tmp_path / "five.pth")
    with pytest.raises(
        InputError, match=r"'fc.weight' has shape \(5, 512\) in the file but \(1000, 512\) in the model"
    ):
        _load("torchvision:resnet18", weights=str(tmp_path / "five.pth"))
    del state["layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(InputError, match=r"1 tensor\(s\) missing from the file, first 'layer1.0.conv1.weight'"):
        _load("torchvision:resnet18", num_classes=5, weights=str(tmp_path / "missing.pth"))


class _Payload:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_file_that_needs_code_to_unpickle_is_refused_and_nothing_runs(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    torch.save({"fc.weight": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refused, the file needs arbitrary code to unpickle"):
        _load("torchvision:resnet18", weights=str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_whole_pickled_model_is_refused(tmp_path: Path) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(InputError, match="Save a state dict instead"):
        _load("torchvision:resnet18", weights=str(tmp_path / "model.pt"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.pt", None, "no such file"),
        ("truncated.safetensors", b"\x10\x00\x00", "not a readable .safetensors file"),
        ("garbage.pth", b"not a zip nor a pickle", "not a readable PyTorch weight file|refused"),
        ("weights.bin", b"x", "unknown weight file type '.bin'"),
    ],
)
def test_unreadable_weight_files(tmp_path: Path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        _load("torchvision:resnet18", weights=str(path))


def test_user_factory_file() -> None:
    loaded = load_model(parse_model_spec(f"{ARCHS / 'user_models.py'}:concat_net", num_classes=4))
    assert loaded.input_shape == (3, 32, 32)  # from INPUT_SHAPE in the file
    assert loaded.model(torch.randn(1, 3, 32, 32)).shape == (1, 4)


def test_user_factory_errors(tmp_path: Path) -> None:
    path = ARCHS / "user_models.py"
    listed = "AttentionBlock, CachedScale, ChannelSlice, ConcatNet"
    with pytest.raises(InputError, match=rf"has no callable 'resnet'; callables it defines: {listed}"):
        _load(f"{path}:resnet")
    with pytest.raises(InputError, match=r"returned str, not a torch nn.Module"):
        _load(f"{path}:not_a_model")
    with pytest.raises(InputError, match="no such file"):
        _load(f"{tmp_path / 'absent.py'}:factory")
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('boom at import')\n")
    with pytest.raises(InputError, match=r"importing .* failed: RuntimeError: boom at import"):
        _load(f"{broken}:factory")


def test_a_loaded_model_is_named_by_what_the_user_typed_else_by_its_spec() -> None:
    loaded = load_model(parse_model_spec("torchvision:resnet18", num_classes=10, input_size="32"))
    typed = dataclasses.replace(loaded, source="runs/resnet18-pruned.safetensors")
    assert typed.label == "runs/resnet18-pruned.safetensors"
    untyped = dataclasses.replace(loaded, source="")  # built in code: named by its SPEC
    assert untyped.label == loaded.spec.text() and "resnet18" in untyped.label
