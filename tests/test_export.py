"""Exports of a pruned model run and agree with PyTorch (ONNX checked with onnxruntime)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from conftest import ARCHS
from secateur.core.common.errors import InputError
from secateur.core.model import export
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


def _batch_1_and_7(path: Path, model: torch.nn.Module, shape: tuple[int, ...]) -> None:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 7):
        images = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(batch))
        (output,) = session.run(None, {session.get_inputs()[0].name: images.numpy()})
        with torch.no_grad():
            expected = model(images).numpy()
        assert output.shape == expected.shape and np.abs(output - expected).max() <= 1e-4


@pytest.mark.parametrize("spec", ["demo", "torchvision:resnet18", f"{ARCHS / 'user_models.py'}:concat_net"])
def test_onnx_has_a_dynamic_batch_axis(tmp_path: Path, spec: str) -> None:
    loaded = load_model(parse_model_spec(spec, input_size=64 if "resnet18" in spec else None))
    model = loaded.model
    if spec.endswith("concat_net"):  # a pruned user model
        workspace = Workspace(loaded.model, loaded.input_shape)
        model = workspace.apply(
            workspace.plan(workspace.score(load_registry().methods["l1"]).scores, Target("ratio", 0.5))
        ).model
    path = export_model(model, loaded.input_shape, "onnx", tmp_path / "m.onnx")
    _batch_1_and_7(path, model.eval(), loaded.input_shape)


def test_a_large_onnx_model_keeps_its_weights_beside_it_under_its_own_name(
    tmp_path: Path, pruned_demo: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found on vit_h_14 (2.5 GB): the weights went to the temporary file's name, a new one per export."""
    monkeypatch.setattr(export, "ONNX_INLINE_BYTES", 0)  # every model counts as large
    for _ in range(2):  # the second export replaces both files and leaves nothing else behind
        path = export_model(pruned_demo, (3, 32, 32), "onnx", tmp_path / "m.onnx")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]
    assert (tmp_path / "m.onnx.data").stat().st_size > path.stat().st_size  # the weights are in the data file
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("m.onnx", "m.onnx.data"):  # the pair works wherever it goes
        (tmp_path / name).rename(moved / name)
    _batch_1_and_7(moved / "m.onnx", pruned_demo.eval(), (3, 32, 32))


def test_torch_export_has_a_dynamic_batch_axis_and_static_batch_is_an_option(tmp_path: Path, pruned_demo) -> None:
    program = torch.export.load(str(export_model(pruned_demo, (3, 32, 32), "pt2", tmp_path / "m.pt2"))).module()
    images = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        assert (program(images) - pruned_demo(images)).abs().max() <= 1e-5
    static = export_model(pruned_demo, (3, 32, 32), "onnx", tmp_path / "s.onnx", dynamic_batch=False)
    session = onnxruntime.InferenceSession(str(static), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 32, 32]


def test_exports_follow_the_umask(tmp_path: Path, pruned_demo) -> None:
    previous = os.umask(0o027)
    try:
        path = export_model(pruned_demo, (3, 32, 32), "torchscript", tmp_path / "m.pt")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
