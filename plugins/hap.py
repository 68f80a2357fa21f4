"""``hap``: Hessian-aware pruning with neural implants (Yu, Yao, Gholami et al., WACV 2022).

The sensitivity of output channel ``c`` of a layer with weight ``W`` is

    S_c = Tr(H_cc) / numel(W[c]) · ‖W[c]‖²,

the second-order loss increase ``½ΔwᵀHΔw`` of removing the channel
(``Δw = −W[c]``) when ``H_cc`` is approximated by ``(Tr(H_cc)/|c|)·I``. The
traces come from Hutchinson's estimator: for Rademacher probes ``v``,
``E[⟨v[c], (Hv)[c]⟩] = Tr(H_cc)``, and one Hessian-vector product serves every
channel of every layer at once. ``H`` is the Hessian of the mean cross-entropy
over labelled calibration images with respect to the Conv and Linear weights
(no BatchNorm parameters, no biases), in eval mode, on a copy of the model.
The batch is processed in chunks that share each probe's ``v`` (the HVP of a
sum is the sum of the HVPs), so memory stays that of one chunk's double
backward. A dependency group's score is ``S`` summed over the layers that
produce its channels.

Apply (taken over): the plan decides which channels go, as for every method.
With ``implant_ratio`` ``q > 0``, the most sensitive of the channels the plan
removes (the top ``q`` fraction of all removed channels by ``S``: the paper's
window ``θ_ni < S ≤ θ``) keep their output slot and BatchNorm, and their k×k
kernels become outputs of a zero-initialised 1×1 convolution (see
``hap_implants``); 1×1 layers, Linear layers and grouped convolutions are not
implanted, so their channels in that window are removed as planned.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateur.core.api import (
    API_VERSION,
    Applied,
    GroupPlan,
    InputError,
    MethodInfo,
    ParamSpec,
    PruningPlan,
    Scored,
    Scores,
    ScoringContext,
    WorkError,
    apply_plan,
    checked_graph,
    checked_passes,
    hookimpl,
)
from secateur.plugins.hap_implants import (
    EDIT_KIND,
    IMPLANT_EDIT,
    implant_layers,
    implant_parameters,
    implantable,
    reorder_group,
    reorder_problem,
)

LOG = logging.getLogger(__name__)
WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


# --- Hutchinson's estimator ------------------------------------------------------


def out_dim(module: nn.Module) -> int:
    """The dimension of a layer's weight that runs along its output channels."""
    return 1 if isinstance(module, nn.modules.conv._ConvNd) and module.transposed else 0


def _per_channel(values: torch.Tensor, dim: int) -> torch.Tensor:
    return values.movedim(dim, 0).reshape(values.shape[dim], -1).sum(1)


