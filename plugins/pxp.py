"""``pxp``: pruning by explaining (Hatefi et al. 2024, after Yeom et al. 2021), LRP through captum.

A few labelled training images per class are explained with Layer-wise
Relevance Propagation; the importance of channel ``c`` of layer ``ℓ`` is
``I = Σ_x |Σ_{h,w} R_{ℓ,c}(x)|``, with an initial relevance of 1 on the true
class and no per-layer normalisation (conservation makes layers comparable),
so the paper ranks globally. Coupled groups (residual streams) sum ``I`` over
their producing layers. The LRP composite (one rule per low/mid/high conv
third and for the linear layers) is a parameter, and the paper's search picks
it: each candidate composite prunes the model at ``q = 0, step, …, 0.95``
without fine-tuning, and the one with the largest area under the
accuracy-against-rate curve on the calibration split (disjoint from test)
wins. The model is canonised first (BatchNorm folded, residual additions as
``Addition_Module``, one ReLU per call) so that relevance is conserved.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import fx
from torch.utils.data import DataLoader, Dataset, Subset

from secateur.core.api import (
    API_VERSION,
    RULES,
    Composite,
    DataBundle,
    GroupInfo,
    InputError,
    MethodInfo,
    ParamSpec,
    PlanOptions,
    PruningPlan,
    Scores,
    ScoringContext,
    Target,
    Workspace,
    accuracy_and_loss,
    canonize,
    channel_relevance,
    conv_search_space,
    decide_channels,
    hookimpl,
)
from secateur.plugins.lrp_vit import is_vit, vit_relevance

SEARCH_RULES = ("epsilon", "zplus", "gamma")  # the paper's candidates for each conv third
MAX_RATE = 0.95
LRP_CHUNK = 16  # images per LRP pass: one pass of this many stays well under a second on a CPU


def transformer_scores(context: ScoringContext, params: dict[str, Any]) -> Iterator[Scores]:
    """Heads and MLP neurons of a vision transformer, by AttnLRP relevance (ε rule; no composite search)."""
    if params["search"] > 0:
        raise InputError("pxp: the rule search chooses conv-layer composites; on a transformer use search=0")
    batches = reference_batches(context, params["samples_per_class"])
    relevance = vit_relevance(context.model, batches, context.device, context.progress, params["epsilon"])
    for group in context.groups:
        if group.id in relevance:
            yield Scores(groups={group.id: relevance[group.id]})


def composite_from(params: dict[str, Any]) -> Composite:
    return Composite(
        params["rule_low"],
        params["rule_mid"],
        params["rule_high"],
        params["rule_fc"],
        params["epsilon"],
        params["gamma"],
        params["alpha"],
    )


# --- the reference set --------------------------------------------------------------------------------


def _labels(dataset: Dataset) -> torch.Tensor:
    """Every label of a split, read without loading images where the dataset keeps them apart."""
    if isinstance(dataset, Subset):
        return _labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    for attribute in ("labels", "targets"):
        if hasattr(dataset, attribute):
            return torch.as_tensor(getattr(dataset, attribute), dtype=torch.long)
    return torch.cat([labels for _, labels in DataLoader(dataset, batch_size=256)])


def reference_indices(dataset: Dataset, per_class: int, generator: torch.Generator) -> list[int]:
    """``per_class`` seeded-random training images of every class (fewer where a class has fewer)."""
    labels = _labels(dataset)
    order = torch.randperm(len(labels), generator=generator)
    chosen: list[int] = []
    for label in torch.unique(labels).tolist():
        chosen += order[labels[order] == label][:per_class].tolist()
    return sorted(chosen)


def reference_batches(context: ScoringContext, per_class: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The reference set on the context's device, in batches of the context's batch size."""
    if context.data is None:
        raise InputError("pxp needs labelled data for its reference images: give --data SPEC")
    train = context.data.split("train")
    indices = reference_indices(train, per_class, context.generator())
    loader = DataLoader(Subset(train, indices), batch_size=context.batch_size)
    return [(images.to(context.device), labels.to(context.device)) for images, labels in loader]


# --- relevance per group ------------------------------------------------------------------------------


