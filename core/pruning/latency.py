"""Planning for measured speed: a latency-reduction target, met by timing candidate pruned models.

MACs predict CPU and GPU time poorly at small batches, so a ``latency`` target
is met by measurement: candidate plans at several channel ratios are applied
to copies of the model and timed *interleaved* with the unpruned model
(A, B, A, B, ... so that drift and other load hit both alike), and the
channel ratio is bisected on the measured reduction until it lies within
±3 points of the goal. Which channels go still comes from the method's scores.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from secateur.core.common.devices import synchronize
from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.pruning.plan import PruningPlan, Target
from secateur.core.pruning.surgery import apply_plan

LATENCY_TOLERANCE = 0.03
MAX_CANDIDATES = 8


@dataclass(frozen=True)
class TimedPair:
    """Interleaved timings (milliseconds) of a reference model and a candidate on the same input."""

    reference: tuple[float, ...]
    candidate: tuple[float, ...]

    @property
    def reduction(self) -> float:
        """1 − candidate / reference, by medians."""
        return 1.0 - statistics.median(self.candidate) / statistics.median(self.reference)

    def describe(self, batch_size: int, device: torch.device) -> str:
        return (
            f"measured latency at batch {batch_size} on {device}: {_spread(self.reference)} ms before, "
            f"{_spread(self.candidate)} ms after ({self.reduction:.1%} less)"
        )


def _spread(times: tuple[float, ...]) -> str:
    """Median with p10–p90."""
    ordered = sorted(times)
    low = ordered[round(0.1 * (len(ordered) - 1))]
    high = ordered[round(0.9 * (len(ordered) - 1))]
    return f"{statistics.median(ordered):.2f} ({low:.2f}–{high:.2f})"


Timer = Callable[[nn.Module, torch.Tensor], float]
"""Milliseconds of one call of a module on an input (tests inject a deterministic one)."""


def one_call(module: nn.Module, batch: torch.Tensor) -> float:
    """Milliseconds of one call of ``module`` on ``batch``, its device's queue drained after it."""
    started = time.perf_counter()
    module(batch)
    synchronize(batch.device)
    return (time.perf_counter() - started) * 1000.0


@torch.no_grad()
def time_interleaved(
    reference: nn.Module,
    candidate: nn.Module,
    batch: torch.Tensor,
    rounds: int = 15,
    warmup: int = 3,
    check: Callable[[], None] = lambda: None,
    timer: Timer = one_call,
) -> TimedPair:
    """Time ``reference`` and ``candidate`` alternately, ``rounds`` times each, after warm-up.

    ``check`` runs before each round (a cancel check: a large batch can take seconds per round).
    """
    reference.eval()
    candidate.eval()
    for _ in range(warmup):
        reference(batch)
        candidate(batch)
    synchronize(batch.device)
    times: dict[int, list[float]] = {0: [], 1: []}
    for round_index in range(rounds):
        check()
        order = (0, 1) if round_index % 2 == 0 else (1, 0)
        for which in order:
            times[which].append(timer(reference if which == 0 else candidate, batch))
    return TimedPair(tuple(times[0]), tuple(times[1]))


def plan_for_latency(
    model: nn.Module,
    example: torch.Tensor,
    plan_at: Callable[[float], PruningPlan],
    target: Target,
    max_value: float,
    batch_size: int = 1,
    progress: Progress = SILENT,
    rounds: int = 15,
    start: float | None = None,
    knob: str = "channel ratio",
) -> PruningPlan:
    """The plan whose measured latency reduction is within ±3 points of ``target.value``.

    ``plan_at(value)`` makes the method's plan at a value of ``knob`` in
    [0, ``max_value``] (a channel ratio, or the latency table's own goal),
    whose reduction grows with it; each candidate is applied to a copy of
    ``model`` and timed against it. The search measures ``start`` first when
    given (the table's prediction is usually close), else the largest value,
    and bisects from there.
    """
    goal = target.value
    batch = torch.randn((batch_size, *example.shape[1:]), generator=torch.Generator().manual_seed(0))
    batch = batch.to(example.device)
    measured: list[tuple[float, PruningPlan, TimedPair]] = []

    def measure(value: float) -> float:
        progress.check()
        plan = plan_at(value)
        pruned, _ = apply_plan(model, plan, example)
        pair = time_interleaved(model, pruned, batch, rounds, check=progress.check)
        measured.append((value, plan, pair))
        progress("latency target: timing candidate plans", len(measured), MAX_CANDIDATES)
        return pair.reduction

    def close() -> bool:
        return any(abs(pair.reduction - goal) <= LATENCY_TOLERANCE / 2 for _, _, pair in measured)

    low, high = 0.0, max_value
    progress("latency target: timing candidate plans", 0, MAX_CANDIDATES)  # a candidate can take seconds
    if start is not None:
        if measure(start) > goal:
            high = start
        else:
            low = start
    if high == max_value and not close():  # is the goal reachable at all?
        most = measured[-1][2].reduction if start == max_value else measure(max_value)
        if most < goal - LATENCY_TOLERANCE:
            raise InputError(
                f"--latency-reduction {goal}: cannot be reached with these scores and limits; the most removed "
                f"({knob} {max_value:.3g}) measured {most:.3f} less latency "
                "(aim lower, or let more of a layer go: --max-layer-ratio)"
            )
    while len(measured) < MAX_CANDIDATES and not close():
        middle = (low + high) / 2
        if measure(middle) < goal:
            low = middle
        else:
            high = middle
    value, plan, pair = min(measured, key=lambda item: (abs(item[2].reduction - goal), item[0]))
    if abs(pair.reduction - goal) > LATENCY_TOLERANCE:
        raise InputError(_missed(goal, [(value, pair.reduction) for value, _, pair in measured], knob))
    note = f"latency target {goal}: {knob} {value:.3f}; " + pair.describe(batch_size, example.device)
    return plan.with_notes(note)


def _missed(goal: float, reductions: list[tuple[float, float]], knob: str) -> str:
    """Why no candidate came within tolerance: the measured reduction jumps across the goal between two ratios.

    On the demo at batch 1, channel ratio 0.373 measured 27% less latency and
    0.4 measured 43%, again and again: the convolution kernels change with the
    channel counts, so no single ratio gives 33%. The table plan mixes widths
    per layer and can land in between.
    """
    below = max(((r, d) for r, d in reductions if d < goal), key=lambda item: item[1], default=None)
    above = min(((r, d) for r, d in reductions if d > goal), key=lambda item: item[1], default=None)
    if below is None or above is None:
        ratio, reduction = min(reductions, key=lambda item: abs(item[1] - goal))
        return (
            f"--latency-reduction {goal:.3g}: the nearest measured reduction is {reduction:.3f} at {knob} "
            f"{ratio:.3f}; aim for another target, or time more runs: --latency-runs"
        )
    by_table = "plan from the latency table (--latency-table), which mixes widths per layer, "
    table_hint = by_table if knob == "channel ratio" else ""
    return (
        f"--latency-reduction {goal:.3g}: the measured reduction jumps from {below[1]:.3f} at {knob} "
        f"{below[0]:.3f} to {above[1]:.3f} at {above[0]:.3f}, so no {knob} in between is within ±{LATENCY_TOLERANCE} "
        f"(the kernels change with the channel counts, or the timings are noisy); aim for {below[1]:.2f} or "
        f"{above[1]:.2f}, {table_hint}or time more runs: --latency-runs"
    )
