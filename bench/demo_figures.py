"""The embedded demos' figures: test accuracy and how gracefully they degrade.

Prints, for each demo model, its test accuracy and its accuracy after
L1-magnitude pruning of 10-40% of the channels of every prunable group with
Torch-Pruning used directly (no fine-tuning, no BatchNorm recalibration), the
30% point again after Secateur's BatchNorm recalibration on the calibration
split, the accuracy after Secateur's per-layer L1 pruning to 50% fewer MACs
and one epoch of fine-tuning (the demo must not win everything back), and the
training record stored in the weight file. Run:

    .venv/bin/python bench/demo_figures.py
"""

from __future__ import annotations

import copy
import json
from importlib.resources import files

import torch
import torch_pruning as tp
from safetensors import safe_open

from secateur.core.data.loading import load_data
from secateur.core.graph.layer_tree import count_params
from secateur.core.model.specs import DEMO_MODELS, parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.core.train.finetune import FinetuneConfig, finetune

RATIOS = (0.1, 0.2, 0.3, 0.4)


def l1_pruned(model: torch.nn.Module, ratio: float, classifier: str) -> torch.nn.Module:
    """A copy of ``model`` with ``ratio`` of each group's channels removed by L1 norm."""
    pruned = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(
        pruned,
        torch.randn(1, 3, 32, 32),
        importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=ratio,
        ignored_layers=[pruned.get_submodule(classifier)],
    )
    pruner.step()
    return pruned.eval()


def l1_macs_finetuned(model: torch.nn.Module, data: object, reduction: float = 0.5) -> float:
    """Test accuracy after Secateur's L1 pruning to ``reduction`` fewer MACs and one epoch of fine-tuning."""
    workspace = Workspace(model, (3, 32, 32), data)
    method = load_registry().method("l1")
    scored = workspace.score(method)
    applied = workspace.apply(workspace.plan(scored, Target("macs", reduction)), method, {}, scored)
    tuned = finetune(applied.model, data, FinetuneConfig(epochs=1), workspace.settings).model
    return accuracy_and_loss(tuned, data)[0]


def main() -> None:
    data = load_data("demo")
    header = [
        "model", "params", "test acc", *[f"L1 {int(r * 100)}%" for r in RATIOS], "30%+BN", "MACs 50%+1ep",
        "train s", "epochs",
    ]  # fmt: skip
    rows = []
    for name, (_, weight_file) in DEMO_MODELS.items():
        loaded = load_model(parse_model_spec(name))
        model = loaded.model
        classifier = "fc" if name == "demo" else "classifier.3"
        base, _, _ = accuracy_and_loss(model, data)
        pruned = [accuracy_and_loss(l1_pruned(model, r, classifier), data)[0] for r in RATIOS]
        recalibrated = l1_pruned(model, 0.3, classifier)
        recalibrate_batchnorm(recalibrated, data.loader("calibration", 128), torch.device("cpu"))
        pruned.append(accuracy_and_loss(recalibrated, data)[0])
        pruned.append(l1_macs_finetuned(model, data))
        with safe_open(str(files("secateur.assets").joinpath(weight_file)), "pt") as handle:
            record = json.loads(handle.metadata()["secateur_demo"])
        rows.append(
            [
                name,
                f"{count_params(model) / 1e6:.3f} M",
                f"{base:.2f}",
                *[f"{a:.2f}" for a in pruned],
                f"{record['train_seconds']:.0f}",
                str(record["epochs"]),
            ]
        )
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
