"""Secateur's overhead over Torch-Pruning used directly: L1 at 50% of channels, no fine-tuning.

For each architecture (torchvision, weights=None, 224×224), in the same run:
- direct: build Torch-Pruning's DependencyGraph-backed MetaPruner with group L1
  importance and pruning_ratio 0.5 (the classifier ignored), and step it;
- secateur: the same through Secateur's pipeline (workspace: graph, groups,
  MACs; l1 scoring through the plugin; plan; apply on a copy).
Both start from a fresh copy of the same model. Target: secateur ≤ 1.2× direct.

    .venv/bin/python bench/prune_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch_pruning as tp
import torchvision

from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace

ARCHITECTURES = ("resnet18", "resnet50", "mobilenet_v2", "vit_b_16")
CLASSIFIERS = {"resnet18": "fc", "resnet50": "fc", "mobilenet_v2": "classifier.1", "vit_b_16": "heads.head"}


def direct(model: torch.nn.Module, name: str) -> float:
    started = time.perf_counter()
    example = torch.zeros(1, 3, 224, 224)
    ignored = [model.get_submodule(CLASSIFIERS[name])]
    if name.startswith("vit"):  # Secateur keeps the attention embedding whole; so does this run
        ignored.append(model.conv_proj)
    pruner = tp.pruner.MetaPruner(
        model,
        (example,),  # a tuple: one traced forward pass (a bare tensor makes Torch-Pruning try model(*x) first)
        importance=tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer=None),
        pruning_ratio=0.5,
        ignored_layers=ignored,
    )
    pruner.step()
    return time.perf_counter() - started


def secateur(model: torch.nn.Module, method) -> float:
    started = time.perf_counter()
    workspace = Workspace(model, (3, 224, 224))
    plan = workspace.plan(workspace.score(method).scores, Target("ratio", 0.5))
    workspace.apply(plan)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    method = load_registry().methods["l1"]
    print(f"{'model':<14} {'direct s':>9} {'secateur s':>11} {'ratio':>6}  (median of {args.repeat})")
    for name in ARCHITECTURES:
        base = torchvision.models.get_model(name, weights=None).eval()
        direct_times = [direct(copy.deepcopy(base), name) for _ in range(args.repeat)]
        secateur_times = [secateur(copy.deepcopy(base), method) for _ in range(args.repeat)]
        d, s = statistics.median(direct_times), statistics.median(secateur_times)
        print(f"{name:<14} {d:>9.2f} {s:>11.2f} {s / d:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