def _rademacher(parameters: list[torch.Tensor], seed: int) -> list[torch.Tensor]:
    """One probe: ±1 entries for every parameter, drawn on the CPU from its own seed (so chunks share it)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randint(0, 2, p.shape, generator=generator, dtype=torch.int8) * 2 - 1).to(p.device, p.dtype)
        for p in parameters
    ]


def hutchinson_channel_traces(
    parameters: list[torch.Tensor],
    dims: list[int],
    chunk_losses: Iterable[torch.Tensor],
    probes: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
    chunks: int | None = None,
    check: Callable[[], None] | None = None,
) -> list[torch.Tensor]:
    """Per-probe Hutchinson estimates of ``Tr(H_cc)`` for every output channel ``c`` of every parameter.

    ``chunk_losses`` yields the loss in parts (their sum is the loss whose
    Hessian is wanted). Every part is differentiated once with
    ``create_graph=True``; each probe's ``v`` (the same for every part) then
    gives ``Hv`` by a second backward pass, and ``⟨v[c], (Hv)[c]⟩`` is added up
    over the parts. Returns, per parameter, a float64 ``(probes, channels)``
    tensor: each row is one probe's estimate, their mean the trace estimate.
    ``check`` (which raises to stop) runs before every node of each second
    backward pass, so a stop lands within one layer's work, not after a probe.
    """
    generator = torch.Generator().manual_seed(seed)
    seeds = torch.randint(0, 2**62, (probes,), generator=generator).tolist()
    traces = [torch.zeros(probes, p.shape[d], dtype=torch.float64) for p, d in zip(parameters, dims, strict=True)]
    total = probes * chunks if chunks else None
    done = 0
    for loss in chunk_losses:
        gradients = torch.autograd.grad(loss, parameters, create_graph=True, allow_unused=True, materialize_grads=True)
        if progress is not None:
            progress(done, total or done)  # a cancellation check between the gradient and the first probe
        live = [k for k, g in enumerate(gradients) if g.requires_grad]  # a gradient constant in P has H = 0
        graph_checks = checked_graph([gradients[k] for k in live], check) if check else nullcontext()
        with graph_checks:
            for probe in range(probes):
                vs = _rademacher(parameters, seeds[probe])
                if live:
                    products = torch.autograd.grad(
                        [gradients[k] for k in live],
                        parameters,
                        grad_outputs=[vs[k] for k in live],
                        retain_graph=probe < probes - 1,
                        allow_unused=True,
                        materialize_grads=True,
                    )
                    with torch.no_grad():
                        for k, (v, hv) in enumerate(zip(vs, products, strict=True)):
                            traces[k][probe] += _per_channel(v * hv, dims[k]).double().cpu()
                done += 1
                if progress is not None:
                    progress(done, total or done)
        del gradients
    return traces


def sensitivities(weight: torch.Tensor, dim: int, traces: torch.Tensor) -> torch.Tensor:
    """``S_c = (mean trace estimate)/numel(W[c]) · ‖W[c]‖²`` per output channel (float64)."""
    w = weight.detach().double().cpu()
    per_channel = w.numel() // w.shape[dim]
    return traces.mean(0) / per_channel * _per_channel(w * w, dim)


def _math_attention():
    """Double backward needs the plain-math attention kernel (fused kernels have no second derivative)."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # pragma: no cover - older torch
        return nullcontext()


def layer_sensitivities(context: ScoringContext, params: dict[str, Any]) -> tuple[dict[str, torch.Tensor], int]:
    """``S`` per output channel of every Conv/Linear layer (by module name), and the images it used."""
    model = context.copy_model().eval()
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, WEIGHTED) and m.weight is not None]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    weights = [m.weight.requires_grad_(True) for _, m in layers]
    dims = [out_dim(m) for _, m in layers]
    batches = list(islice(context.loader("calibration"), params["batches"]))
    count = sum(len(labels) for _, labels in batches)
    size = params["chunk_size"]
    chunks = [(x[i : i + size], y[i : i + size]) for x, y in batches for i in range(0, len(y), size)]

    def losses() -> Iterator[torch.Tensor]:
        for images, labels in chunks:
            context.progress.check()  # before each chunk's forward pass, the longest step without a check
            with _math_attention():
                logits = model(images.to(context.device))
            yield F.cross_entropy(logits, labels.to(context.device), reduction="sum") / count

    probes = params["probes"]
    try:
        with checked_passes(model, context.progress.check):  # Cancel lands inside a double backward pass too
            traces = hutchinson_channel_traces(
                weights,
                dims,
                losses(),
                probes,
                context.seed,
                lambda done, total: context.progress(f"Hessian-vector products ({probes} probes)", done, total),
                len(chunks),
                context.progress.check,
            )
    except torch.cuda.OutOfMemoryError:
        raise WorkError(
            f"hap: out of memory in the double backward pass of {size} images; "
            "lower --param chunk_size (memory grows with it; the estimate does not change)"
        ) from None
    scores = {name: sensitivities(m.weight, d, t) for (name, m), d, t in zip(layers, dims, traces, strict=True)}
    return scores, count


def group_sensitivities(context: ScoringContext, layers: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor]]:
    """Per channel group: ``S`` summed over the layers that produce its channels."""
    for group in context.groups:
        if group.kind != "channels":
            continue  # attention heads: not scored by HAP, kept whole
        values = context.producer_sum(group, layers)
        if values is not None:
            yield group.id, values


# --- scores, kept for apply ----------------------------------------------------------


@dataclass(frozen=True)
class HapState:
    """What scoring learned that apply needs: the sensitivities and how many were negative."""

    scores: Scores
    negatives: int


