"""Channels kept under a latency budget: a knapsack on importance against the latency table.

Follows HALP (Shen, Molchanov, Yin, Alvarez, "Structural Pruning via Latency-Saliency Knapsack",
NeurIPS 2022): every group keeps one of its candidate widths (the widths where the measured
latency steps down), worth the importance it keeps and costing the group's layers' time at that
width. The choice that maximises total importance within the budget is a multiple-choice knapsack,
solved exactly by dynamic programming over the budget cut in 2000 steps. A layer between two groups
costs ``t · ρ_in · ρ_out``, which is not additive, so (as HALP re-measures costs as pruning goes) the
budget is tightened in a few steps, each knapsack's costs taken at the widths the previous step
chose (and scaled, as the table's predictions are, by the model's latency over its timed layers'
sum). Which channels go within a group is still the method's choice (``choose_kept``).

What a width is worth: with scores comparable across layers (``raw_scores``: hap, pxp, paam declare
theirs so) the sum of the kept channels' scores, as in the paper. Other scores only rank channels within their
group, and that sum (normalised by the group's mean, every channel worth about 1) made the knapsack
strip whole streams: on the demo at 1.5× the stem kept 8 of 32 channels and the model 46% accuracy.
There a width keeping the share ``k`` of its group's score is worth ``M · (1 − (1 − k)²)``, ``M`` the
MACs of the group's layers: the loss grows with the square of what is removed (a second-order
view, as in Optimal Brain Damage), in proportion to the computation the group carries. With time
proportional to MACs the knapsack's answer is then the same cut in every group, the MACs plan;
it departs from it where this device makes a group's MACs dearer (the demo at 1.5×: 75.85% accuracy,
where the mean-normalised values kept 46.35%).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from secateur.core.common.errors import InputError
from secateur.core.graph.groups import GroupInfo
from secateur.core.pruning.latency_table import LatencyTable
from secateur.core.pruning.plan import PlanOptions, fewest_kept
from secateur.core.pruning.scoring import Scores

RESOLUTION = 2000
SCHEDULE = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # fractions of the goal, one knapsack each


def _values(group: GroupInfo, scores: Scores, widths: tuple[int, ...], raw: bool, size: float) -> list[float]:
    """Importance kept at each width: the top scores' sum (``raw``), else ``size · (1 − (1 − share)²)``."""
    values = scores.groups[group.id].double().abs().numpy()
    kept = np.cumsum(np.sort(values)[::-1])
    if raw:
        return [float(kept[width - 1]) for width in widths]
    total = float(kept[-1])
    shares = [float(kept[width - 1]) / total if total > 0 else width / group.channels for width in widths]
    return [size * (1.0 - (1.0 - share) ** 2) for share in shares]


def knapsack(
    values: list[list[float]], costs: list[list[float]], capacity: float, resolution: int = RESOLUTION
) -> list[int] | None:
    """Per item, the index of the option maximising total value with total cost ≤ ``capacity`` (None: none fits).

    Costs are rounded up to ``capacity / resolution``, so a choice never exceeds the capacity.
    """
    if capacity <= 0:
        return None
    unit = capacity / resolution
    best = np.zeros(resolution + 1)
    choices = []
    for item_values, item_costs in zip(values, costs, strict=True):
        units = [max(0, math.ceil(cost / unit - 1e-9)) for cost in item_costs]
        new = np.full(resolution + 1, -np.inf)
        pick = np.full(resolution + 1, -1)
        for option, (value, used) in enumerate(zip(item_values, units, strict=True)):
            if used > resolution:
                continue
            shifted = np.full(resolution + 1, -np.inf)
            shifted[used:] = best[: resolution + 1 - used] + value
            better = shifted > new
            new[better], pick[better] = shifted[better], option
        best = new
        choices.append(pick)
    if not np.isfinite(best[resolution]):
        return None
    chosen, left = [], resolution
    for item_costs, pick in zip(reversed(costs), reversed(choices), strict=True):
        option = int(pick[left])
        chosen.append(option)
        left -= max(0, math.ceil(item_costs[option] / unit - 1e-9))
    return chosen[::-1]


