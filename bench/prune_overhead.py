"""Secateur's overhead over Torch-Pruning used directly: L1 at 50% of channels, no fine-tuning.

For each architecture (torchvision, weights=None, 224×224), interleaved in one
run (direct, secateur, direct, secateur, …, so that a load that comes and goes
hits both sides alike):
- direct: build Torch-Pruning's DependencyGraph-backed MetaPruner with group L1
  importance and pruning_ratio 0.5 (the classifier ignored), and step it;
- secateur: the whole user path: Workspace (working copy, graph, groups, MACs),
  l1 scoring through the plugin (with the host's guard), plan, apply (plan
  check, surgery, the pruned model's forward check).
Both start from a fresh copy of the same model (the copy is not timed); the
direct side prunes that copy in place, Secateur leaves it untouched. Reported:
the median and the p10–p90 spread of each side, and the ratio of the medians.
Target (issue 19): ratio ≤ 1.1.

    .venv/bin/python bench/prune_overhead.py [--repeat 5] [--threads 2] [--models resnet18,vit_b_16]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
import warnings

import torch
import torch_pruning as tp
import torchvision

from secateur.core.pruning.methods import MethodInfo
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


def secateur(model: torch.nn.Module, method: MethodInfo) -> float:
    started = time.perf_counter()
    workspace = Workspace(model, (3, 224, 224))
    plan = workspace.plan(workspace.score(method).scores, Target("ratio", 0.5))
    workspace.apply(plan)
    return time.perf_counter() - started


def spread(times: list[float]) -> str:
    """p10–p90 of the runs (min–max below ten runs, where deciles say no more)."""
    if len(times) < 10:
        return f"{min(times):.2f}–{max(times):.2f}"
    deciles = statistics.quantiles(times, n=10)
    return f"{deciles[0]:.2f}–{deciles[-1]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each side per architecture")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--models", default=",".join(ARCHITECTURES), help="comma-separated torchvision names")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # Torch-Pruning's note on ViT's unwrapped class token, on every direct run
    method = load_registry().methods["l1"]
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; torch-pruning {tp.__version__}; {args.repeat} interleaved runs per side"
    )
    spread_name = "p10–p90" if args.repeat >= 10 else "min–max"
    print(
        f"{'model':<14} {'direct s':>9} {spread_name:>11} {'secateur s':>11} {spread_name:>11} {'ratio':>6}",
        flush=True,
    )
    for name in args.models.split(","):
        base = torchvision.models.get_model(name, weights=None).eval()
        direct_times: list[float] = []
        secateur_times: list[float] = []
        for run in range(args.repeat):
            sides = [("d", direct_times), ("s", secateur_times)]
            for side, times in sides if run % 2 == 0 else sides[::-1]:  # alternate which side goes first
                model = copy.deepcopy(base)
                times.append(direct(model, name) if side == "d" else secateur(model, method))
        d, s = statistics.median(direct_times), statistics.median(secateur_times)
        print(
            f"{name:<14} {d:>9.2f} {spread(direct_times):>11} {s:>11.2f} {spread(secateur_times):>11} {s / d:>6.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