def _negatives_message(negatives: int, total: int, probes: int) -> str:
    return (
        f"hap: {negatives} of {total} channel sensitivities are negative (noisy Hutchinson estimates with "
        f"{probes} probes; they rank as least important): raise the probes parameter"
    )


def score(context: ScoringContext, params: dict[str, Any]) -> Generator[Scores, None, HapState]:
    """Hessian traces for every layer at once (progress per probe and chunk), then one group at a time.

    Returns the sensitivities as the state apply chooses its implants from.
    """
    layers, _ = layer_sensitivities(context, params)
    result = Scores()
    negatives = total = 0
    for index, (group_id, values) in enumerate(group_sensitivities(context, layers)):
        negatives += int((values < 0).sum())
        total += values.numel()
        result.groups[group_id] = values.float()
        context.progress("sensitivities per group", index + 1, len(context.groups))
        yield Scores(groups={group_id: values.float()})
    if negatives:
        LOG.warning(_negatives_message(negatives, total, params["probes"]))
    return HapState(result, negatives)


# --- apply: the plan, plus implants ------------------------------------------------------


def implant_candidates(context: ScoringContext) -> dict[str, list[str]]:
    """Per channel group, the names of its producer layers that can take a 1×1 implant."""
    result: dict[str, list[str]] = {}
    for group in context.groups:
        if group.kind != "channels":
            continue
        layers = [m.name for m in context.members(group) if m.is_output and implantable(m.module)]
        if layers:
            result[group.id] = list(dict.fromkeys(layers))
    return result


def choose_implants(
    plan: PruningPlan, scores: Scores, candidates: dict[str, list[str]], q: float
) -> dict[str, list[int]]:
    """Group channels to implant: the top ``q`` of every removed channel by ``S``, where a layer can take one."""
    removed = [
        (float(scores.groups[gid][c]), gid, c)
        for gid, group_plan in plan.groups.items()
        if gid in scores.groups
        for c in group_plan.removed
    ]
    count = len(removed) - math.floor((1.0 - q) * len(removed))
    removed.sort(key=lambda entry: (-entry[0], entry[1], entry[2]))
    chosen: dict[str, list[int]] = {}
    for _, gid, channel in removed[:count]:
        if gid in candidates:
            chosen.setdefault(gid, []).append(channel)
    return {gid: sorted(channels) for gid, channels in chosen.items()}


def _identity_producers(context: ScoringContext, group, layers: list[str]) -> bool:
    """Whether each implanted layer's output channel ``i`` is the group's channel ``i`` (the usual case)."""
    wanted = {context.model.get_submodule(layer) for layer in layers}
    return all(
        member.indices == member.group_indices == list(range(group.channels))
        for member in context.members(group)
        if member.module in wanted and member.is_output
    )


def implant(
    context: ScoringContext, plan: PruningPlan, chosen: dict[str, list[int]], candidates: dict[str, list[str]]
) -> tuple[nn.Module, list[dict[str, Any]], dict[str, list[int]], list[str]]:
    """The pruned model with implants, its edits, the implanted layers (name → positions) and notes.

    Each implanted group is first reordered on a copy (function unchanged)
    so that its implanted channels come last; the plan, with those channels
    kept, is then applied; their k×k producers finally become
    ``ImplantedConv2d`` whose implants are the last outputs.
    """
    model = copy.deepcopy(context.model)
    names = context.module_names
    groups = {group.id: group for group in context.groups}
    kept_groups = dict(plan.groups)
    layers: dict[str, list[int]] = {}
    notes: list[str] = []
    for gid, channels in chosen.items():
        group = groups[gid]
        members = list(context.members(group))
        problem = "its channels are tied in conv-group blocks" if group.blocks is not None else None
        problem = problem or reorder_problem(members, group.channels)
        if problem is None and not _identity_producers(context, group, candidates[gid]):
            problem = "its producers do not map channels one to one"
        if problem:
            notes.append(f"hap: group {gid} gets no implants: {problem}")
            continue
        implanted = set(channels)
        order = [c for c in range(group.channels) if c not in implanted] + sorted(implanted)
        reorder_group(model, members, names, order)
        slot = {old: new for new, old in enumerate(order)}
        kept = sorted(slot[c] for c in {*plan.groups[gid].kept, *implanted})
        kept_groups[gid] = GroupPlan(kept, group.channels)
        tail = [position for position, s in enumerate(kept) if s >= group.channels - len(implanted)]
        for layer in candidates[gid]:
            layers[layer] = tail
    kept_plan = PruningPlan(plan.method, plan.target, kept_groups, list(plan.blocks_removed))
    pruned, edits = apply_plan(model, kept_plan, context.example)
    if layers:
        implant_layers(pruned, layers)
        edits.append({"kind": EDIT_KIND, "layers": layers})
    return pruned.eval(), edits, layers, notes


