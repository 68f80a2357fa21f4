"""timm:NAME model SPECs: inspect, prune (l1, taylor), reload in a fresh process, export; the refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import timm
import torch

from conftest import run_cli
from secateur.core.common.errors import InputError
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.model.checkpoint import CheckpointInfo, read_checkpoint_info, save_checkpoint
from secateur.core.model.export import export_model
from secateur.core.model.specs import build_model, parse_model_spec
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace, tree_of

MODELS = ["resnet18", "convnext_atto", "efficientnet_b0", "mobilenetv3_small_100", "vit_tiny_patch16_224"]
SIZE = 32  # small inputs keep the tests fast; the demo data is 3×32×32 with 10 classes


@pytest.fixture(scope="module")
def demo_data():
    return load_data("demo")


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, demo_data) -> dict[str, tuple[Path, torch.nn.Module, tuple]]:
    """Each model pruned by l1 at ratio 0.3 and saved: name -> (checkpoint, model, plan notes)."""
    folder = tmp_path_factory.mktemp("timm")
    result = {}
    for name in MODELS:
        loaded = load_model(parse_model_spec(f"timm:{name}", num_classes=10, input_size=SIZE))
        workspace = Workspace(loaded.model, loaded.input_shape, demo_data)
        plan = workspace.plan(workspace.score(load_registry().methods["l1"]).scores, Target("ratio", 0.3))
        applied = workspace.apply(plan)
        path = folder / f"{name}.safetensors"
        save_checkpoint(path, applied.model, CheckpointInfo(loaded.spec, loaded.input_shape, list(applied.edits)))
        result[name] = (path, applied.model, plan.notes)
    return result


@pytest.mark.parametrize("name", MODELS)
def test_inspect_and_prune_with_taylor(name: str, demo_data) -> None:
    loaded = load_model(parse_model_spec(f"timm:{name}", num_classes=10, input_size=SIZE))
    tree = tree_of(loaded, torch.device("cpu"))
    assert tree.params == sum(p.numel() for p in loaded.model.parameters())
    assert tree.macs > 0 and any(group.prunable for group in tree.groups)
    workspace = Workspace(loaded.model, loaded.input_shape, demo_data, RunSettings(batch_size=16))
    scored = workspace.score(load_registry().methods["taylor"], {"batches": 1})
    applied = workspace.apply(workspace.plan(scored.scores, Target("ratio", 0.3)))
    with torch.no_grad():
        out = applied.model(torch.randn(2, 3, SIZE, SIZE))
    assert out.shape == (2, 10)
    assert sum(p.numel() for p in applied.model.parameters()) < tree.params


_FRESH = """
import json, sys, torch
from secateur.core import load_checkpoint
example = torch.randn((3, 3, 32, 32), generator=torch.Generator().manual_seed(1))
outputs = {}
for path in sys.argv[2:]:
    with torch.no_grad():
        outputs[path] = load_checkpoint(path)(example).tolist()
json.dump(outputs, open(sys.argv[1], "w"))
"""


def test_pruned_timm_models_reload_in_a_fresh_process_and_export(tmp_path: Path, pruned) -> None:
    paths = [str(path) for path, _, _ in pruned.values()]
    result = tmp_path / "outputs.json"
    run = subprocess.run(
        [sys.executable, "-c", _FRESH, str(result), *paths], capture_output=True, text=True, timeout=600, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    outputs = json.loads(result.read_text())
    example = torch.randn((3, 3, SIZE, SIZE), generator=torch.Generator().manual_seed(1))
    for name, (path, model, _) in pruned.items():
        with torch.no_grad():
            expected = model.eval()(example)
        assert torch.allclose(torch.tensor(outputs[str(path)]), expected, atol=1e-5), name
        assert read_checkpoint_info(path).extra["libraries"] == {"timm": timm.__version__}
        onnx_path = export_model(model, (3, SIZE, SIZE), "onnx", tmp_path / f"{name}.onnx")
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
        assert np.abs(got - expected.numpy()).max() <= 1e-4, name


def test_vit_attention_keeps_whole_heads_and_the_mlp_is_pruned(pruned) -> None:
    _, model, _ = pruned["vit_tiny_patch16_224"]
    for block in model.blocks:
        attention = block.attn
        # timm reshapes qkv to (3, heads, head_dim): only whole heads may go, and the head count must follow
        assert attention.qkv.out_features == 3 * attention.num_heads * attention.head_dim == 3 * 192
        assert attention.proj.in_features == attention.num_heads * attention.head_dim
    assert model.blocks[0].mlp.fc1.out_features < 768  # the MLP was pruned
    assert model.blocks[0].attn.qkv.in_features < 192  # and the embedding it reads


def test_timm_checkpoint_names_the_timm_version_when_it_no_longer_fits(tmp_path: Path, pruned) -> None:
    path, model, _ = pruned["resnet18"]
    info = read_checkpoint_info(path)
    # as if saved by timm 0.0.1 whose resnet18 had another head: the tensors no longer fit
    tampered = tmp_path / "tampered.safetensors"
    base = replace(info.base, num_classes=7)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("secateur.core.model.checkpoint.timm_version", lambda: "0.0.1")
        save_checkpoint(tampered, model, CheckpointInfo(base, info.input_shape, info.edits, info.extra))
    assert read_checkpoint_info(tampered).extra["libraries"] == {"timm": "0.0.1"}
    with pytest.raises(InputError, match=r"made with timm 0\.0\.1; this machine has timm"):
        load_checkpoint(tampered)


def test_default_input_size_channels_and_image_size() -> None:
    assert build_model(parse_model_spec("timm:resnet18")).input_shape == (3, 224, 224)
    grey = build_model(parse_model_spec("timm:resnet18", num_classes=10, input_size="1x28x28"))
    assert grey.input_shape == (1, 28, 28) and grey.model.conv1.in_channels == 1
    vit = build_model(parse_model_spec("timm:vit_tiny_patch16_224", input_size=64))
    assert vit.input_shape == (3, 64, 64) and vit.model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_unknown_timm_name_suggests_close_ones() -> None:
    with pytest.raises(InputError, match="did you mean convnext_atto"):
        build_model(parse_model_spec("timm:convnext_at"))
    result = run_cli("inspect", "timm:nosuch")
    assert result.returncode == 2
    assert "unknown timm architecture 'nosuch'; did you mean" in result.stderr


def test_without_timm_the_spec_is_refused_with_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` raise ImportError
    expected = r"needs timm, which is not installed; install it with pip install 'secateur\[timm\]'"
    with pytest.raises(InputError, match=expected):
        build_model(parse_model_spec("timm:resnet18"))
