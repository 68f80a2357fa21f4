"""HAP against global L1 and Taylor on the demo ResNet, at 30/50/70% parameter reduction.

Every method plans with the same options: global ranking (scores normalised by their group's mean, as
`--global-ranking` does) with HAP's per-layer cap of 0.95 (`--max-layer-ratio 0.95`). For each
target the channel ratio is bisected until the plan's predicted parameter count is as close as it
can get to the target. Columns:

- `hap`: HAP (Hessian-trace sensitivities), with neural implants (`implant_ratio`, default 0.1);
  its parameter count includes the implants and what they keep (their BatchNorm, their inputs to
  the next layer);
- `hap-q0`: the same plan without implants;
- `hap-raw` (with `--raw`): HAP's own rule instead of the host's global ranking: raw
  sensitivities (not normalised per group) sorted over all channels, same cap, no implants;
- `l1`, `taylor`: the baselines (Taylor on 8 calibration batches).

Test accuracy (2000 images) without fine-tuning, then after a short fine-tuning (Secateur's
recipe: SGD, Nesterov, lr 0.01 cosine, weight decay 5e-4, batch 128; `--epochs`, optionally on a
seeded subset of the train split, `--train-subset`). HAP's scoring time is given relative to one
training epoch over the whole train split (measured on 20 training steps, same threads).

    nice .venv/bin/python bench/hap.py [--epochs 1] [--train-subset N] [--probes 20] [--raw]
"""

from __future__ import annotations

import argparse
import copy
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.core.train.finetune import FinetuneConfig, finetune

CAP = 0.95
OPTIONS = PlanOptions(global_ranking=True, max_layer_ratio=CAP)
RAW_OPTIONS = PlanOptions(global_ranking=True, max_layer_ratio=CAP, raw_scores=True)  # HAP's own rule: raw S


def epoch_seconds(model: torch.nn.Module, data: DataBundle, steps: int = 20) -> float:
    """Seconds of one training epoch over the whole train split, from ``steps`` timed SGD steps."""
    work = copy.deepcopy(model).train()
    optimizer = torch.optim.SGD(work.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loader = data.loader("train", 128, shuffle=True)
    batches = iter(loader)
    started = time.perf_counter()
    for _ in range(steps):
        images, labels = next(batches)
        loss = F.cross_entropy(work(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * len(loader)


def plan_for_params(workspace: Workspace, make, reduction: float) -> PruningPlan:
    """The plan whose predicted parameter count is nearest ``(1 − reduction)`` of the model's (bisection)."""
    goal = (1 - reduction) * workspace.params
    low, high, best = 0.0, CAP, None
    for _ in range(30):
        middle = (low + high) / 2
        plan = make(middle)
        if best is None or abs(plan.predicted_params - goal) < abs(best.predicted_params - goal):
            best = plan
        if plan.predicted_params > goal:
            low = middle
        else:
            high = middle
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reductions", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs after pruning")
    parser.add_argument("--train-subset", type=int, default=0, help="fine-tune on this many train images (0: all)")
    parser.add_argument("--probes", type=int, default=20)
    parser.add_argument("--batches", type=int, default=4, help="calibration batches of 128 for HAP")
    parser.add_argument("--implant-ratio", type=float, default=0.1)
    parser.add_argument("--raw", action="store_true", help="also HAP's own global rule on raw sensitivities")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = load_registry().methods
    data = load_data("demo")
    tune_data = data
    if args.train_subset:
        indices = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: args.train_subset]
        tune_data = replace(data, train=Subset(data.train, indices.tolist()))
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, data, settings=RunSettings(batch_size=128))
    base = accuracy_and_loss(loaded.model, data)[0]
    epoch = epoch_seconds(loaded.model, data)
    hap_params = {"probes": args.probes, "batches": args.batches, "implant_ratio": args.implant_ratio}
    started = time.perf_counter()
    hap_scores = workspace.score(methods["hap"], hap_params).scores
    hap_seconds = time.perf_counter() - started
    negative = sum(int((v < 0).sum()) for v in hap_scores.groups.values())
    total = sum(v.numel() for v in hap_scores.groups.values())
    scores = {
        "l1": workspace.score(methods["l1"]).scores,
        "taylor": workspace.score(methods["taylor"], {"batches": 8}).scores,
    }
    print(f"demo ResNet: {workspace.params} params, test accuracy {base:.2f}%, {args.threads} threads")
    print(
        f"one training epoch ({len(data.train)} images): {epoch:.0f} s; HAP scoring ({args.probes} probes, "
        f"{args.batches}×128 images): {hap_seconds:.0f} s = {hap_seconds / epoch:.2f} epochs; "
        f"{negative} of {total} sensitivities negative"
    )
    subset = f"{args.train_subset} train images" if args.train_subset else "the whole train split"
    print(f"fine-tuning: {args.epochs} epoch(s) on {subset}; global ranking, per-layer cap {CAP}\n")
    columns = ["hap", "hap-q0", *(["hap-raw"] if args.raw else []), "l1", "taylor"]
    print(f"{'target':>6} {'method':>7} {'params':>8} {'reduction':>9} {'acc':>6} {'acc+ft':>6} {'note'}")
    rows = []
    for reduction in args.reductions:
        for column in columns:
            if column in ("hap", "hap-q0"):
                plan = plan_for_params(
                    workspace, lambda r: workspace.plan(hap_scores, Target("ratio", r), OPTIONS, "hap"), reduction
                )
                q = args.implant_ratio if column == "hap" else 0.0
                model = workspace.apply(plan, methods["hap"], {**hap_params, "implant_ratio": q}).model
            elif column == "hap-raw":
                plan = plan_for_params(
                    workspace, lambda r: workspace.plan(hap_scores, Target("ratio", r), RAW_OPTIONS, "hap"), reduction
                )
                model = workspace.apply(plan).model
            else:
                plan = plan_for_params(
                    workspace, lambda r, c=column: workspace.plan(scores[c], Target("ratio", r), OPTIONS, c), reduction
                )
                model = workspace.apply(plan).model
            params = sum(p.numel() for p in model.parameters())
            accuracy = accuracy_and_loss(model, data)[0]
            tuned = finetune(model, tune_data, FinetuneConfig(epochs=args.epochs), torch.device("cpu")).model
            after = accuracy_and_loss(tuned, data)[0]
            note = f"+{params - plan.predicted_params} for implants" if params != plan.predicted_params else ""
            rows.append((reduction, column, params, 1 - params / workspace.params, accuracy, after, note))
            cells = f"{params:>8} {rows[-1][3]:>9.1%} {accuracy:>6.2f} {after:>6.2f}"
            print(f"{reduction:>6.0%} {column:>7} {cells} {note}", flush=True)
    print("\n| target | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for reduction in args.reductions:
        cells = [f"{r[4]:.1f} → {r[5]:.1f} ({r[3]:.0%})" for r in rows if r[0] == reduction]
        print(f"| {reduction:.0%} | " + " | ".join(cells) + " |")
    print("\ncells: test accuracy without → with fine-tuning (actual parameter reduction)")


if __name__ == "__main__":
    main()
