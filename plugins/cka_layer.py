"""``cka-layer``: layer pruning by CKA similarity (Pons, Yamamoto, Reali Costa, Jordao, ICPR 2024).

A residual block with an identity shortcut is unimportant when bypassing it
barely changes the network's final representation. For each candidate block
the model is run with the block replaced by its bypass (``act(x)``, exactly
the block with its residual branch at zero); the score is ``1 − CKA`` between
the bypassed and the intact representation (the classifier's pooled input by
default), on a fixed set of training images. The least important block is
removed, the network fine-tuned, the rest re-scored, until the target is met.

Defaults follow the paper's code: one block per round, plain (biased) linear
CKA in float64, the network's first block never removed, a stage keeps at
least two blocks (the host's ``min_stage_blocks``). The paper fine-tunes for
many epochs per round; here ``finetune_epochs`` (1) runs between removals and
the pipeline's own fine-tuning follows the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from secateur.core.api import (
    API_VERSION,
    MACS_TOLERANCE,
    Applied,
    BlockInfo,
    FinetuneConfig,
    InputError,
    MethodInfo,
    ParamSpec,
    PruningPlan,
    Scored,
    Scores,
    ScoringContext,
    block_bypass,
    block_edit,
    finetune,
    hookimpl,
    model_macs,
    rank_blocks,
    remove_blocks,
    replace_module,
    residual_blocks,
)
from secateur.plugins.cka import LinearCKA

BlockCriterion = Callable[[nn.Module, list[str]], Iterator[tuple[str, float]]]

PARAMS = (
    ParamSpec(
        "features",
        "choice",
        "penultimate",
        "representation compared: the classifier's pooled input (the paper's) or the logits",
        choices=("penultimate", "logits"),
    ),
    ParamSpec("samples", "int", 1500, "images the representations are compared on (keep ≥ 10× the feature width)", 16),
    ParamSpec("split", "choice", "train", "where those images come from", choices=("train", "calibration")),
    ParamSpec("skip_first", "bool", True, "never remove the network's first block (as the paper's code)"),
    ParamSpec("finetune_epochs", "int", 1, "fine-tuning epochs after each removal but the last", min=0, max=1000),
    ParamSpec("finetune_lr", "float", 0.01, "learning rate of that fine-tuning", min=1e-6, max=1.0),
)


def candidates(blocks: list[BlockInfo], skip_first: bool) -> list[str]:
    """The removable blocks a round may choose from (the network's first block left out when asked)."""
    first = blocks[0].name if blocks else None
    return [block.name for block in blocks if block.removable and not (skip_first and block.name == first)]


class _Representation:
    """Reads the representation CKA compares: the classifier's input, or the model's output."""

    def __init__(self, context: ScoringContext, features: str) -> None:
        if features == "penultimate" and context.classifier is None:
            raise InputError("cka-layer: the model has no final classifier layer to read; use --param features=logits")
        self.context = context
        self.layer = context.classifier if features == "penultimate" else None
        self.samples = 0

    def batches(self, model: nn.Module, split: str, samples: int, stage: str) -> Iterator[torch.Tensor]:
        """The representation of the first ``samples`` images of ``split``, batch by batch, seeded order."""
        captured: list[torch.Tensor] = []
        hook = None
        if self.layer is not None:
            hook = model.get_submodule(self.layer).register_forward_pre_hook(
                lambda _module, inputs: captured.append(inputs[0])
            )
        try:
            seen = 0
            total = samples
            with torch.no_grad():
                for images, *_ in self.context.loader(split, shuffle=split == "train"):
                    images = images[: samples - seen].to(self.context.device)
                    output = model(images)
                    yield (captured.pop() if captured else output).flatten(1)
                    seen += images.shape[0]
                    self.context.progress(stage, seen, total)
                    if seen >= samples:
                        break
            self.samples = seen
        finally:
            if hook is not None:
                hook.remove()


def cka_criterion(context: ScoringContext, params: dict[str, Any]) -> BlockCriterion:
    """``1 − CKA(intact, bypassed)`` for each named block of a model, one block at a time."""
    representation = _Representation(context, params["features"])

    def score_blocks(model: nn.Module, names: list[str]) -> Iterator[tuple[str, float]]:
        model.eval()
        reference = list(representation.batches(model, params["split"], params["samples"], "cka-layer: reference"))
        if representation.samples < 2:
            raise InputError(f"cka-layer: the {params['split']} split has fewer than 2 images to compare on")
        for index, name in enumerate(names):
            block = model.get_submodule(name)
            replace_module(model, name, block_bypass(block).to(context.device))
            try:
                accumulator = LinearCKA()
                stage = f"cka-layer: block {name} ({index + 1}/{len(names)})"
                for kept, bypassed in zip(
                    reference, representation.batches(model, params["split"], params["samples"], stage), strict=True
                ):
                    accumulator.update(kept, bypassed)
            finally:
                replace_module(model, name, block)
            yield name, 1.0 - accumulator.value()

    return score_blocks


def score(context: ScoringContext, params: dict[str, Any]) -> Iterator[Scores]:
    """Stream ``1 − CKA`` per candidate block of the model as it stands."""
    names = candidates(context.blocks, params["skip_first"])
    model = context.copy_model()
    for name, value in cka_criterion(context, params)(model, names):
        yield Scores(blocks={name: value})


def remove_iteratively(
    context: ScoringContext, plan: PruningPlan, params: dict[str, Any], criterion: BlockCriterion
) -> Applied:
    """Remove the plan's first block, fine-tune, re-score the rest with ``criterion``, until the target is met.

    A ``macs`` target stops once the reduction is reached; any other target
    removes as many blocks as the plan does. Re-ranking uses the plan's own
    options (locks, blocks kept per stage). The effective plan names the
    blocks actually removed, which re-scoring may have changed.
    """
    model = context.copy_model().eval()
    shape = tuple(context.example.shape[1:])
    base_macs = model_macs(model, shape, context.device)
    removed: list[str] = []
    choice = plan.blocks_removed[0] if plan.blocks_removed else None
    while choice is not None:
        remove_blocks(model, [choice])
        removed.append(choice)
        if plan.target.kind == "macs":
            if 1.0 - model_macs(model, shape, context.device) / base_macs >= plan.target.value - MACS_TOLERANCE:
                break
        elif len(removed) >= len(plan.blocks_removed):
            break
        if params["finetune_epochs"] > 0:
            config = FinetuneConfig(epochs=params["finetune_epochs"], lr=params["finetune_lr"])
            model = finetune(model, context.data, config, context.settings, context.progress).model.eval()
        blocks = residual_blocks(model)
        scores = Scores(blocks=dict(criterion(model, candidates(blocks, params["skip_first"]))))
        order, _ = rank_blocks(blocks, scores, plan.options)
        if not order:
            raise InputError(f"cka-layer: the target needs more blocks than can go after removing {removed}")
        choice = order[0]
    effective = plan
    if tuple(removed) != plan.blocks_removed:
        note = f"planned blocks {list(plan.blocks_removed)}; re-scoring between removals chose {removed}"
        effective = replace(
            plan,
            blocks_removed=tuple(removed),
            predicted_params=sum(p.numel() for p in model.parameters()),
            predicted_macs=model_macs(model, shape, context.device),
            notes=(*plan.notes, note),
        )
    return Applied(model, [block_edit(removed)], effective)


def apply(context: ScoringContext, plan: PruningPlan, params: dict[str, Any], scored: Scored) -> Applied:
    """The paper's loop: remove one block, fine-tune, re-score with CKA (the plan holds scoring's first ranking)."""
    return remove_iteratively(context, plan, params, cka_criterion(context, params))


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="cka-layer",
            title="Layer pruning by CKA (Pons et al. 2024)",
            description="Removes whole residual blocks: the block whose bypass leaves the final representation "
            "most similar (linear CKA) to the intact network's goes first; the network is fine-tuned and the "
            "remaining blocks re-scored before each next removal.",
            granularity="block",
            needs=("calibration-data", "labels", "training"),
            params=PARAMS,
            score=score,
            apply=apply,
        )
    ]
