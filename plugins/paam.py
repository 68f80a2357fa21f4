"""``paam``: pruning by active attention manipulation (Babaiee et al. 2022, arXiv 2210.11114).

Scoring trains: a copy of the model is trained on the train split with a
score network attached to every conv followed by BatchNorm (see
``paam_scores``); each filter's feature map is multiplied by its score and
the loss is ``CE + λ·mean(s)`` over all gated filters, so training drives
unneeded filters toward zero and the layer widths follow from one global
rule. Scores stream to the window once per epoch, so a user watches filters
fade. At the end, BatchNorm running statistics are re-estimated with the
gates in place (our addition: in short runs they lag the shrinking scores).
The algorithm's details are a reconstruction (METHODS.md 4(b) [R]; no
official code exists).

Apply takes over: the pruned model is the *trained* network with the scores
folded exactly into BatchNorm (``γ, β ← s·γ, s·β``), not the original weights;
by default PAAM's own rule decides (drop ``s < τ``, at least one filter per
layer), and ``threshold = 0`` follows the host's plan instead (its ratio, per
layer or globally ranked). Removal is the ordinary ``prune_channels`` edit, so
checkpoints replay it and carry the trained tensors; the score networks never
enter the model. Filters under τ are small, not zero, so by default
(``recalibrate_bn``) BatchNorm statistics are re-estimated on the calibration
split after removal (on the demo: 53% → 99.8% test accuracy, bench/paam.md).

By default only internal channels are gated (METHODS.md 4(b)9): a group
whose channels several layers produce (tied by a residual addition) gets no
score and is kept whole; ``residual = shared`` gives such a group one score
vector, read from all its producers' filters and multiplying every one of
their BatchNorms (the residual stream is then scaled channel by channel, and
folding stays exact). Groups without an affine BatchNorm directly after each
producer are kept whole: a score could not be folded into them exactly.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Generator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from secateur.core.api import (
    API_VERSION,
    Applied,
    GroupInfo,
    GroupPlan,
    InputError,
    Member,
    MethodInfo,
    ParamSpec,
    PruningPlan,
    Scored,
    Scores,
    ScoringContext,
    apply_plan,
    choose_kept,
    hookimpl,
    model_macs,
    recalibrate_batchnorm,
    train_step,
)
from secateur.plugins.paam_scores import Gates, GateTarget, fold_scores

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
WEIGHT_DECAY = 5e-4  # on the network's weights, as core/finetune.py; the score networks get none
MOMENTUM = 0.9
SETTLE_BATCHES = 50  # train batches that re-estimate BatchNorm statistics after training


@dataclass
class Trained:
    """What scoring leaves for apply: the trained network (no hooks), what was gated, and the final scores."""

    model: nn.Module
    targets: list[GateTarget]
    scores: dict[str, torch.Tensor]


def _feeds(context: ScoringContext, norm: nn.Module, producer: nn.Module) -> bool:
    """Whether BatchNorm ``norm`` reads ``producer``'s output directly."""
    node = context.graph.module2node.get(norm)
    return node is not None and len(node.inputs) == 1 and node.inputs[0].module is producer


def _pair(
    context: ScoringContext, members: list[Member], producer: Member, channels: int
) -> tuple[nn.Module, nn.Module] | str:
    """(producer, its BatchNorm) when the producer writes exactly the group's channels into an affine BatchNorm."""
    conv = producer.module
    if isinstance(conv, nn.modules.conv._ConvNd) and conv.groups > 1:
        return "a grouped or depthwise convolution produces it"
    identity = list(range(channels))
    width = conv.out_channels if isinstance(conv, nn.modules.conv._ConvNd) else conv.out_features
    if width != channels or producer.indices != identity or producer.group_indices != identity:
        return "a producer's outputs are not exactly its channels"
    norms = [
        m.module
        for m in members
        if isinstance(m.module, nn.modules.batchnorm._BatchNorm) and m.module.affine and _feeds(context, m.module, conv)
    ]
    if len(norms) != 1:
        return "no affine BatchNorm directly follows a producer (a score could not be folded into it)"
    return conv, norms[0]


def gate_target(context: ScoringContext, group: GroupInfo, residual: str = "internal") -> GateTarget | str:
    """The producers and BatchNorms a group's score gates, or why the group gets no score.

    ``residual = internal`` (METHODS.md 4(b)9, the default) scores only groups
    with one producer; ``shared`` also gives a residual-coupled group one
    score vector, read from all its producers' filters and applied to each.
    """
    if group.kind != "channels":
        return "attention heads are not scored by PAAM"
    members = list(context.members(group))
    producers = [m for m in members if m.is_output and isinstance(m.module, _WEIGHTED)]
    if not producers or (len(producers) > 1 and residual == "internal"):
        return f"{len(producers)} layers produce its channels (tied by a residual addition; residual=shared scores it)"
    pairs = [_pair(context, members, producer, group.channels) for producer in producers]
    reasons = [pair for pair in pairs if isinstance(pair, str)]
    if reasons:
        return reasons[0]
    names = context.module_names
    return GateTarget(group.id, tuple((names[conv], names[norm]) for conv, norm in pairs))


