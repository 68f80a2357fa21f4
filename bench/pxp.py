"""Pruning by explaining against magnitude and gradient criteria, without fine-tuning.

For `demo` and `demo-vgg`: test accuracy at pruning rates q = 0 … 0.95 (no fine-tuning) for
pxp with the default ε composite, pxp with the rule composite searched on the calibration split
(disjoint from test), l1, taylor and random, and the area under each curve (trapz of accuracy as a
fraction over q). pxp curves rank channels globally by raw relevance (the paper); l1, taylor and
random have no cross-layer scale, so they rank globally with Secateur's mean-normalised ranking
(`--global-ranking`); `pxp-ε (norm.)` shows pxp under that same ranking, and `l1 (per layer)` removes
the same fraction of every group (Secateur's default). Prints markdown tables
and writes a PNG plot.

    nice -n 10 .venv/bin/python bench/pxp.py [--search 8] [--search-step 0.1] [--search-images 500]
        [--step 0.05] [--test-images 2000] [--models demo demo-vgg] [--out bench/pxp.png]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch.utils.data import Subset

from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.plugins.pxp import area, pruning_curve, rates


def host_curve(workspace: Workspace, scores: Scores, grid: list[float], global_ranking: bool = True) -> list[float]:
    """Test accuracy after pruning with Secateur's planner: global ranking (scores divided by each group's
    mean) or the same rate in every group."""
    assert workspace.data is not None
    curve = []
    for rate in grid:
        model = workspace.model
        if rate > 0:
            plan = workspace.plan(scores, Target("ratio", rate), PlanOptions(global_ranking=global_ranking))
            model = workspace.apply(plan).model
        curve.append(accuracy_and_loss(model, workspace.data, "test", workspace.device, workspace.batch_size)[0])
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["demo", "demo-vgg"])
    parser.add_argument("--step", type=float, default=0.05, help="rate step of the test curves")
    parser.add_argument("--search", type=int, default=8, help="composites the rule search evaluates")
    parser.add_argument("--search-step", type=float, default=0.1)
    parser.add_argument("--search-images", type=int, default=500)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--out", default="bench/pxp.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    methods = load_registry().methods
    data = load_data("demo")
    data = dataclasses.replace(data, test=Subset(data.test, range(min(args.test_images, len(data.test)))))
    grid = rates(args.step)
    figure, axes = plt.subplots(1, len(args.models), figsize=(6 * len(args.models), 4.2), squeeze=False)
    for axis, spec in zip(axes[0], args.models, strict=True):
        started = time.perf_counter()
        loaded = load_model(parse_model_spec(spec))
        workspace = Workspace(loaded.model, loaded.input_shape, data, settings=RunSettings(batch_size=250))
        searched_params = {"search": args.search, "search_step": args.search_step, "search_images": args.search_images}
        stages: list[str] = []
        progress = Progress(report=lambda stage, done, total, seen=stages: seen.append(stage))
        scores = {
            "pxp-ε": workspace.score(methods["pxp"], {}).scores,
            "pxp-searched": workspace.score(methods["pxp"], searched_params, progress).scores,
            "l1": workspace.score(methods["l1"]).scores,
            "taylor": workspace.score(methods["taylor"]).scores,
            "random": workspace.score(methods["random"]).scores,
        }
        best = next(stage for stage in reversed(stages) if "best composite" in stage)
        curves = {
            name: pruning_curve(workspace, scores[name].groups, grid, "test") for name in ("pxp-ε", "pxp-searched")
        }
        curves["pxp-ε (norm.)"] = host_curve(workspace, scores["pxp-ε"], grid)
        for name in ("l1", "taylor", "random"):
            curves[name] = host_curve(workspace, scores[name], grid)
        curves["l1 (per layer)"] = host_curve(workspace, scores["l1"], grid, global_ranking=False)
        elapsed = time.perf_counter() - started
        print(f"\n### {spec}: test accuracy (%) without fine-tuning ({len(data.test)} test images, {elapsed:.0f} s)\n")
        searched = {stage.split("(")[1].split(")")[0]: stage.split("AUC ")[1] for stage in stages if "): AUC" in stage}
        ranked = sorted(searched.items(), key=lambda item: -float(item[1]))
        print(f"searched composite (low/mid/high/fc): {best.split('best composite ')[1]}; calibration AUC of each")
        print("candidate: " + ", ".join(f"{label} {auc}" for label, auc in ranked) + "\n")
        names = list(curves)
        print("| q | " + " | ".join(names) + " |")
        print("|---:|" + "---:|" * len(names))
        for index, rate in enumerate(grid):
            print(f"| {rate:.2f} | " + " | ".join(f"{curves[name][index]:.2f}" for name in names) + " |")
        print("| **AUC** | " + " | ".join(f"**{area(grid, curves[name]):.4f}**" for name in names) + " |", flush=True)
        for name in names:
            axis.plot(grid, curves[name], marker=".", label=f"{name} (AUC {area(grid, curves[name]):.3f})")
        axis.set_title(f"{spec}: no fine-tuning")
        axis.set_xlabel("pruning rate q (fraction of channels removed)")
        axis.set_ylabel("test accuracy %")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
