"""How well the per-device latency table predicts a pruned model's measured latency.

Builds the table (cached in a temporary folder, so every run measures afresh), then for
uniform l1 plans at three channel ratios and one HALP plan (``--latency-reduction`` by the
table) compares the reduction the table predicts, and the one MACs would predict, with the
reduction measured interleaved against the unpruned model (medians, p10–p90). Reductions are
compared rather than milliseconds, so slow drift of the machine's load cancels out.

    nice -n 15 .venv/bin/python bench/latency_table.py [--model torchvision:resnet18] [--size 128]
        [--batch 1] [--threads 1] [--rounds 21]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.latency import _spread, time_interleaved
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="torchvision:resnet18")
    parser.add_argument("--size", type=int, default=128, help="input height and width (128)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=21, help="interleaved timed runs per comparison (21)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["SECATEUR_CACHE_DIR"] = tempfile.mkdtemp(prefix="secateur-latency-")
    loaded = load_model(parse_model_spec(args.model, input_size=str(args.size)))
    workspace = Workspace(loaded.model, loaded.input_shape)
    scores = workspace.score(load_registry().methods["l1"]).scores

    started = time.monotonic()
    table, _ = workspace.latency_table(args.batch)
    built = time.monotonic() - started
    started = time.monotonic()
    Workspace(loaded.model, loaded.input_shape).latency_table(args.batch)
    cached = time.monotonic() - started
    print(
        f"{args.model} {loaded.input_shape}, batch {args.batch}, {args.threads} thread(s), {os.cpu_count()} cores: "
        f"table of {len(table.groups)} groups built in {built:.1f} s, read from cache in {cached:.2f} s "
        f"(incl. tracing); base {table.base_ms:.2f} ms"
    )
    plans = [
        (f"l1 ratio {r}", workspace.plan(scores, Target("ratio", r), PlanOptions(), "l1")) for r in (0.25, 0.5, 0.75)
    ]
    halp = PlanOptions(latency_table=True, latency_batch_size=args.batch)
    plans.append(("HALP latency 0.4", workspace.plan(scores, Target("latency", 0.4), halp, "l1")))
    batch = torch.randn((args.batch, *loaded.input_shape), generator=torch.Generator().manual_seed(0))
    print(f"{'plan':<18} {'MACs red.':>9} {'table red.':>10} {'measured red.':>13} {'error':>6}  before / after ms")
    for name, plan in plans:
        counts = {gid: len(group.kept) for gid, group in plan.groups.items()}
        predicted = 1.0 - table.predict(counts) / table.base_ms
        pruned = workspace.apply(plan).model
        pair = time_interleaved(workspace.model, pruned, batch, args.rounds)
        macs = 1.0 - plan.predicted_macs / workspace.macs
        print(
            f"{name:<18} {macs:>9.3f} {predicted:>10.3f} {pair.reduction:>13.3f} {predicted - pair.reduction:>+6.3f}"
            f"  {_spread(pair.reference)} / {_spread(pair.candidate)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
