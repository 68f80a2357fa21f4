"""``intra-fusion``: meta-pruning by optimal transport (Theus et al., ICLR 2024).

Any channel criterion picks the ``k`` channels a group keeps; instead of
dropping the other ``n − k``, an exact optimal-transport plan (POT's
``ot.emd``) merges all ``n`` channels into those ``k``. BatchNorm is folded
into its producer first. Each channel is described by the concatenation, over
every layer of its dependency group, of the producers' output rows and the
consumers' input columns (L2-normalised); the cost of sending channel ``i`` to
kept channel ``j`` is their L1 distance. The transport map averages the
producers' rows (``T_out``) and sums the consumers' columns (``T_in``), which is
exact when merged channels are duplicates. Fusion only changes tensor values:
the structure is the plain removal of the unkept channels, so checkpoints
replay the usual ``prune_channels`` edit and carry the fused tensors.

Defaults follow METHODS.md: L1 criterion, p = 1 costs, uniform marginals, the
function-preserving ``average`` normalisation (``reference`` reproduces the
official code, which also applies ``T_in`` to producers). Groups with
depthwise or grouped convolutions fall back to plain selection, as in the
official code, and groups wider than 2048 channels use Sinkhorn instead of
exact OT (exact OT is cubic); the plan's notes say which.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import ot
import torch
from scipy.spatial.distance import cdist
from torch import nn

from secateur.core.api import (
    API_VERSION,
    Applied,
    InputError,
    Member,
    MethodInfo,
    ParamSpec,
    PruningPlan,
    Scored,
    Scores,
    ScoringContext,
    apply_plan,
    hookimpl,
    installed_method,
)

CRITERIA = ("l1", "l2", "taylor", "bn-scale", "random")
EMD_LIMIT = 2048  # channels beyond which Sinkhorn replaces exact OT (a documented deviation)
COST_CHUNK = 100_000_000  # absolute differences per chunk of the transport cost, between two cancel checks
_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)


def score(context: ScoringContext, params: dict[str, Any]) -> Generator[Scores, None, Any]:
    """The chosen criterion's scores, streamed as it produces them; they decide the kept channels."""
    criterion = installed_method(params["importance"])
    criterion_params = {"batches": params["batches"]} if any(p.name == "batches" for p in criterion.params) else {}
    stream = criterion.score(context, criterion_params)
    if isinstance(stream, Scores):
        yield stream
        return None
    return (yield from stream)  # the criterion's own state, if it has one


