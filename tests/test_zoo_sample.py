"""Twelve torchvision architectures across families, pruned the user's way: the zoo battery's CI sample.

``bench/zoo.py`` runs every architecture with every training-free method,
checkpoint reloads and ONNX; this sample proves, in about two minutes,
that each family plans, prunes, runs and lands on the predicted size with L1
scores at 0.5 (per-layer) and random scores at 0.7 (global). shufflenet_v2,
densenet121 and convnext_tiny took 40–60 s each here, so they are left to the
benchmark (channel shuffles are covered by tests/test_group_structure.py).
"""

from __future__ import annotations

import pytest
import torch
import torchvision

from secateur.core.graph.macs import trace_modules
from secateur.core.pruning.checks import check_group
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace

SAMPLE = {  # architecture: smallest square input it runs on
    "resnet18": 32,
    "resnext50_32x4d": 32,  # grouped 3×3 (groups=32)
    "regnet_y_400mf": 32,  # grouped convs with squeeze-excitation
    "mobilenet_v3_small": 32,  # depthwise, squeeze-excitation, hardswish
    "mnasnet0_5": 32,
    "efficientnet_b0": 32,  # depthwise with SiLU squeeze-excitation
    "squeezenet1_1": 32,  # concatenated expand branches
    "googlenet": 32,  # inception branches
    "regnet_x_400mf": 32,  # grouped convs without squeeze-excitation
    "mobilenet_v2": 32,  # inverted residuals, ReLU6
    "alexnet": 64,  # a flatten into 4096-wide linear layers
    "vgg11_bn": 32,  # a plain chain into an adaptive pool and a 25088-input classifier
}


@pytest.mark.parametrize("name", sorted(SAMPLE))
def test_each_family_prunes_to_the_predicted_size(name: str) -> None:
    size = SAMPLE[name]
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    workspace = Workspace(model, (3, size, size))
    groups = {group.id: group for group in workspace.groups}
    registry = load_registry()
    cases = [("l1", 0.5, False), ("random", 0.7, True)]
    for method_id, ratio, global_ranking in cases:
        scored = workspace.score(registry.method(method_id))
        plan = workspace.plan(scored, Target("ratio", ratio), PlanOptions(global_ranking=global_ranking), method_id)
        assert all(check_group(groups[gid], g) == "" for gid, g in plan.groups.items())
        pruned = workspace.apply(plan).model
        with torch.no_grad():
            assert pruned(torch.randn(2, 3, size, size)).shape == (2, 10)
        params = sum(p.numel() for p in pruned.parameters())
        macs = trace_modules(pruned, workspace.example)[""].macs
        assert (params, macs) == (plan.predicted_params, plan.predicted_macs), method_id
        assert params < workspace.params or not plan.groups