def _group_costs(
    table: LatencyTable, group_id: str, widths: tuple[int, ...], current: Mapping[str, int]
) -> list[float]:
    """The group's layers' time at each width, with every other group at its ``current`` width."""
    costs = []
    calibration = table.calibration()
    for width in widths:
        total = 0.0
        for name, times in table.groups[group_id].layers.items():
            scale = table.groups[group_id].ratio(name, width)
            for other, entry in table.groups.items():
                if other != group_id and name in entry.layers and current.get(other, entry.total) < entry.total:
                    scale *= entry.ratio(name, current[other])
            total += times[-1] * scale * calibration
        costs.append(total)
    return costs


def _allowed_widths(group: GroupInfo, table: LatencyTable, options: PlanOptions) -> tuple[int, ...]:
    """The table's step-down widths of a group that keep at least the plan's floor (full width always)."""
    floor = fewest_kept(group.channels, options)
    return tuple(w for w in table.groups[group.id].step_downs() if w >= floor)


def _choices(
    groups: list[GroupInfo], scores: Scores, table: LatencyTable, options: PlanOptions, macs: Mapping[str, float]
) -> dict[str, tuple[tuple[int, ...], list[float]]]:
    """Each group's widths the knapsack may pick (the table's step-downs above the floor) and their values."""
    choices = {}
    for group in groups:
        widths = _allowed_widths(group, table, options)
        size = max(float(macs.get(group.id, 0.0)), 1.0)
        choices[group.id] = (widths, _values(group, scores, widths, options.raw_scores, size))
    return choices


def table_reach(groups: list[GroupInfo], table: LatencyTable, options: PlanOptions) -> float:
    """The most latency the table predicts these groups can save, each at its narrowest allowed width."""
    narrowest = {group.id: _allowed_widths(group, table, options)[0] for group in groups}
    return 1.0 - table.predict(narrowest) / table.base_ms


def latency_counts(
    groups: list[GroupInfo],
    scores: Scores,
    table: LatencyTable,
    goal: float,
    options: PlanOptions,
    macs: Mapping[str, float],
    refuse_short: bool = True,
) -> tuple[dict[str, int], float]:
    """Channels kept per group so that the table predicts ``goal`` less latency, and the predicted reduction.

    Short of the goal by more than 3 points, it refuses (``refuse_short``) or
    returns what it reached (a search that measures the plans).

    ``groups`` are those the knapsack may narrow (scored, unlocked, not
    overridden, in the table); every other group stays whole. ``macs``: each
    group's layers' MACs, what its scores are weighed by unless they are raw.
    """
    choices = _choices(groups, scores, table, options, macs)
    current = {group.id: group.channels for group in groups}
    for fraction in SCHEDULE:
        budget = table.base_ms * (1.0 - goal * fraction)
        costs = [_group_costs(table, gid, widths, current) for gid, (widths, _) in choices.items()]
        fixed = table.predict(current) - sum(
            c[widths.index(current[gid])] for c, (gid, (widths, _)) in zip(costs, choices.items(), strict=True)
        )
        picked = knapsack([values for _, values in choices.values()], costs, budget - fixed)
        if picked is None:
            break
        current = {gid: widths[option] for (gid, (widths, _)), option in zip(choices.items(), picked, strict=True)}
    reduction = 1.0 - table.predict(current) / table.base_ms
    if refuse_short and reduction < goal - 0.03:
        most = table_reach(groups, table, options)
        raise InputError(
            f"--latency-reduction {goal}: the latency table predicts at most {most:.3f} less latency with these "
            f"limits (reached {reduction:.3f}); raise --max-layer-ratio or aim lower"
        )
    return current, reduction