def _is_grouped(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1


def batchnorm_pairs(model: nn.Module, graph) -> list[tuple[str, str]]:
    """(producer, BatchNorm) module names for every BatchNorm fed directly by a conv or linear layer."""
    names = {module: name for name, module in model.named_modules()}
    pairs = []
    for module in model.modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module not in graph.module2node:
            continue
        inputs = graph.module2node[module].inputs
        if len(inputs) == 1 and isinstance(inputs[0].module, _WEIGHTED) and not _is_grouped(inputs[0].module):
            pairs.append((names[inputs[0].module], names[module]))
    return pairs


@torch.no_grad()
def fold_batchnorm(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    """Fold each BatchNorm's normalisation into its producer (ε included).

    The producer's weight takes the scale; the shift (with the producer's own
    bias, which becomes zero) moves to the BatchNorm's β, and the BatchNorm is
    left as a pure per-channel bias (γ = 1, mean 0, variance 1 − ε), so the
    parameter count does not change.
    """
    modules = dict(model.named_modules())
    for producer_name, norm_name in pairs:
        producer, norm = modules[producer_name], modules[norm_name]
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        producer.weight.mul_(scale.view((-1,) + (1,) * (producer.weight.dim() - 1)))
        bias = producer.bias if producer.bias is not None else torch.zeros_like(norm.running_mean)
        norm.bias.copy_((bias - norm.running_mean) * scale + norm.bias)
        if producer.bias is not None:
            producer.bias.zero_()
        norm.weight.fill_(1.0)
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)


def l1_cost(features: torch.Tensor, targets: torch.Tensor, check: Callable[[], None] | None = None) -> np.ndarray:
    """``‖f_i − t_j‖₁`` (n × k) in row chunks of about ``COST_CHUNK`` differences, calling ``check`` before each.

    On a 4096-wide VGG classifier the cost takes minutes on one core; the
    checks let Cancel stop it within a chunk (about a tenth of a second).
    SciPy's ``cityblock`` gives the same numbers as ``torch.cdist(p=1)`` in
    about half the time (one thread, 8192 features), and releases the GIL, so
    the chunks run on as many threads as torch may use (1024 × 717 × 8192: 4.4 → 2.0 s on two cores).
    """
    features, targets = features.double().numpy(), targets.double().numpy()
    rows = max(1, COST_CHUNK // max(1, targets.shape[0] * features.shape[1]))
    cost = np.empty((features.shape[0], targets.shape[0]))

    def chunk(start: int) -> None:
        cost[start : start + rows] = cdist(features[start : start + rows], targets, "cityblock")

    threads = max(1, torch.get_num_threads())
    with ThreadPoolExecutor(threads) as pool:
        running: set[Future] = set()
        for start in range(0, features.shape[0], rows):
            if check is not None:
                check()  # a cancel leaves the pool once the chunks already running end
            running.add(pool.submit(chunk, start))
            if len(running) >= threads:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
        for future in running:
            future.result()
    return cost


def transport(
    features: torch.Tensor,
    kept: list[int],
    importance: torch.Tensor | None,
    solver: str,
    reg: float,
    check: Callable[[], None] | None = None,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The OT plan ``G`` (n × k) from all channels to the kept ones, and the maps ``T_out``, ``T_in`` (k × n)."""
    n = features.shape[0]
    cost = l1_cost(features, features[kept], check)
    if importance is None:
        a = np.full(n, 1.0 / n)
        b = np.full(len(kept), 1.0 / len(kept))
    else:
        weights = importance.double().clamp(min=1e-12).numpy()
        a = weights / weights.sum()
        b = weights[kept] / weights[kept].sum()
    if solver == "emd":
        plan = ot.emd(a, b, cost)
    else:  # scaled to [0, 1] and in the log domain: exp(-cost / reg) underflows to 0 for wide layers otherwise
        plan = ot.sinkhorn(a, b, cost / max(cost.max(), 1e-12), reg, method="sinkhorn_log")
    if not np.isfinite(plan).all():
        raise InputError(
            f"intra-fusion: the {solver} transport plan is not finite (reg {reg}); try a larger sinkhorn_reg"
        )
    g = torch.from_numpy(np.asarray(plan, dtype=np.float64))
    t_out = (g / torch.from_numpy(b)[None, :]).T
    t_in = (g / torch.from_numpy(a)[:, None]).T
    return np.asarray(plan), t_out, t_in


def _positions(member: Member) -> dict[int, list[int]]:
    """Group channel → the positions it occupies in this layer (several after a flatten)."""
    positions: dict[int, list[int]] = {}
    for index, channel in zip(member.indices, member.group_indices, strict=True):
        positions.setdefault(channel, []).append(index)
    return positions


def _channel_blocks(weight: torch.Tensor, positions: dict[int, list[int]], n: int, dim: int) -> torch.Tensor:
    """(n, ...) stack of each channel's slice of ``weight`` along ``dim`` (its rows or its input columns)."""
    return torch.stack([weight.index_select(dim, torch.tensor(positions[c])).movedim(dim, 0) for c in range(n)])


@torch.no_grad()
def fuse_group(
    context: ScoringContext, model: nn.Module, group, kept: list[int], params: dict[str, Any], scores: Scores
) -> str | None:
    """Write the fused tensors of one group into ``model`` (a copy); returns a note when it falls back."""
    modules = dict(model.named_modules())
    all_members = list(context.members(group))
    members = [m for m in all_members if isinstance(m.module, _WEIGHTED)]
    norms = [m for m in all_members if isinstance(m.module, nn.modules.batchnorm._BatchNorm)]
    if any(_is_grouped(m.module) for m in members):
        return f"group {group.id}: depthwise or grouped convolution, plain selection (no fusion)"
    n = group.channels
    producers, consumers = [], []
    for member in [*members, *norms]:
        target = modules[member.name]
        positions = _positions(member)
        if len(positions) != n:
            return f"group {group.id}: a layer sees only part of the group's channels, plain selection"
        (producers if member.is_output else consumers).append((target, positions))
    blocks = [_channel_blocks(t.weight, p, n, 0).reshape(n, -1) for t, p in producers if isinstance(t, _WEIGHTED)]
    blocks += [_channel_blocks(t.weight, p, n, 1).reshape(n, -1) for t, p in consumers]
    features = torch.cat(blocks, dim=1).double()
    features = features / features.norm(dim=1, keepdim=True).clamp(min=1e-12)
    importance = scores.groups[group.id] if params["marginals"] == "importance" else None
    solver, note = params["solver"], None
    if solver == "emd" and n > EMD_LIMIT:  # exact OT is O(n³): beyond ~2k channels it takes minutes
        solver, note = "sinkhorn", f"group {group.id}: {n} channels, Sinkhorn instead of exact OT"
    _, t_out, t_in = transport(features, kept, importance, solver, params["sinkhorn_reg"], context.progress.check)
    producer_map = t_in if params["normalization"] == "reference" else t_out
    for target, positions in producers:
        stack = _channel_blocks(target.weight, positions, n, 0).double()
        fused = torch.einsum("ji,i...->j...", producer_map, stack).to(target.weight.dtype)
        for j, channel in enumerate(kept):
            target.weight[positions[channel]] = fused[j]
        if target.bias is not None:
            bias = torch.stack([target.bias[positions[c]] for c in range(n)]).double()
            fused_bias = (producer_map @ bias).to(target.bias.dtype)
            for j, channel in enumerate(kept):
                target.bias[positions[channel]] = fused_bias[j]
    for target, positions in consumers:
        stack = _channel_blocks(target.weight, positions, n, 1).double()
        fused = torch.einsum("ji,i...->j...", t_in, stack).to(target.weight.dtype)
        for j, channel in enumerate(kept):
            target.weight[:, positions[channel]] = fused[j].movedim(0, 1)
    return note


def apply(context: ScoringContext, plan: PruningPlan, params: dict[str, Any], scored: Scored) -> Applied:
    """Fold BatchNorm, fuse every group's channels into its kept ones, then remove the rest (on a copy).

    The importance marginals are the scores that chose the plan (``scored.scores``), never recomputed.
    """
    model = copy.deepcopy(context.model)
    fold_batchnorm(model, batchnorm_pairs(context.model, context.graph))
    notes = []
    fused = [g for g in context.groups if g.kind == "channels" and g.id in plan.groups and plan.groups[g.id].removed]
    for index, group in enumerate(fused):
        context.progress.check()  # one optimal-transport problem per group: cancellable between them
        note = fuse_group(context, model, group, plan.groups[group.id].kept, params, scored.scores)
        if note:
            notes.append(note)
        context.progress("intra-fusion: optimal transport per group", index + 1, len(fused))
    pruned, edits = apply_plan(model, plan, context.example)
    return Applied(pruned, edits, plan, notes)


@hookimpl
def secateur_api_version() -> int:
    return API_VERSION


@hookimpl
def secateur_methods() -> list[MethodInfo]:
    return [
        MethodInfo(
            id="intra-fusion",
            title="Intra-Fusion (optimal-transport fusion)",
            description="Keeps the channels a criterion ranks highest, but instead of dropping the others merges "
            "every channel into the kept ones with an exact optimal-transport plan over the whole dependency "
            "group (BatchNorm folded first), so little accuracy is lost without fine-tuning (Theus et al. 2024).",
            granularity="channel",
            params=(
                ParamSpec("importance", "choice", "l1", "criterion that picks the kept channels", choices=CRITERIA),
                ParamSpec("batches", "int", 8, "calibration batches, for criteria that use data", min=1, max=10000),
                ParamSpec("marginals", "choice", "uniform", "OT marginals", choices=("uniform", "importance")),
                ParamSpec(
                    "solver", "choice", "emd", "exact OT (emd) or entropic (sinkhorn)", choices=("emd", "sinkhorn")
                ),
                ParamSpec(
                    "sinkhorn_reg",
                    "float",
                    0.01,
                    "entropic regularisation of sinkhorn, relative to the largest transport cost",
                    min=1e-6,
                    max=10.0,
                ),
                ParamSpec(
                    "normalization",
                    "choice",
                    "average",
                    "average preserves the function; reference applies T_in to producers too, as the official code",
                    choices=("average", "reference"),
                ),
            ),
            score=score,
            apply=apply,
        )
    ]
