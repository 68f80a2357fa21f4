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
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateur.core.errors import InputError
from secateur.core.evaluate import model_macs
from secateur.core.groups import GroupInfo
from secateur.core.hookspecs import hookimpl
from secateur.core.methods import MethodInfo, ParamSpec
from secateur.core.plan import GroupPlan, PruningPlan
from secateur.core.scoring import Member, Scores, ScoringContext
from secateur.core.surgery import apply_plan, recalibrate_batchnorm
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


_TRAINED: weakref.WeakKeyDictionary[nn.Module, Trained] = weakref.WeakKeyDictionary()


def trained_state(model: nn.Module) -> Trained | None:
    """What the last finished scoring of ``model`` (a context's model) trained, or None."""
    return _TRAINED.get(model)


# --- which groups get a score ---------------------------------------------------


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
    names = {module: name for name, module in context.model.named_modules()}
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


def score(context: ScoringContext, params: dict[str, Any]) -> Iterator[Scores]:
    """Train network and scores together on the train split; yield every group's scores after each epoch."""
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
    autocast = context.device.type == "cuda"
    done = 0
    for _ in range(params["epochs"]):
        model.train()
        for index, (images, labels) in enumerate(loader):
            if index == steps:
                break
            images, labels = images.to(context.device), labels.to(context.device)
            with torch.autocast(context.device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(images), labels)
            loss = loss.float() + params["lambda"] * gates.penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            done += 1
            context.progress("PAAM training", done, total)
        yield Scores(groups=gates.scores())
    _settle_batchnorm(model, context, min(steps, SETTLE_BATCHES))
    final = gates.scores()
    gates.remove()
    _TRAINED[context.model] = Trained(model.eval(), targets, final)


# --- applying -------------------------------------------------------------------


def threshold_kept(scores: torch.Tensor, threshold: float) -> list[int]:
    """PAAM's rule: keep the filters scored at least ``τ``; a layer never loses its last filter."""
    kept = [index for index, value in enumerate(scores.tolist()) if value >= threshold]
    return kept or [int(torch.argmax(scores))]


def _threshold_plan(plan: PruningPlan, trained: Trained, threshold: float) -> None:
    """Replace the plan's channel choice, in the groups it prunes by PAAM's scores, by the threshold rule."""
    before = sum(len(g.kept) for gid, g in plan.groups.items() if gid in trained.scores)
    for group_id, values in trained.scores.items():
        if group_id in plan.groups:
            plan.groups[group_id] = GroupPlan(threshold_kept(values, threshold), plan.groups[group_id].total)
    after = sum(len(g.kept) for gid, g in plan.groups.items() if gid in trained.scores)
    plan.notes.append(
        f"paam: scores below τ = {threshold:g} removed (at least 1 filter per layer): {after} gated channels kept "
        f"where the target's plan kept {before}; set threshold=0 to follow the target instead"
    )


def apply(context: ScoringContext, plan: PruningPlan, params: dict[str, Any]) -> tuple[nn.Module, list[dict]]:
    """Fold the learned scores into BatchNorm of the trained network and remove the dropped channels."""
    trained = trained_state(context.model)
    if trained is None:
        raise InputError("paam: run its scoring first; apply prunes the network that scoring trained")
    model = copy.deepcopy(trained.model)
    fold_scores(model, trained.targets, trained.scores)
    if params["threshold"] > 0:
        _threshold_plan(plan, trained, params["threshold"])
    for group in context.groups:
        if group.id not in trained.scores:
            reason = gate_target(context, group, params["residual"])
            plan.notes.append(f"paam: no score for group {group.id}, kept whole: {reason}")
    pruned, edits = apply_plan(model, plan, context.example)
    if params["threshold"] > 0:  # the plan's prediction was for the target's channels: report what was cut
        plan.predicted_params = sum(p.numel() for p in pruned.parameters())
        plan.predicted_macs = model_macs(pruned, tuple(context.example.shape[1:]), context.device)
    if params["recalibrate_bn"] and any(group.removed for group in plan.groups.values()):
        # Removed filters scored below τ are small, not zero: together they shift the next BatchNorm's inputs.
        recalibrate_batchnorm(pruned, context.loader("calibration"), context.device)
        plan.notes.append("paam: BatchNorm statistics re-estimated on the calibration split after removal")
    return pruned, edits


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
