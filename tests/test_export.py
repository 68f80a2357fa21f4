"""Exports of a pruned model run and agree with PyTorch (ONNX checked with onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from secateur.core.common.errors import InputError
from secateur.core.model.export import export_model
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace


@pytest.fixture(scope="module")
def pruned_demo() -> torch.nn.Module:
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape)
    plan = workspace.plan(workspace.score(load_registry().methods["l1"]).scores, Target("ratio", 0.5))
    return workspace.apply(plan).model


def _reference(model: torch.nn.Module) -> np.ndarray:
    with torch.no_grad():
        return model(torch.zeros(1, 3, 32, 32)).numpy()


def test_onnx_matches_onnxruntime(tmp_path: Path, pruned_demo: torch.nn.Module) -> None:
    path = export_model(pruned_demo, (3, 32, 32), "onnx", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 32, 32), np.float32)})
    assert np.abs(output - _reference(pruned_demo)).max() <= 1e-4


def test_torchscript_and_torch_export(tmp_path: Path, pruned_demo: torch.nn.Module) -> None:
    scripted = torch.jit.load(str(export_model(pruned_demo, (3, 32, 32), "torchscript", tmp_path / "m.pt")))
    program = torch.export.load(str(export_model(pruned_demo, (3, 32, 32), "pt2", tmp_path / "m.pt2")))
    with torch.no_grad():
        assert np.abs(scripted(torch.zeros(1, 3, 32, 32)).numpy() - _reference(pruned_demo)).max() <= 1e-5
        assert np.abs(program.module()(torch.zeros(1, 3, 32, 32)).numpy() - _reference(pruned_demo)).max() <= 1e-5


def test_bad_export_requests(tmp_path: Path, pruned_demo: torch.nn.Module) -> None:
    with pytest.raises(InputError, match="expected one of onnx, torchscript, pt2"):
        export_model(pruned_demo, (3, 32, 32), "tflite", tmp_path / "m.tflite")
    with pytest.raises(InputError, match="does not exist"):
        export_model(pruned_demo, (3, 32, 32), "onnx", tmp_path / "absent" / "m.onnx")
