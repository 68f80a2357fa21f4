"""Measured CPU latency of resnet50 before and after a 2× MACs reduction (l1, no fine-tuning).

Latency is the median of timed forward passes after warm-up, at batch 1 and 32,
224×224, on the CPU with 2 threads. Target: speed-up ≥ 1.7× (2× is the MACs limit).

    .venv/bin/python bench/speedup.py
"""

from __future__ import annotations

import torch
import torchvision

from secateur.core.evaluate import measure_latency
from secateur.core.plan import Target
from secateur.core.registry import load_registry
from secateur.core.workspace import Workspace


def main() -> None:
    torch.set_num_threads(2)
    workspace = Workspace(torchvision.models.resnet50(weights=None), (3, 224, 224))
    plan = workspace.plan(workspace.score(load_registry().methods["l1"]), Target("macs", 0.5))
    pruned, _ = workspace.apply(plan)
    print(
        f"MACs {workspace.macs / 1e9:.2f} G -> {plan.predicted_macs / 1e9:.2f} G "
        f"(×{workspace.macs / plan.predicted_macs:.2f}); params {workspace.params / 1e6:.2f} M -> "
        f"{plan.predicted_params / 1e6:.2f} M"
    )
    print(f"{'batch':>5} {'before ms':>10} {'after ms':>9} {'speed-up':>9}")
    for batch, runs in ((1, 30), (32, 8)):
        before = measure_latency(workspace.model, (3, 224, 224), batch_size=batch, warmup=3, runs=runs)
        after = measure_latency(pruned, (3, 224, 224), batch_size=batch, warmup=3, runs=runs)
        print(
            f"{batch:>5} {before.median:>10.1f} {after.median:>9.1f} {before.median / after.median:>9.2f}", flush=True
        )


if __name__ == "__main__":
    main()
