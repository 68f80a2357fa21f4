"""cka-layer: linear CKA against a NumPy reference, exact block bypass, block plans and the removal edit."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from secateur.core.common.errors import InputError
from secateur.core.data.loading import load_data
from secateur.core.graph.blocks import BlockInfo, residual_blocks
from secateur.core.graph.macs import trace_modules
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.export import export_model
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, Target, rank_blocks
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.surgery import remove_blocks
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method
from secateur.plugins.cka import LinearCKA, linear_cka
from secateur.plugins.cka_layer import candidates

FAST = {"samples": 64, "split": "calibration", "finetune_epochs": 0}


def _numpy_cka(a: np.ndarray, b: np.ndarray) -> float:
    """CKA from Gram matrices and the centring matrix H: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))."""
    m = a.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    k, l_ = h @ a @ a.T @ h, h @ b @ b.T @ h
    return float(np.sum(k * l_) / np.sqrt(np.sum(k * k) * np.sum(l_ * l_)))


def test_linear_cka_properties_and_numpy_reference() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(300, 12, generator=generator, dtype=torch.float64)
    b = torch.tanh(a @ torch.randn(12, 20, generator=generator, dtype=torch.float64)) + 0.3 * torch.randn(
        300, 20, generator=generator, dtype=torch.float64
    )
    q, _ = torch.linalg.qr(torch.randn(12, 12, generator=generator, dtype=torch.float64))
    assert linear_cka(a, a) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(a, a @ q) == pytest.approx(1.0, abs=1e-10)
    assert linear_cka(a, 3.5 * a + torch.arange(12.0, dtype=torch.float64)) == pytest.approx(1.0, abs=1e-10)
    value = linear_cka(a, b)
    assert value == pytest.approx(_numpy_cka(a.numpy(), b.numpy()), abs=1e-10)
    assert value == pytest.approx(linear_cka(b, a), abs=1e-12)
    assert 0.2 < value < 1.0
    streamed = LinearCKA()
    for start in range(0, 300, 64):  # mini-batches give the same value as one pass
        streamed.update(a[start : start + 64], b[start : start + 64])
    assert streamed.value() == pytest.approx(value, abs=1e-10)
    independent = linear_cka(torch.randn(2000, 16, generator=generator), torch.randn(2000, 16, generator=generator))
    assert independent < 0.05
    with pytest.raises(ValueError, match="same inputs on both sides: 3 rows against 4"):
        LinearCKA().update(torch.zeros(3, 2), torch.zeros(4, 2))


def _tiny_vit() -> nn.Module:
    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=64).eval()


def _zero_branch(block: nn.Module) -> None:
    """Force a block's residual branch to output zero through its own last layers."""
    with torch.no_grad():
        if hasattr(block, "bn2"):
            block.bn2.weight.zero_()
            block.bn2.bias.zero_()
        else:  # a transformer encoder layer: both residual branches end on a Linear
            for layer in (block.self_attention.out_proj, block.mlp[3]):
                layer.weight.zero_()
                layer.bias.zero_()


@pytest.mark.parametrize(
    ("spec", "block"),
    [("demo", "layer2.2"), ("torchvision:resnet18", "layer3.1"), ("vit", "encoder.layers.encoder_layer_1")],
)
def test_removing_a_block_equals_zeroing_its_branch(spec: str, block: str) -> None:
    if spec == "vit":
        model, shape = _tiny_vit(), (3, 32, 32)
    else:
        loaded = load_model(parse_model_spec(spec))
        model, shape = loaded.model.eval(), (3, 64, 64) if spec != "demo" else loaded.input_shape
    x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    removed, zeroed = copy.deepcopy(model), copy.deepcopy(model)
    remove_blocks(removed, [block])
    _zero_branch(zeroed.get_submodule(block))
    with torch.no_grad():
        assert (removed(x) - zeroed(x)).abs().max() < 1e-5
    assert block not in {info.name for info in residual_blocks(removed)}
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in model.parameters())


def test_candidates_on_resnets_and_transformers() -> None:
    resnet50 = load_model(parse_model_spec("torchvision:resnet50")).model
    assert candidates(residual_blocks(resnet50), skip_first=True) == [
        "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer2.3", "layer3.1", "layer3.2", "layer3.3",
        "layer3.4", "layer3.5", "layer4.1", "layer4.2",
    ]  # fmt: skip
    vit = [f"encoder.layers.encoder_layer_{i}" for i in range(3)]
    assert candidates(residual_blocks(_tiny_vit()), skip_first=False) == vit
    assert candidates(residual_blocks(_tiny_vit()), skip_first=True) == vit[1:]


def test_block_ranking_never_takes_a_non_removable_block_and_keeps_stages() -> None:
    blocks = [
        BlockInfo("s1.0", True, ""),
        BlockInfo("s1.1", True, ""),
        BlockInfo("s1.2", True, ""),
        BlockInfo("s2.0", False, "projection"),
        BlockInfo("s2.1", True, ""),
    ]
    scores = Scores(blocks={"s1.0": 0.5, "s1.1": 0.1, "s1.2": 0.2, "s2.1": 0.0})
    order, _ = rank_blocks(blocks, scores, PlanOptions(min_stage_blocks=2))
    assert order == ["s1.1"]  # s2 would drop to 1 block, s1 keeps 2
    order, notes = rank_blocks(blocks, scores, PlanOptions(min_stage_blocks=1, locked=("s1.1",)))
    assert order == ["s2.1", "s1.2", "s1.0"]  # s2.0 (projection) is never a candidate; s1.1 stays
    assert "block s1.1 is locked: kept" in notes


