"""cka-layer against other block criteria and against channel pruning at the same MACs, on `demo`.

Every block criterion runs the same loop (remove the least important block, fine-tune, re-score,
until --blocks are gone; each stage keeps 2 blocks; the network's first block is never removed),
then the same final fine-tuning: CKA (the method), random (mean of --seeds seeds), smallest L1
norm of the block's weights, and smallest ‖γ‖₁ of the block's last BatchNorm (METHODS.md's
baseline). Channel pruning (`l1`, per-layer ranking) is set to the MACs reduction the CKA model
reached and gets the same total number of fine-tuning epochs. Test accuracy before any fine-tuning
(the first round's choice of all blocks removed at once; the channel cut) and at the end;
latency is the median of batch-1 and batch-64 forward passes on this machine's CPU.

    .venv/bin/python bench/cka_layer.py [--blocks 3] [--finetune-epochs 1] [--train-subset 4000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from secateur.core.data.loading import DataBundle, load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores, ScoringContext
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.evaluate import accuracy_and_loss, measure_latency, model_macs
from secateur.core.train.finetune import FinetuneConfig, finetune
from secateur.plugins.cka_layer import BlockCriterion, candidates, cka_criterion, remove_iteratively


def l1_criterion(model: nn.Module, names: list[str]) -> Iterator[tuple[str, float]]:
    """Sum of |w| over every conv and linear weight of the block."""
    for name in names:
        weights = [m.weight for m in model.get_submodule(name).modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        yield name, float(sum(w.detach().abs().sum() for w in weights))


def gamma_criterion(model: nn.Module, names: list[str]) -> Iterator[tuple[str, float]]:
    """‖γ‖₁ of the block's last BatchNorm (the one that closes its residual branch)."""
    for name in names:
        norms = [m for m in model.get_submodule(name).modules() if isinstance(m, nn.BatchNorm2d)]
        yield name, float(norms[-1].weight.detach().abs().sum())


def random_criterion(seed: int) -> BlockCriterion:
    generator = torch.Generator().manual_seed(seed)

    def score(model: nn.Module, names: list[str]) -> Iterator[tuple[str, float]]:
        values = torch.rand(len(names), generator=generator)
        yield from zip(names, values.tolist(), strict=True)

    return score


def size(model: nn.Module, shape: tuple[int, ...]) -> dict[str, float]:
    return {"macs": model_macs(model, shape), "params": sum(p.numel() for p in model.parameters())}


def latency(model: nn.Module, shape: tuple[int, ...], runs: int) -> dict[str, float]:
    """Measured once every model is trained, so no training competes with the timing."""
    return {
        "lat1": measure_latency(model, shape, batch_size=1, runs=runs).median,
        "lat64": measure_latency(model, shape, batch_size=64, runs=max(3, runs // 4)).median,
    }


def block_run(
    workspace: Workspace, criterion: BlockCriterion, params: dict[str, Any], blocks: int, data: DataBundle, epochs: int
) -> dict[str, Any]:
    """The iterative loop with ``criterion`` (first removal scored the same way), then the final fine-tuning."""
    context: ScoringContext = replace(workspace.context(), data=data)
    first = Scores(blocks=dict(criterion(context.copy_model(), candidates(context.blocks, True))))
    plan = workspace.plan(first, Target("blocks", blocks))
    one_shot, _ = workspace.apply(plan)  # the first round's choice of all blocks at once, no fine-tuning
    cut_accuracy = accuracy_and_loss(one_shot, data)[0]
    applied = remove_iteratively(context, plan, params, criterion)
    model, edits = applied.model, list(applied.edits)
    model = finetune(model, data, FinetuneConfig(epochs=epochs), workspace.device).model
    return {
        "removed": edits[0]["blocks"],
        "cut": cut_accuracy,
        "final": accuracy_and_loss(model, data)[0],
        "model": model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=1, help="after each removal, and at the end")
    parser.add_argument("--train-subset", type=int, default=0, help="fine-tune on this many training images (0: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--latency-runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    full = load_data("demo")
    data = full
    if args.train_subset:
        indices = torch.randperm(len(full.train), generator=torch.Generator().manual_seed(0))[: args.train_subset]
        data = replace(full, train=Subset(full.train, indices.tolist()))
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, data)
    shape = loaded.input_shape
    params = {"features": "penultimate", "samples": args.samples, "split": "train", "skip_first": True}
    params |= {"finetune_epochs": args.finetune_epochs, "finetune_lr": 0.01}
    base = {"final": accuracy_and_loss(loaded.model, full)[0], **size(loaded.model, shape), "model": loaded.model}
    rows: list[tuple[str, dict[str, Any]]] = [("unpruned", {**base, "cut": base["final"], "removed": []})]
    criteria: list[tuple[str, BlockCriterion]] = [
        ("cka-layer", cka_criterion(workspace.context(), params)),
        ("L1 of weights", l1_criterion),
        ("BN γ ‖·‖₁", gamma_criterion),
    ]
    for label, criterion in criteria:
        result = block_run(workspace, criterion, params, args.blocks, data, args.finetune_epochs)
        rows.append((label, {**result, **size(result["model"], shape)}))
        print(f"{label}: {rows[-1][1]['removed']} {time.perf_counter() - started:.0f} s", flush=True)
    runs = [
        block_run(workspace, random_criterion(seed), params, args.blocks, data, args.finetune_epochs)
        for seed in range(args.seeds)
    ]
    random_row = {key: statistics.mean(run[key] for run in runs) for key in ("cut", "final")}
    random_row["final_sd"] = statistics.stdev(run["final"] for run in runs) if len(runs) > 1 else 0.0
    random_row |= {**size(runs[0]["model"], shape), "model": runs[0]["model"]}
    random_row["removed"] = [" ".join(run["removed"]) for run in runs]
    rows.append((f"random (mean of {args.seeds})", random_row))
    goal = 1 - rows[1][1]["macs"] / base["macs"]
    scores = workspace.score(load_registry().methods["l1"]).scores
    channel_plan = workspace.plan(scores, Target("macs", goal))
    cut = workspace.apply(channel_plan).model
    tuned = finetune(cut, data, FinetuneConfig(epochs=args.finetune_epochs * args.blocks), workspace.device).model
    channel = {"cut": accuracy_and_loss(cut, full)[0], "final": accuracy_and_loss(tuned, full)[0]}
    channel |= {**size(tuned, shape), "model": tuned, "removed": []}
    rows.append((f"l1 channels, {args.blocks * args.finetune_epochs} ep", channel))
    for _, row in rows:
        row |= latency(row.pop("model"), shape, args.latency_runs)
    print(f"\n`demo`, {args.blocks} blocks, {args.finetune_epochs} fine-tuning epoch(s) per round, "
          f"train subset {args.train_subset or len(full.train)}, {time.perf_counter() - started:.0f} s\n")  # fmt: skip
    print("| criterion | blocks removed | acc. one-shot cut, no FT % | acc. final % | params | MACs red. % "
          "| latency b1 ms | latency b64 ms |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, row in rows:
        removed = "; ".join(row["removed"]) if row["removed"] else "–"
        final = f"{row['final']:.2f}" + (f" ± {row['final_sd']:.2f}" if "final_sd" in row else "")
        print(
            f"| {label} | {removed} | {row['cut']:.2f} | {final} | {row['params'] / 1e6:.3f} M "
            f"| {100 * (1 - row['macs'] / base['macs']):.1f} | {row['lat1']:.2f} | {row['lat64']:.2f} |"
        )


if __name__ == "__main__":
    main()
