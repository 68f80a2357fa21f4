"""Intra-Fusion against plain pruning with the same kept channels, without fine-tuning.

For `demo` and `demo-vgg`, at channel ratios 0.1 to 0.7 (l1 criterion, per-layer ranking, the same
kept channels for every column): plain removal, plain removal followed by BatchNorm recalibration
on the calibration split (the other training-free repair), Intra-Fusion with the function-preserving
"average" normalisation (default) and with the official code's "reference" one. Then one point with
a short fine-tuning (ratio 0.5, 1 epoch) for plain and Intra-Fusion. Prints a table of test accuracy
and writes a PNG plot.

    .venv/bin/python bench/intra_fusion.py [--out bench/intra_fusion.png]
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.core.train.finetune import FinetuneConfig, finetune

RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
COLUMNS = ("plain", "plain+BN", "IF", "IF-ref")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/intra_fusion.png")
    args = parser.parse_args()
    torch.set_num_threads(2)
    methods = load_registry().methods
    fusion = methods["intra-fusion"]
    data = load_data("demo")
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, spec in zip(axes, ("demo", "demo-vgg"), strict=True):
        loaded = load_model(parse_model_spec(spec))
        workspace = Workspace(loaded.model, loaded.input_shape, data)
        scores = workspace.score(methods["l1"]).scores
        base = accuracy_and_loss(loaded.model, data)[0]
        print(f"\n{spec} (unpruned {base:.2f}%)")
        print(f"{'ratio':>5} " + " ".join(f"{c:>9}" for c in COLUMNS))
        curves = {column: [] for column in COLUMNS}
        for ratio in RATIOS:
            plan = workspace.plan(scores, Target("ratio", ratio))
            plain = workspace.apply(plan).model
            curves["plain"].append(accuracy_and_loss(plain, data)[0])
            recalibrate_batchnorm(plain, data.loader("calibration", 128), torch.device("cpu"))
            curves["plain+BN"].append(accuracy_and_loss(plain, data)[0])
            for column, normalization in (("IF", "average"), ("IF-ref", "reference")):
                fused = workspace.apply(plan, fusion, {"normalization": normalization}).model
                curves[column].append(accuracy_and_loss(fused, data)[0])
            print(f"{ratio:>5.1f} " + " ".join(f"{curves[c][-1]:>9.2f}" for c in COLUMNS), flush=True)
        plan = workspace.plan(scores, Target("ratio", 0.5))
        tuned = {}
        for column, model in (("plain", workspace.apply(plan)[0]), ("IF", workspace.apply(plan, fusion, {})[0])):
            result = finetune(model, data, FinetuneConfig(epochs=1), torch.device("cpu"))
            tuned[column] = accuracy_and_loss(result.model, data)[0]
        print(f"ratio 0.5 + 1 epoch of fine-tuning: plain {tuned['plain']:.2f}, IF {tuned['IF']:.2f}")
        for column in COLUMNS:
            axis.plot(RATIOS, curves[column], marker="o", label=column)
        axis.set_title(f"{spec}: l1, no fine-tuning")
        axis.set_xlabel("channel ratio removed")
        axis.set_ylabel("test accuracy %")
        axis.legend()
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"\nplot: {args.out}")


if __name__ == "__main__":
    main()