def gate_targets(context: ScoringContext, residual: str = "internal") -> list[GateTarget]:
    """Every group PAAM scores, in model order; refuses a model that has none."""
    order = {name: index for index, (name, _) in enumerate(context.model.named_modules())}
    found = [gate_target(context, group, residual) for group in context.groups]
    targets = sorted((t for t in found if isinstance(t, GateTarget)), key=lambda t: order[t.pairs[0][0]])
    if not targets:
        raise InputError(
            "paam needs convolutions followed by BatchNorm (conv–BN–activation CNNs) whose channels "
            "it can score; this model has none"
        )
    return targets


# --- training -------------------------------------------------------------------


def _reinitialise(model: nn.Module) -> None:
    """From scratch: every layer's own initialisation (seeded by the caller), BatchNorm statistics reset."""
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def _optimizer(model: nn.Module, gates: Gates, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        [
            {"params": list(model.parameters()), "weight_decay": WEIGHT_DECAY},
            {"params": gates.parameters(), "weight_decay": 0.0},
        ],
        lr=lr,
        momentum=MOMENTUM,
        nesterov=True,
    )


def _settle_batchnorm(model: nn.Module, context: ScoringContext, batches: int) -> None:
    """Re-estimate the running BatchNorm statistics of the trained network, gates in place, on the train split.

    The scores can shrink a layer faster than the running averages (momentum
    0.1) follow, and the next BatchNorm normalises by those averages at
    evaluation; in short runs the lag alone can ruin accuracy. A cumulative
    average over a few batches at the end makes them match the trained scores.
    """
    loader = itertools.islice(context.loader("train"), batches)

    def reported() -> Iterator:
        for index, batch in enumerate(loader):
            context.progress("PAAM BatchNorm statistics", index + 1, batches)
            yield batch

    recalibrate_batchnorm(model, reported(), context.device, batches)


def score(context: ScoringContext, params: dict[str, Any]) -> Generator[Scores, None, Trained]:
    """Train network and scores together on the train split; yield every group's scores after each epoch.

    Returns the trained network and its final scores: the state apply prunes.
    """
    targets = gate_targets(context, params["residual"])
    loader = context.loader("train", shuffle=True)
    steps = len(loader) if params["max_steps"] == 0 else min(len(loader), params["max_steps"])
    if steps == 0:
        raise InputError("paam needs training data: the train split is empty")
    torch.manual_seed(context.seed)
    model = context.copy_model().to(context.device)
    if params["from_scratch"]:
        _reinitialise(model)
    gates = Gates(model, targets, params["attention_dim"], context.generator())
    optimizer = _optimizer(model, gates, params["lr"])
    total = params["epochs"] * steps
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    done = 0

    def penalty() -> torch.Tensor:  # λ · mean score: drives unneeded filters toward zero
        return params["lambda"] * gates.penalty()

    for _ in range(params["epochs"]):
        model.train()
        for index, (images, labels) in enumerate(loader):
            if index == steps:
                break
            loss = train_step(
                model, images, labels, optimizer, schedule, context.device, penalty, context.progress.check
            )
            done += 1
            context.report_loss(done, steps, loss)
            context.progress("PAAM training", done, total)
        yield Scores(groups=gates.scores())
    _settle_batchnorm(model, context, min(steps, SETTLE_BATCHES))
    final = gates.scores()
    gates.remove()
    return Trained(model.eval(), targets, final)


# --- applying -------------------------------------------------------------------


def threshold_kept(scores: torch.Tensor, threshold: float) -> list[int]:
    """PAAM's rule: keep the filters scored at least ``τ``; a layer never loses its last filter."""
    kept = [index for index, value in enumerate(scores.tolist()) if value >= threshold]
    return kept or [int(torch.argmax(scores))]