@pytest.fixture(scope="module")
def demo_workspace() -> Workspace:
    loaded = load_model(parse_model_spec("demo"))
    return Workspace(loaded.model, loaded.input_shape, load_data("demo"))


def test_block_targets_are_met_exactly(demo_workspace: Workspace) -> None:
    scores = Scores(blocks={name: float(i) for i, name in enumerate(candidates(demo_workspace.blocks, True))})
    plan = demo_workspace.plan(scores, Target("blocks", 2))
    assert plan.blocks_removed == ("layer1.1", "layer2.1")
    applied = demo_workspace.apply(plan)
    pruned, edits = applied.model, list(applied.edits)
    assert edits == [{"kind": "remove_blocks", "blocks": ["layer1.1", "layer2.1"]}]
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params
    assert trace_modules(pruned, demo_workspace.example)[""].macs == plan.predicted_macs
    macs_plan = demo_workspace.plan(scores, Target("macs", 0.3))
    reduction = 1 - macs_plan.predicted_macs / demo_workspace.macs
    assert reduction >= 0.28 and len(macs_plan.blocks_removed) == 3
    assert demo_workspace.plan(scores, Target("ratio", 0.5)).blocks_removed == ("layer1.1", "layer2.1", "layer3.1")
    with pytest.raises(InputError, match=r"--blocks 4: only 3 blocks can be removed .* --min-stage-blocks"):
        demo_workspace.plan(scores, Target("blocks", 4))
    with pytest.raises(InputError, match=r"removing every removable block saves only 0\.3"):
        demo_workspace.plan(scores, Target("macs", 0.6))
    with pytest.raises(InputError, match="--blocks 0: must be a whole number of blocks"):
        Target("blocks", 0)


_FRESH = """
import sys, torch
from secateur.core import load_checkpoint
torch.save(load_checkpoint(sys.argv[1])(torch.load(sys.argv[2])), sys.argv[3])
"""


def test_block_removal_checkpoint_round_trip(demo_workspace: Workspace, tmp_path: Path) -> None:
    scores = Scores(blocks={"layer3.2": 0.0, "layer2.2": 1.0})
    applied = demo_workspace.apply(demo_workspace.plan(scores, Target("blocks", 2)))
    pruned, edits = applied.model, list(applied.edits)
    path = save_checkpoint(
        tmp_path / "shallow.safetensors", pruned, CheckpointInfo(parse_model_spec("demo"), (3, 32, 32), edits, {})
    )
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    torch.save(x, tmp_path / "x.pt")
    subprocess.run(
        [sys.executable, "-c", _FRESH, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")], check=True
    )
    with torch.no_grad():
        expected = pruned(x)
    assert torch.allclose(torch.load(tmp_path / "y.pt"), expected, atol=1e-6)
    session = onnxruntime.InferenceSession(
        str(export_model(pruned, (3, 32, 32), "onnx", tmp_path / "shallow.onnx")), providers=["CPUExecutionProvider"]
    )
    onnx_out = session.run(None, {session.get_inputs()[0].name: x[:1].numpy()})[0]
    assert np.allclose(onnx_out, expected[:1].numpy(), atol=1e-4)


def test_a_block_with_a_dead_branch_scores_zero_and_goes_first() -> None:
    loaded = load_model(parse_model_spec("demo"))
    _zero_branch(loaded.model.get_submodule("layer2.2"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"))
    method = load_registry().methods["cka-layer"]
    scored = workspace.score(method, FAST)
    scores = scored.scores
    assert set(scores.blocks) == set(candidates(workspace.blocks, True))
    assert scores.blocks["layer2.2"] == pytest.approx(0.0, abs=1e-9)
    assert all(value > 1e-4 for name, value in scores.blocks.items() if name != "layer2.2")
    plan = workspace.plan(scores, Target("blocks", 2), method="cka-layer")
    applied = workspace.apply(plan, method, FAST, scored)
    pruned, edits = applied.model, list(applied.edits)
    assert edits[0]["blocks"][0] == "layer2.2" and len(edits[0]["blocks"]) == 2
    assert len(candidates(residual_blocks(pruned), True)) == 4


def test_cka_layer_conforms() -> None:
    report = check_method("cka-layer", FAST, ratio=0.3)
    assert report.params_after < report.params_before


def test_bad_parameters_are_refused(demo_workspace: Workspace) -> None:
    method = load_registry().methods["cka-layer"]
    with pytest.raises(InputError, match="features"):
        demo_workspace.score(method, {**FAST, "features": "pixels"})
    with pytest.raises(InputError, match="samples"):
        demo_workspace.score(method, {**FAST, "samples": 1})
