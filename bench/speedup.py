"""Measured CPU latency of resnet50 before and after a 2× MACs reduction (l1, no fine-tuning).

The plan removes half the MACs with channel counts rounded to multiples of 8
(what CPU and GPU kernels prefer). Latency is the median of timed forward
passes after warm-up, at batch 1 and 32, 224×224, on the CPU with 2 threads,
with both models in the same memory layout: the default (NCHW) and
channels-last. Target: speed-up ≥ 1.7× (2× is the MACs limit).

    .venv/bin/python bench/speedup.py
"""

from __future__ import annotations

import copy

import torch
import torchvision

from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.evaluate import measure_latency


def main() -> None:
    torch.set_num_threads(2)
    workspace = Workspace(torchvision.models.resnet50(weights=None), (3, 224, 224))
    scores = workspace.score(load_registry().methods["l1"]).scores
    plan = workspace.plan(scores, Target("macs", 0.5), PlanOptions(round_to=8))
    pruned = workspace.apply(plan).model
    print(
        f"MACs {workspace.macs / 1e9:.2f} G -> {plan.predicted_macs / 1e9:.2f} G "
        f"(×{workspace.macs / plan.predicted_macs:.2f}); params {workspace.params / 1e6:.2f} M -> "
        f"{plan.predicted_params / 1e6:.2f} M"
    )
    print(f"{'layout':<14} {'batch':>5} {'before ms':>10} {'after ms':>9} {'speed-up':>9}")
    for layout, channels_last in (("NCHW", False), ("channels-last", True)):
        for batch, runs in ((1, 30), (32, 6)):
            options = {"batch_size": batch, "warmup": 3, "runs": runs, "channels_last": channels_last}
            before = measure_latency(copy.deepcopy(workspace.model), (3, 224, 224), **options)
            after = measure_latency(copy.deepcopy(pruned), (3, 224, 224), **options)
            speedup = before.median / after.median
            print(f"{layout:<14} {batch:>5} {before.median:>10.1f} {after.median:>9.1f} {speedup:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