def apply(context: ScoringContext, plan: PruningPlan, params: dict[str, Any], scored: Scored) -> Applied:
    """Remove what the plan removes, except the moderately sensitive channels, which get 1×1 implants.

    The implants are chosen by the sensitivities scoring returned (``scored.state``): never recomputed.
    """
    q = params["implant_ratio"]
    state = scored.state if isinstance(scored.state, HapState) else None
    if state is None and q > 0:
        raise InputError("hap picks implants by its own sensitivities: score with hap first, or set implant_ratio=0")
    notes = []
    if state is not None and state.negatives:
        total = sum(len(v) for v in state.scores.groups.values())
        notes.append(_negatives_message(state.negatives, total, params["probes"]))
    chosen = choose_implants(plan, state.scores, implant_candidates(context), q) if state and q > 0 else {}
    if not chosen:
        if q > 0:
            notes.append(f"hap: implant_ratio {q}: no removed channel has a k×k producer to implant")
        pruned, edits = apply_plan(context.model, plan, context.example)
        return Applied(pruned, edits, plan, notes)
    candidates = implant_candidates(context)
    pruned, edits, layers, implant_notes = implant(context, plan, chosen, candidates)
    notes.extend(implant_notes)
    if layers:
        extra = implant_parameters(pruned)
        over = sum(p.numel() for p in pruned.parameters()) - plan.predicted_params
        channels = sum(len(c) for gid, c in chosen.items() if any(name in layers for name in candidates[gid]))
        notes.append(
            f"hap: {channels} channels implanted (1×1, zero-initialised) in {len(layers)} layers: {extra} implant "
            f"parameters, {over:+d} parameters over the plan (the implanted channels also keep their BatchNorm "
            "and their inputs to the next layer)"
        )
    return Applied(pruned, edits, plan, notes)


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="hap",
            title="Hessian-aware pruning (HAP) with neural implants",
            description="Ranks channels by Tr(H_cc)/|c|·‖W_c‖², the second-order loss increase of removing them, "
            "with per-channel Hessian traces from Hutchinson's estimator (Rademacher probes, Hessian-vector "
            "products of the cross-entropy on labelled calibration images, eval mode). Of the channels the plan "
            "removes, the most sensitive (implant_ratio of them) keep their slot with a zero-initialised 1×1 "
            "convolution in place of their k×k kernel; fine-tune afterwards (Yu et al. 2022). The paper ranks "
            "globally: use --global-ranking --max-layer-ratio 0.95.",
            granularity="channel",
            comparable_scores=True,
            needs=("calibration-data", "labels", "gradients"),
            params=(
                ParamSpec(
                    "probes", "int", 20, "Rademacher probes (Hessian-vector products) per estimate", min=1, max=10000
                ),
                ParamSpec(
                    "batches",
                    "int",
                    4,
                    "calibration batches (4 of 128 = the paper's 512 images)",
                    min=1,
                    max=10000,
                ),
                ParamSpec(
                    "chunk_size",
                    "int",
                    64,
                    "images per double-backward pass (all share each probe; the estimate is the same for any size): "
                    "smaller takes less memory and answers Cancel sooner",
                    min=1,
                    max=100000,
                ),
                ParamSpec(
                    "implant_ratio",
                    "float",
                    0.1,
                    "fraction of the removed channels (the most sensitive) given a 1×1 implant; 0 disables",
                    min=0.0,
                    max=1.0,
                ),
            ),
            score=score,
            apply=apply,
            edit_kinds=(IMPLANT_EDIT,),
        )
    ]
