"""PAAM against L1 pruning plus fine-tuning with the same number of epochs, on the demo ResNet-20 (METHODS.md 4(g)).

1. PAAM from the trained demo for N epochs at each λ of a sweep (threshold rule τ = 0.05); the λ whose
   parameter reduction is nearest the target (default 50%) is the one compared.
2. PAAM from scratch (weights re-initialised) for the same N epochs at that λ.
3. Global L1 pruning (all prunable groups, channel ratio found by bisection) to PAAM's parameter count,
   then N epochs of fine-tuning (core fine-tuning: SGD, cosine, best epoch on the calibration split).

Prints markdown tables: test accuracy and size of every run, and the per-layer kept channels PAAM and L1
chose. Cheaper runs: fewer epochs (--epochs), a seeded train subset (--train-subset), fewer λ (--lambdas).

    nice -n 10 .venv/bin/python bench/paam.py [--epochs 3] [--train-subset 5000] [--lambdas 0.5,1,2,4]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import Subset

from secateur.core.data import DataBundle, load_data
from secateur.core.evaluate import accuracy_and_loss
from secateur.core.finetune import FinetuneConfig, finetune
from secateur.core.models import load_model, parse_model_spec
from secateur.core.plan import PlanOptions, PruningPlan, Target
from secateur.core.registry import load_registry
from secateur.core.workspace import Workspace

SEED = 0


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _subset(data: DataBundle, count: int) -> DataBundle:
    """The same bundle with a seeded random subset of ``count`` train images (0: all)."""
    if count <= 0 or count >= len(data.train):
        return data
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(SEED))[:count]
    return replace(data, train=Subset(data.train, sorted(order.tolist())))


def _paam(model: nn.Module, shape, data: DataBundle, params: dict) -> tuple[nn.Module, PruningPlan, float]:
    """PAAM's training and pruning by its threshold rule; returns the pruned model, plan and minutes taken."""
    method = load_registry().methods["paam"]
    start = time.time()
    workspace = Workspace(model, shape, data, seed=SEED)
    scores = workspace.score(method, params)
    plan = workspace.plan(scores, Target("ratio", 0.5))  # the threshold rule replaces these counts
    pruned, _ = workspace.apply(plan, method, params)
    return pruned, plan, (time.time() - start) / 60


def _l1_at(model: nn.Module, shape, data: DataBundle, goal: int) -> tuple[nn.Module, PruningPlan]:
    """Global L1 pruning with the channel ratio whose predicted parameter count is nearest ``goal``."""
    workspace = Workspace(model, shape, data, seed=SEED)
    scores = workspace.score(load_registry().methods["l1"])
    options = PlanOptions(global_ranking=True)
    low, high = 0.0, 0.9
    best = workspace.plan(scores, Target("ratio", 0.5), options)
    for _ in range(25):
        middle = (low + high) / 2
        plan = workspace.plan(scores, Target("ratio", middle), options)
        if abs(plan.predicted_params - goal) < abs(best.predicted_params - goal):
            best = plan
        low, high = (middle, high) if plan.predicted_params > goal else (low, middle)
    pruned, _ = workspace.apply(best)
    return pruned, best


def _profile(rows: dict[str, dict[str, str]], label: str, plan: PruningPlan) -> None:
    for group_id, group in plan.groups.items():
        rows.setdefault(group_id, {})[label] = f"{len(group.kept)}/{group.total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="PAAM training epochs = L1 fine-tuning epochs")
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all 10000)")
    parser.add_argument("--lambdas", default="0.5,1,2,4", help="comma-separated λ sweep from the trained demo")
    parser.add_argument("--target", type=float, default=0.5, help="parameter reduction the compared λ aims at")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate from the trained demo")
    parser.add_argument("--scratch-lr", type=float, default=0.1, help="learning rate from scratch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    data = _subset(load_data("demo"), args.train_subset)
    loaded = load_model(parse_model_spec("demo"))
    shape, base_params = loaded.input_shape, _params(loaded.model)
    base_accuracy = accuracy_and_loss(loaded.model, data)[0]
    print(f"demo ResNet-20: {base_params} params, test accuracy {base_accuracy:.2f}%; {len(data.train)} train images")
    print(f"{args.epochs} epochs everywhere; PAAM threshold τ = 0.05\n", flush=True)

    rows = [("unpruned", "-", base_params, base_accuracy, "-")]
    runs = []
    for value in (float(v) for v in args.lambdas.split(",")):
        params = {"lambda": value, "epochs": args.epochs, "lr": args.lr}
        pruned, plan, minutes = _paam(loaded.model, shape, data, params)
        runs.append((value, pruned, plan))
        accuracy = accuracy_and_loss(pruned, data)[0]
        rows.append(("PAAM from trained", f"{value:g}", _params(pruned), accuracy, f"{minutes:.1f}"))
        print(f"PAAM λ={value:g}: {_params(pruned)} params, {accuracy:.2f}% ({minutes:.1f} min)", flush=True)
    chosen, paam_model, paam_plan = min(runs, key=lambda r: abs(1 - _params(r[1]) / base_params - args.target))

    scratch_params = {"lambda": chosen, "epochs": args.epochs, "lr": args.scratch_lr, "from_scratch": True}
    scratch, scratch_plan, minutes = _paam(loaded.model, shape, data, scratch_params)
    rows.append(
        ("PAAM from scratch", f"{chosen:g}", _params(scratch), accuracy_and_loss(scratch, data)[0], f"{minutes:.1f}")
    )
    print(f"PAAM from scratch: {rows[-1]}", flush=True)

    start = time.time()
    l1_model, l1_plan = _l1_at(loaded.model, shape, data, _params(paam_model))
    rows.append(("L1 global, no fine-tuning", "-", _params(l1_model), accuracy_and_loss(l1_model, data)[0], "-"))
    tuned = finetune(l1_model, data, FinetuneConfig(epochs=args.epochs, lr=args.lr, seed=SEED), torch.device("cpu"))
    minutes = (time.time() - start) / 60
    rows.append(
        (
            "L1 global + fine-tuning",
            "-",
            _params(tuned.model),
            accuracy_and_loss(tuned.model, data)[0],
            f"{minutes:.1f}",
        )
    )

    print("\n| run | λ | params | removed | test accuracy % | minutes |\n|---|---|---|---|---|---|")
    for name, value, count, accuracy, minutes in rows:
        print(f"| {name} | {value} | {count} | {1 - count / base_params:.1%} | {accuracy:.2f} | {minutes} |")

    profile: dict[str, dict[str, str]] = {}
    _profile(profile, f"PAAM λ={chosen:g}", paam_plan)
    _profile(profile, "PAAM scratch", scratch_plan)
    _profile(profile, "L1 global", l1_plan)
    labels = [f"PAAM λ={chosen:g}", "PAAM scratch", "L1 global"]
    print("\nkept channels per group (groups PAAM leaves unscored are kept whole by it)\n")
    print("| group | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    for group_id, entries in profile.items():
        print(f"| {group_id} | " + " | ".join(entries.get(label, "-") for label in labels) + " |")


if __name__ == "__main__":
    main()
