"""Checkpoints: round trips in a fresh process, atomic saves, and damaged files refused clearly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ARCHS
from secateur.core.common.errors import InputError
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace


def _prune_and_save(spec: str, path: Path, ratio: float = 0.4) -> tuple[torch.nn.Module, torch.Tensor]:
    loaded = load_model(parse_model_spec(spec))
    workspace = Workspace(loaded.model, loaded.input_shape)
    plan = workspace.plan(workspace.score(load_registry().methods["l1"]).scores, Target("ratio", ratio))
    applied = workspace.apply(plan)
    pruned, edits = applied.model, list(applied.edits)
    save_checkpoint(path, pruned, CheckpointInfo(loaded.spec, loaded.input_shape, edits, {"method": "l1"}))
    example = torch.randn((2, *loaded.input_shape), generator=torch.Generator().manual_seed(1))
    return pruned, example


_FRESH_PROCESS = """
import sys, torch
from secateur.core import load_checkpoint
model = load_checkpoint(sys.argv[1])
example = torch.load(sys.argv[2])
with torch.no_grad():
    torch.save(model(example), sys.argv[3])
"""


@pytest.mark.parametrize(
    "spec",
    [
        "demo",
        "demo-vgg",
        "torchvision:resnet18",
        "torchvision:resnet50",
        "torchvision:mobilenet_v2",
        "torchvision:vit_b_16",
        "torchvision:mnasnet0_5",  # reads its layout version from the state dict's metadata
    ],
)
def test_round_trip_in_a_fresh_process(tmp_path: Path, spec: str) -> None:
    pruned, example = _prune_and_save(spec, tmp_path / "pruned.safetensors")
    torch.save(example, tmp_path / "example.pt")
    paths = [str(tmp_path / name) for name in ("pruned.safetensors", "example.pt", "out.pt")]
    result = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, *paths],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    with torch.no_grad():
        expected = pruned(example)
    assert (torch.load(tmp_path / "out.pt") - expected).abs().max() <= 1e-6


def test_user_architecture_round_trip_and_missing_base_file(tmp_path: Path) -> None:
    source = tmp_path / "arch.py"
    shutil.copy(ARCHS / "user_models.py", source)
    pruned, example = _prune_and_save(f"{source}:ConcatNet", tmp_path / "c.safetensors")
    with torch.no_grad():
        assert torch.equal(load_checkpoint(tmp_path / "c.safetensors")(example), pruned(example))
    source.unlink()
    with pytest.raises(InputError, match=r"arch.py:ConcatNet: no such file"):
        load_checkpoint(tmp_path / "c.safetensors")


def test_a_failed_save_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.safetensors"
    _prune_and_save("demo-vgg", path)
    good = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("secateur.core.model.checkpoint.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        _prune_and_save("demo-vgg", path, ratio=0.6)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_damaged_checkpoints_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    _prune_and_save("demo-vgg", path)
    data = path.read_bytes()
    (tmp_path / "truncated.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"truncated.safetensors: .*cannot be read|not a readable"):
        load_checkpoint(tmp_path / "truncated.safetensors")
    (tmp_path / "header.safetensors").write_bytes(b"\xff" * 8 + data[8:])
    with pytest.raises(InputError, match=r"not a readable \.safetensors file"):
        load_checkpoint(tmp_path / "header.safetensors")
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = handle.metadata()
    tensors["features.0.weight"] = torch.zeros(5, 3, 3, 3)
    save_file(tensors, str(tmp_path / "shapes.safetensors"), metadata=metadata)
    with pytest.raises(InputError, match=r"'features.0.weight' has shape \(5, 3, 3, 3\) in the file but"):
        load_checkpoint(tmp_path / "shapes.safetensors")
    save_file(tensors, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InputError, match="without Secateur's metadata"):
        load_checkpoint(tmp_path / "plain.safetensors")
    record = json.loads(metadata["secateur"])
    record["edits"] = [{"kind": "teleport"}]
    save_file(
        load_file(str(path)), str(tmp_path / "edit.safetensors"), metadata={**metadata, "secateur": json.dumps(record)}
    )
    with pytest.raises(InputError, match="edit kind 'teleport' is unknown"):
        load_checkpoint(tmp_path / "edit.safetensors")


def test_checkpoint_spec_loads_through_the_model_loader(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    pruned, example = _prune_and_save("demo", path)
    loaded = load_model(parse_model_spec(str(path)))
    assert loaded.spec.text() == "demo" and loaded.edits and loaded.input_shape == (3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.model(example), pruned(example))
