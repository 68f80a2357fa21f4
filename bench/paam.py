"""PAAM against L1 pruning plus fine-tuning with the same number of epochs, on the demo ResNet-20 (METHODS.md 4(g)).

1. PAAM from the trained demo for N epochs at each λ of a sweep (threshold rule τ = 0.05); for each, the
   trained network with its scores folded in (before removal) and the pruned one. The λ whose parameter
   reduction is nearest the target (default 50%) is the one compared, also after BatchNorm recalibration
   on the calibration split (what the plugin's default recalibrate_bn=true does; the "pruned" rows turn it
   off), with its scores through the host's global ranking instead of τ, and after 1 epoch of fine-tuning
   (METHODS.md 4(b)8's optional fine-tuning; N + 1 epochs in all).
2. PAAM from scratch (weights re-initialised) for the same N epochs at that λ.
3. Global L1 pruning (all prunable groups, channel ratio found by bisection) to PAAM's parameter count,
   then N and N + 1 epochs of fine-tuning (core fine-tuning: SGD, cosine, best epoch on the calibration split).

Prints markdown tables: test accuracy and size of every run, and the per-layer kept channels PAAM and L1
chose. Cheaper runs: fewer epochs (--epochs), a seeded train subset (--train-subset), fewer λ (--lambdas).

    nice -n 10 .venv/bin/python bench/paam.py [--epochs 3] [--train-subset 2000] [--lambdas 1,2,4]"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import torch
from torch import nn
from torch.utils.data import Subset

from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.core.train.finetune import FinetuneConfig, finetune
from secateur.plugins.paam import trained_state
from secateur.plugins.paam_scores import fold_scores

SEED = 0
CPU = torch.device("cpu")


def _accuracy(model: nn.Module, data: DataBundle) -> float:
    return accuracy_and_loss(model, data)[0]


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _subset(data: DataBundle, count: int) -> DataBundle:
    """The same bundle with a seeded random subset of ``count`` train images (0: all)."""
    if count <= 0 or count >= len(data.train):
        return data
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(SEED))[:count]
    return replace(data, train=Subset(data.train, sorted(order.tolist())))


def _paam(model: nn.Module, shape, data: DataBundle, params: dict) -> dict:
    """PAAM's training and pruning by its threshold rule.

    Returns the pruned model, the trained network with the scores folded in (before any removal), the plan,
    the minutes taken, and the workspace and scores (to plan again from the same training).
    """
    method = load_registry().methods["paam"]
    start = time.time()
    workspace = Workspace(model, shape, data, settings=RunSettings(seed=SEED))
    scores = workspace.score(method, params).scores
    state = trained_state(workspace.context().model)
    folded = copy.deepcopy(state.model)
    fold_scores(folded, state.targets, state.scores)
    plan = workspace.plan(scores, Target("ratio", 0.5))  # the threshold rule replaces these counts
    pruned = workspace.apply(plan, method, params).model
    minutes = (time.time() - start) / 60
    return {
        "pruned": pruned,
        "folded": folded,
        "plan": plan,
        "minutes": minutes,
        "workspace": workspace,
        "scores": scores,
    }


def _global_at(
    workspace: Workspace, scores: Scores, goal: int, method=None, params=None
) -> tuple[nn.Module, PruningPlan]:
    """Global ranking with the channel ratio whose predicted parameter count is nearest ``goal``."""
    options = PlanOptions(global_ranking=True)
    low, high = 0.0, 0.9
    best = workspace.plan(scores, Target("ratio", 0.5), options)
    for _ in range(25):
        middle = (low + high) / 2
        plan = workspace.plan(scores, Target("ratio", middle), options)
        if abs(plan.predicted_params - goal) < abs(best.predicted_params - goal):
            best = plan
        low, high = (middle, high) if plan.predicted_params > goal else (low, middle)
    pruned = workspace.apply(best, method, params).model
    return pruned, best


def _profile(rows: dict[str, dict[str, str]], label: str, plan: PruningPlan) -> None:
    for group_id, group in plan.groups.items():
        rows.setdefault(group_id, {})[label] = f"{len(group.kept)}/{group.total}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="PAAM training epochs = L1 fine-tuning epochs")
    parser.add_argument("--train-subset", type=int, default=0, help="train on this many images (0: all 10000)")
    parser.add_argument("--lambdas", default="1,2,4", help="comma-separated λ sweep from the trained demo")
    parser.add_argument("--target", type=float, default=0.5, help="parameter reduction the compared λ aims at")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate from the trained demo")
    parser.add_argument("--scratch-lr", type=float, default=0.1, help="learning rate from scratch")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    data = _subset(load_data("demo"), args.train_subset)
    loaded = load_model(parse_model_spec("demo"))
    shape, base_params = loaded.input_shape, _params(loaded.model)
    base_accuracy = _accuracy(loaded.model, data)
    print(f"demo ResNet-20: {base_params} params, test accuracy {base_accuracy:.2f}%; {len(data.train)} train images")
    print(f"{args.epochs} epochs everywhere; PAAM threshold τ = 0.05\n", flush=True)

    rows = [("unpruned", "-", base_params, base_accuracy, "-")]
    runs = []
    for value in (float(v) for v in args.lambdas.split(",")):
        params = {"lambda": value, "epochs": args.epochs, "lr": args.lr, "recalibrate_bn": False}
        run = _paam(loaded.model, shape, data, params)
        runs.append((value, run))
        trained = _accuracy(run["folded"], data)
        rows.append(("PAAM from trained: trained network, before removal", f"{value:g}", base_params, trained, "-"))
        pruned, minutes = run["pruned"], f"{run['minutes']:.1f}"
        rows.append(
            ("PAAM from trained: pruned (τ = 0.05)", f"{value:g}", _params(pruned), _accuracy(pruned, data), minutes)
        )
        print(rows[-2], rows[-1], flush=True)
    chosen, run = min(runs, key=lambda r: abs(1 - _params(r[1]["pruned"]) / base_params - args.target))
    paam_model, paam_plan, label = run["pruned"], run["plan"], f"PAAM λ={chosen:g}"
    count = _params(paam_model)
    recalibrated = copy.deepcopy(paam_model)
    recalibrate_batchnorm(recalibrated, data.loader("calibration", 128), CPU)
    rows.append((f"{label} + BatchNorm recalibration", f"{chosen:g}", count, _accuracy(recalibrated, data), "-"))
    tuned = finetune(paam_model, data, FinetuneConfig(epochs=1, lr=args.lr, seed=SEED), CPU).model
    total = args.epochs + 1
    rows.append((f"{label} + 1 epoch fine-tuning ({total} in all)", f"{chosen:g}", count, _accuracy(tuned, data), "-"))
    paam_params = {"lambda": chosen, "epochs": args.epochs, "lr": args.lr, "threshold": 0.0, "recalibrate_bn": False}
    ranked, ranked_plan = _global_at(
        run["workspace"], run["scores"], count, load_registry().methods["paam"], paam_params
    )
    rows.append(
        (
            f"{label} scores, host's global ranking (threshold 0)",
            f"{chosen:g}",
            _params(ranked),
            _accuracy(ranked, data),
            "-",
        )
    )
    print(*rows[-3:], sep="\n", flush=True)

    scratch_params = {
        "lambda": chosen,
        "epochs": args.epochs,
        "lr": args.scratch_lr,
        "from_scratch": True,
        "recalibrate_bn": False,
    }
    scratch = _paam(loaded.model, shape, data, scratch_params)
    scratch_plan = scratch["plan"]
    rows.append(
        (
            "PAAM from scratch: trained network, before removal",
            f"{chosen:g}",
            base_params,
            _accuracy(scratch["folded"], data),
            "-",
        )
    )
    rows.append(
        (
            "PAAM from scratch: pruned (τ = 0.05)",
            f"{chosen:g}",
            _params(scratch["pruned"]),
            _accuracy(scratch["pruned"], data),
            f"{scratch['minutes']:.1f}",
        )
    )
    print(rows[-2], rows[-1], flush=True)

    start = time.time()
    l1_workspace = Workspace(loaded.model, shape, data, settings=RunSettings(seed=SEED))
    l1_model, l1_plan = _global_at(l1_workspace, l1_workspace.score(load_registry().methods["l1"]).scores, count)
    rows.append(("L1 global, no fine-tuning", "-", _params(l1_model), _accuracy(l1_model, data), "-"))
    for epochs in (args.epochs, args.epochs + 1):
        tuned = finetune(l1_model, data, FinetuneConfig(epochs=epochs, lr=args.lr, seed=SEED), CPU).model
        minutes = (time.time() - start) / 60
        rows.append(
            (f"L1 global + {epochs} epochs fine-tuning", "-", _params(tuned), _accuracy(tuned, data), f"{minutes:.1f}")
        )
        print(rows[-1], flush=True)

    print("\n| run | λ | params | removed | test accuracy % | minutes |\n|---|---|---|---|---|---|")
    for name, value, count, accuracy, minutes in rows:
        print(f"| {name} | {value} | {count} | {1 - count / base_params:.1%} | {accuracy:.2f} | {minutes} |")

    profile: dict[str, dict[str, str]] = {}
    _profile(profile, label, paam_plan)
    _profile(profile, f"{label} global ranking", ranked_plan)
    _profile(profile, "PAAM scratch", scratch_plan)
    _profile(profile, "L1 global", l1_plan)
    labels = [label, f"{label} global ranking", "PAAM scratch", "L1 global"]
    print("\nkept channels per group (groups PAAM leaves unscored are kept whole by it)\n")
    print("| group | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels))
    for group_id, entries in profile.items():
        print(f"| {group_id} | " + " | ".join(entries.get(label, "-") for label in labels) + " |")


if __name__ == "__main__":
    main()