def layer_importance(
    canonical: fx.GraphModule,
    composite: Composite,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    context: ScoringContext,
    stage: str = "pxp: LRP on the reference images",
) -> dict[str, torch.Tensor]:
    """Per conv/linear layer, ``I_c = Σ_x |r_c(x)|`` over the reference batches.

    Each batch goes through LRP in chunks of ``LRP_CHUNK`` images (relevance is
    per image, so the sum is the same) with a cancellation check between them:
    one LRP pass over a whole batch outlasts the one second Cancel may take.
    """
    totals: dict[str, torch.Tensor] = {}
    chunks = [
        (images[start : start + LRP_CHUNK], labels[start : start + LRP_CHUNK])
        for images, labels in batches
        for start in range(0, len(labels), LRP_CHUNK)
    ]
    for step, (images, labels) in enumerate(chunks):
        for name, values in channel_relevance(canonical, composite, images, labels).items():
            summed = values.abs().sum(0).double().cpu()
            totals[name] = totals[name] + summed if name in totals else summed
        context.progress(stage, step + 1, len(chunks))
    return totals


def group_scores(context: ScoringContext, layers: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    scores = {}
    for group in context.groups:
        if group.kind == "channels" and (values := context.producer_sum(group, layers)) is not None:
            scores[group.id] = values.float()
    return scores


# --- pruning curves and the rule search ---------------------------------------------------------------


def global_plan(groups: list[GroupInfo], scores: dict[str, torch.Tensor], rate: float, method: str) -> PruningPlan:
    """Remove the ``⌊rate·N⌋`` globally least relevant channels (raw values, as the paper ranks); 0 < rate < 1.

    Secateur removes channels physically, so each group keeps at least the host's default floor
    (10 %, at least one channel); past that point the next least relevant channel elsewhere goes.
    """
    options = PlanOptions(global_ranking=True, raw_scores=True)
    plans, notes = decide_channels(groups, Scores(groups=scores), rate, options)
    return PruningPlan(method, Target("ratio", rate), plans, notes=notes, options=options)


def rates(step: float) -> list[float]:
    """``0, step, 2·step, …`` up to 0.95, as in the paper."""
    return [round(step * index, 6) for index in range(math.floor(MAX_RATE / step + 1e-9) + 1)]


def pruning_curve(
    workspace: Workspace,
    scores: dict[str, torch.Tensor],
    grid: list[float],
    split: str,
    report: Callable[[int, int], None] | None = None,
    unpruned: float | None = None,
) -> list[float]:
    """Accuracy (percent, no fine-tuning) after pruning at each rate of ``grid`` with raw global ranking.

    ``unpruned``, when known, is the accuracy at rate 0 (the same for every score).
    """
    assert workspace.data is not None
    groups = [group for group in workspace.groups if group.prunable]
    curve = []
    for index, rate in enumerate(grid):
        if rate == 0 and unpruned is not None:
            curve.append(unpruned)
            continue
        model = workspace.model if rate == 0 else workspace.apply(global_plan(groups, scores, rate, "pxp")).model
        curve.append(accuracy_and_loss(model, workspace.data, split, workspace.device, workspace.batch_size)[0])
        if report is not None:
            report(index + 1, len(grid))
    return curve


def area(grid: list[float], curve: list[float]) -> float:
    """Area under accuracy (as a fraction) against pruning rate: ``trapz(acc, q)``."""
    accuracy, rate = np.asarray(curve, dtype=np.float64) / 100.0, np.asarray(grid, dtype=np.float64)
    return float(((rate[1:] - rate[:-1]) * (accuracy[1:] + accuracy[:-1]) / 2).sum())


@dataclass
class SearchResult:
    """The candidates evaluated, their curves and areas, and the winner."""

    grid: list[float]
    curves: dict[Composite, list[float]] = field(default_factory=dict)
    areas: dict[Composite, float] = field(default_factory=dict)
    importance: dict[Composite, dict[str, torch.Tensor]] = field(default_factory=dict)

    @property
    def best(self) -> Composite:
        return max(self.areas, key=lambda composite: self.areas[composite])


def candidates(base: Composite, count: int, generator: torch.Generator) -> list[Composite]:
    """``base`` first, then ``count − 1`` other composites of {ε, z⁺, γ}³ over the conv thirds, seeded order."""
    others = [composite for composite in conv_search_space(base, SEARCH_RULES) if composite != base]
    order = torch.randperm(len(others), generator=generator).tolist()
    return [base] + [others[index] for index in order[: count - 1]]


def _search_data(data: DataBundle, images: int) -> DataBundle:
    calibration = data.split("calibration")
    if images >= len(calibration):
        return data
    return dataclasses.replace(data, calibration=Subset(calibration, list(range(images))))


def search_rules(
    context: ScoringContext,
    canonical: fx.GraphModule,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    base: Composite,
    params: dict[str, Any],
) -> SearchResult:
    """Evaluate up to ``params['search']`` composites by AUC on the calibration split; keep every result."""
    assert context.data is not None
    shape = tuple(context.example.shape[1:])
    data = _search_data(context.data, params["search_images"])
    workspace = Workspace(context.model, shape, data, context.settings)
    result = SearchResult(rates(params["search_step"]))
    chosen = candidates(base, params["search"], context.generator())
    unpruned = None
    for number, composite in enumerate(chosen, start=1):
        stage = f"pxp: rule search {number}/{len(chosen)} ({composite.label()})"
        importance = layer_importance(canonical, composite, batches, context, stage)
        scores = group_scores(context, importance)

        def report(done: int, total: int, stage: str = stage) -> None:
            context.progress(stage, done, total)

        curve = pruning_curve(workspace, scores, result.grid, "calibration", report, unpruned)
        result.curves[composite], result.areas[composite] = curve, area(result.grid, curve)
        unpruned = curve[0]
        result.importance[composite] = importance
        context.progress(f"{stage}: AUC {result.areas[composite]:.4f}", len(result.grid), len(result.grid))
    return result


# --- the method ---------------------------------------------------------------------------------------


def score(context: ScoringContext, params: dict[str, Any]) -> Iterator[Scores]:
    """LRP relevance per channel group on the reference set, with the given or the searched composite."""
    if is_vit(context.model):
        yield from transformer_scores(context, params)
        return
    composite = composite_from(params)
    canonical = canonize(context.model)
    batches = reference_batches(context, params["samples_per_class"])
    if params["search"] > 0:
        result = search_rules(context, canonical, batches, composite, params)
        composite = result.best
        importance = result.importance[composite]
        context.progress(f"pxp: best composite {composite.label()} (AUC {result.areas[composite]:.4f})", 1, 1)
    else:
        importance = layer_importance(canonical, composite, batches, context)
    for group_id, values in group_scores(context, importance).items():
        yield Scores(groups={group_id: values})


def _rule_param(group: str, what: str) -> ParamSpec:
    return ParamSpec(f"rule_{group}", "choice", "epsilon", f"LRP rule for {what}", choices=RULES)


PARAMS = (
    ParamSpec("samples_per_class", "int", 10, "reference training images per class to explain", min=1, max=10000),
    _rule_param("low", "the first third of the convolutions"),
    _rule_param("mid", "the middle third of the convolutions"),
    _rule_param("high", "the last third of the convolutions"),
    _rule_param("fc", "the fully connected layers"),
    ParamSpec("epsilon", "float", 1e-6, "ε of the ε and αβ rules (stabiliser)", min=1e-12, max=1.0),
    ParamSpec("gamma", "float", 0.25, "γ of the γ rule (weights w + γw⁺)", min=0.0, max=100.0),
    ParamSpec("alpha", "float", 2.0, "α of the αβ rule (β = α − 1)", min=1.0, max=100.0),
    ParamSpec(
        "search",
        "int",
        0,
        "composites to evaluate in the rule search (0: use the rules given; at most 27 = {ε, z⁺, γ}³)",
        min=0,
        max=27,
    ),
    ParamSpec("search_step", "float", 0.05, "pruning-rate step of the search's accuracy curve", min=0.01, max=0.5),
    ParamSpec("search_images", "int", 1000, "calibration images the search evaluates accuracy on", min=10, max=1000000),
)


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="pxp",
            title="Pruning by explaining (LRP)",
            description="Ranks channels by their Layer-wise Relevance Propagation relevance for the true class "
            "on a few training images per class, summed in absolute value with no per-layer normalisation "
            "(rank globally, as the paper). The LRP rule of each conv third and of the linear layers is a "
            "parameter, and the paper's search can choose them by the area under the accuracy-against-rate "
            "curve without fine-tuning on the calibration split.",
            granularity="channel",
            comparable_scores=True,
            needs=("calibration-data", "labels", "gradients"),
            params=PARAMS,
            score=score,
        )
    ]