def _threshold_plan(
    plan: PruningPlan, trained: Trained, threshold: float, blocks: dict[str, Any] | None = None
) -> PruningPlan:
    """The plan with PAAM's threshold rule in place of the target's choice, in the groups PAAM scored.

    A group in conv-group blocks (``blocks``: group id → its ``GroupInfo.blocks``) keeps as many channels
    as the threshold would, balanced over its blocks.
    """
    groups = dict(plan.groups)
    blocks = blocks or {}
    for group_id, values in trained.scores.items():
        if group_id in groups:
            kept = threshold_kept(values, threshold)
            if blocks.get(group_id) is not None:
                kept = choose_kept(values, len(kept), blocks[group_id])
            groups[group_id] = GroupPlan(kept, groups[group_id].total)
    before = sum(len(g.kept) for gid, g in plan.groups.items() if gid in trained.scores)
    after = sum(len(g.kept) for gid, g in groups.items() if gid in trained.scores)
    note = (
        f"paam: scores below τ = {threshold:g} removed (at least 1 filter per layer): {after} gated channels kept "
        f"where the target's plan kept {before}; set threshold=0 to follow the target instead"
    )
    return replace(plan, groups=groups, notes=(*plan.notes, note))


def apply(context: ScoringContext, plan: PruningPlan, params: dict[str, Any], scored: Scored) -> Applied:
    """Fold the learned scores into BatchNorm of the trained network and remove the dropped channels.

    The trained network comes from scoring's state (``scored.state``), so apply works on any
    working copy of the same model, on any device.
    """
    trained = scored.state
    if not isinstance(trained, Trained):
        raise InputError("paam: run its scoring first; apply prunes the network that scoring trained")
    model = copy.deepcopy(trained.model).to(context.device)
    fold_scores(model, trained.targets, trained.scores)
    if params["threshold"] > 0:
        blocks = {group.id: group.blocks for group in context.groups}
        plan = _threshold_plan(plan, trained, params["threshold"], blocks)
    notes = []
    for group in context.groups:
        if group.id not in trained.scores:
            reason = gate_target(context, group, params["residual"])
            notes.append(f"paam: no score for group {group.id}, kept whole: {reason}")
    pruned, edits = apply_plan(model, plan, context.example)
    if params["threshold"] > 0:  # the plan's prediction was for the target's channels: report what was cut
        params_after = sum(p.numel() for p in pruned.parameters())
        macs_after = model_macs(pruned, tuple(context.example.shape[1:]), context.device)
        plan = replace(plan, predicted_params=params_after, predicted_macs=macs_after)
    if params["recalibrate_bn"] and any(group.removed for group in plan.groups.values()):
        # Removed filters scored below τ are small, not zero: together they shift the next BatchNorm's inputs.
        recalibrate_batchnorm(pruned, context.loader("calibration"), context.device)
        notes.append("paam: BatchNorm statistics re-estimated on the calibration split after removal")
    return Applied(pruned, edits, plan, notes)


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="paam",
            title="PAAM (learned attention scores)",
            description="Trains the network with an attention module per conv–BN layer that reads the layer's "
            "filters and outputs a score per filter; each feature map is multiplied by its score and the loss adds "
            "λ times the mean score, so training drives unneeded filters to zero and the layer widths follow from "
            "one global threshold (Babaiee et al. 2022). Prunes the trained network, then re-estimates BatchNorm "
            "statistics; residual-tied channels are kept whole unless residual=shared.",
            granularity="channel",
            comparable_scores=True,
            needs=("calibration-data", "labels", "gradients", "training"),
            params=(
                ParamSpec(
                    "lambda",
                    "float",
                    1.0,
                    "weight of the mean-score penalty (main knob; its effect grows with the training steps)",
                    min=0.0,
                    max=100.0,
                ),
                ParamSpec("epochs", "int", 5, "training epochs with the score networks", min=1, max=10000),
                ParamSpec(
                    "threshold",
                    "float",
                    0.05,
                    "drop filters scored below τ (at least 1 per layer); 0 follows the target's plan instead",
                    min=0.0,
                    max=1.0,
                ),
                ParamSpec(
                    "residual",
                    "choice",
                    "internal",
                    "internal: score only channels no residual addition ties (the default); shared: one score "
                    "vector per residual-coupled group too",
                    choices=("internal", "shared"),
                ),
                ParamSpec(
                    "recalibrate_bn",
                    "bool",
                    True,
                    "re-estimate BatchNorm statistics on the calibration split after removal",
                ),
                ParamSpec("attention_dim", "int", 32, "attention width h of the score networks", min=1, max=1024),
                ParamSpec("lr", "float", 0.01, "SGD learning rate (cosine schedule to zero)", min=1e-6, max=10.0),
                ParamSpec("from_scratch", "bool", False, "re-initialise the weights and train from scratch"),
                ParamSpec("max_steps", "int", 0, "training steps per epoch at most (0: the whole train split)", min=0),
            ),
            score=score,
            apply=apply,
        )
    ]
