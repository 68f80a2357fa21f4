"""Plans against their targets, and the pruned model against the plan's predicted size."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision

from conftest import ARCHS
from secateur.core.common.errors import InputError
from secateur.core.graph.macs import trace_modules
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace


def _workspace(spec: str) -> Workspace:
    loaded = load_model(parse_model_spec(spec))
    return Workspace(loaded.model, loaded.input_shape)


@pytest.fixture(scope="module")
def resnet18() -> tuple[Workspace, Scores]:
    workspace = Workspace(torchvision.models.resnet18(weights=None), (3, 64, 64))
    return workspace, workspace.score(load_registry().methods["l1"]).scores


def test_local_ratio_keeps_the_most_important_channels(resnet18) -> None:
    workspace, scores = resnet18
    plan = workspace.plan(scores, Target("ratio", 0.3))
    for group in workspace.groups:
        if not group.prunable:
            assert group.id not in plan.groups  # the classifier's outputs are never pruned
            continue
        kept = plan.groups[group.id].kept
        assert len(kept) == group.channels - math.floor(0.3 * group.channels)
        values = scores.groups[group.id]
        assert values[kept].min() >= values[plan.groups[group.id].removed].max()


def test_global_ranking_removes_the_ratio_of_all_channels_within_the_cap(resnet18) -> None:
    workspace, scores = resnet18
    plan = workspace.plan(scores, Target("ratio", 0.5), PlanOptions(global_ranking=True, max_layer_ratio=0.8))
    total = sum(g.total for g in plan.groups.values())
    removed = sum(g.total - len(g.kept) for g in plan.groups.values())
    assert removed == math.floor(0.5 * total)
    assert all(len(g.kept) >= math.ceil(0.2 * g.total) for g in plan.groups.values())
    assert len({len(g.kept) / g.total for g in plan.groups.values()}) > 1  # layers differ under global ranking


def test_minimum_rounding_locks_and_overrides(resnet18) -> None:
    workspace, scores = resnet18
    options = PlanOptions(round_to=8, locked=("layer1.0.conv1",), overrides={"layer2.0.conv1": 0.75}, min_channels=4)
    plan = workspace.plan(scores, Target("ratio", 0.4), options)
    assert "layer1.0.conv1" not in plan.groups
    assert len(plan.groups["layer2.0.conv1"].kept) == 128 - 96
    assert all(len(g.kept) % 8 == 0 for g in plan.groups.values())
    with pytest.raises(InputError, match="locked layer 'nope': no layer or group of that name"):
        workspace.plan(scores, Target("ratio", 0.4), PlanOptions(locked=("nope",)))


@pytest.mark.parametrize("goal", [0.3, 0.5, 0.7])
def test_macs_target_is_met_within_two_points(resnet18, goal: float) -> None:
    workspace, scores = resnet18
    plan = workspace.plan(scores, Target("macs", goal))
    pruned = workspace.apply(plan).model
    measured = trace_modules(pruned, workspace.example)[""].macs
    assert abs(1 - measured / workspace.macs - goal) <= 0.02


def test_unreachable_target_says_the_best_reachable(resnet18) -> None:
    workspace, scores = resnet18
    with pytest.raises(InputError, match=r"the most this plan can remove is 0\.\d+ of the MACs"):
        workspace.plan(scores, Target("macs", 0.9), PlanOptions(max_layer_ratio=0.3))


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5])
def test_ratio_outside_the_open_interval_is_refused(value: float) -> None:
    with pytest.raises(InputError, match="must be strictly between 0 and 1"):
        Target("ratio", value)


@pytest.mark.parametrize(
    "spec",
    ["demo", "demo-vgg", "torchvision:resnet18", "torchvision:mobilenet_v2", f"{ARCHS / 'user_models.py'}:ConcatNet"],
)
@pytest.mark.parametrize("global_ranking", [False, True])
def test_apply_lands_on_the_predicted_size_and_leaves_the_original_alone(spec: str, global_ranking: bool) -> None:
    workspace = _workspace(spec)
    before = {k: v.clone() for k, v in workspace.model.state_dict().items()}
    scores = workspace.score(load_registry().methods["l2"]).scores
    plan = workspace.plan(scores, Target("ratio", 0.4), PlanOptions(global_ranking=global_ranking))
    applied = workspace.apply(plan)
    pruned, edits = applied.model, list(applied.edits)
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params
    assert trace_modules(pruned, workspace.example)[""].macs == plan.predicted_macs
    assert plan.predicted_params < workspace.params
    state = workspace.model.state_dict()
    assert state.keys() == before.keys() and all(torch.equal(state[k], before[k]) for k in before)
    assert edits == [{"kind": "prune_channels", "groups": {k: g.removed for k, g in plan.groups.items() if g.removed}}]
    with torch.no_grad():
        assert pruned(workspace.example).shape == workspace.model(workspace.example).shape


def test_vit_prunes_heads_and_mlp_neurons_and_keeps_the_residual_width() -> None:
    workspace = Workspace(torchvision.models.vit_b_16(weights=None), (3, 224, 224))
    locked = [group for group in workspace.groups if not group.prunable]
    assert any("attention embedding" in group.locked_because for group in locked)
    plan = workspace.plan(workspace.score(load_registry().methods["l1"]).scores, Target("ratio", 0.5))
    layers = [f"encoder.layers.encoder_layer_{i}" for i in range(12)]
    assert set(plan.groups) == {f"{x}.mlp.0" for x in layers} | {f"{x}.self_attention:heads" for x in layers}
    applied = workspace.apply(plan)
    pruned, edits = applied.model, list(applied.edits)
    assert [edit["kind"] for edit in edits] == ["prune_channels", "prune_heads"]
    block = pruned.encoder.layers[0]
    assert block.mlp[0].out_features == 1536 and block.self_attention.num_heads == 6
    assert block.self_attention.q_proj.in_features == 768  # the residual stream keeps its width
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params
    assert trace_modules(pruned, workspace.example)[""].macs == plan.predicted_macs
