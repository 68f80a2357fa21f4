"""A latency target: candidate plans are timed against the model and the channel ratio bisected on the result.

Timings themselves are the benchmark's business (bench/speedup.py); here a stand-in clock whose
"latency" is a model's MACs makes the search deterministic, so what is checked is the search.
"""

from __future__ import annotations

import pytest
import torch

from conftest import run_cli
from secateur.core.common.errors import InputError
from secateur.core.model.demo_architectures import DemoVGG
from secateur.core.pruning import latency
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace


@pytest.fixture(scope="module")
def scored_vgg() -> tuple[Workspace, object]:
    workspace = Workspace(DemoVGG().eval(), (3, 32, 32))
    return workspace, workspace.score(load_registry().method("l1"))


def test_the_search_lands_within_three_points_and_says_what_it_measured(macs_clock, scored_vgg) -> None:
    workspace, scored = scored_vgg
    plan = workspace.plan(scored, Target("latency", 0.4), PlanOptions(), "l1")
    achieved = 1 - plan.predicted_macs / workspace.macs
    assert abs(achieved - 0.4) <= latency.LATENCY_TOLERANCE
    assert len(macs_clock.reductions) <= latency.MAX_CANDIDATES
    assert abs(macs_clock.reductions[-1] - 0.4) <= latency.LATENCY_TOLERANCE
    assert "latency target 0.4" in plan.notes[-1] and "ms before" in plan.notes[-1] and "less)" in plan.notes[-1]
    # the channels that go are still the method's choice: the same plan as the MACs target at that ratio
    macs_plan = workspace.plan(scored, Target("macs", round(achieved, 3)), PlanOptions(), "l1")
    assert abs(macs_plan.predicted_macs - plan.predicted_macs) / workspace.macs <= 0.02


def test_an_unreachable_latency_target_is_refused_with_the_most_it_can_do(macs_clock, scored_vgg) -> None:
    workspace, scored = scored_vgg
    with pytest.raises(InputError, match=r"--latency-reduction 0.95: cannot be reached .* measured 0\.\d+ less"):
        workspace.plan(scored, Target("latency", 0.95), PlanOptions(max_layer_ratio=0.5), "l1")
    assert len(macs_clock.reductions) == 1  # one look at the largest plan was enough to know


def test_a_target_inside_a_step_of_the_measured_latency_names_the_step(monkeypatch, scored_vgg) -> None:
    """Kernels that change with the channel counts: the latency falls by 20% or by 60%, nothing between."""
    from secateur.core.train.evaluate import model_macs

    def stepped(reference, candidate, batch, rounds=15, warmup=3, check=lambda: None):
        shape = tuple(batch.shape[1:])
        removed = 1 - model_macs(candidate, shape) / model_macs(reference, shape)
        return latency.TimedPair((10.0,) * rounds, ((8.0 if removed < 0.5 else 4.0),) * rounds)

    monkeypatch.setattr(latency, "time_interleaved", stepped)
    workspace, scored = scored_vgg
    with pytest.raises(InputError) as refused:
        workspace.plan(scored, Target("latency", 0.4), PlanOptions(), "l1")
    message = str(refused.value)
    assert message.startswith("--latency-reduction 0.4: the measured reduction jumps from 0.200 at channel ratio 0.")
    assert "to 0.600 at 0." in message and "aim for 0.20 or 0.60" in message and "--latency-table" in message


def test_interleaved_timing_runs_both_models_alternately() -> None:
    calls: list[str] = []

    class Tagged(torch.nn.Module):
        def __init__(self, tag: str) -> None:
            super().__init__()
            self.tag = tag

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(self.tag)
            return x

    pair = latency.time_interleaved(Tagged("a"), Tagged("b"), torch.zeros(1, 3), rounds=4, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "b", "a"]  # warm-up, then alternating order
    assert len(pair.reference) == len(pair.candidate) == 4


def test_cli_refuses_bad_latency_targets() -> None:
    outside = run_cli(
        "prune", "demo", "--data", "demo", "--method", "l1", "--latency-reduction", "1.5", "--out", "x.safetensors"
    )
    assert outside.returncode == 2 and "--latency-reduction 1.5: must be strictly between 0 and 1" in outside.stderr
    workspace = Workspace(DemoVGG().eval(), (3, 32, 32))
    with pytest.raises(InputError, match="works with channel methods"):
        workspace.plan(Scores(blocks={"x": 1.0}), Target("latency", 0.3))
