"""Cancelling a run midway leaves the model bit-identical and raises Cancelled."""

from __future__ import annotations

import pytest
import torch

from secateur.core.common.errors import Cancelled
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import state_hash
from secateur.core.train.finetune import FinetuneConfig, finetune


def _cancel_after(calls: int) -> Progress:
    seen = {"count": 0}

    def report(stage: str, done: int, total: int) -> None:
        seen["count"] += 1

    return Progress(report=report, cancelled=lambda: seen["count"] >= calls)


@pytest.mark.parametrize("method", ["l1", "taylor"])
def test_cancelled_scoring_leaves_the_model_unchanged(method: str) -> None:
    loaded = load_model(parse_model_spec("demo"))
    before = state_hash(loaded.model)
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"))
    partials = []
    with pytest.raises(Cancelled):
        workspace.score(load_registry().methods[method], progress=_cancel_after(3), on_partial=partials.append)
    assert state_hash(loaded.model) == before
    assert all(p.grad is None for p in loaded.model.parameters())
    assert len(partials) < len(workspace.groups)


def test_cancelled_finetuning_leaves_the_model_unchanged() -> None:
    loaded = load_model(parse_model_spec("demo-vgg"))
    before = state_hash(loaded.model)
    with pytest.raises(Cancelled):
        finetune(loaded.model, load_data("demo"), FinetuneConfig(epochs=1), RunSettings(), _cancel_after(5))
    assert state_hash(loaded.model) == before


def test_taylor_stops_inside_a_batch() -> None:
    """One 128-image forward and backward takes about 2 s on one core: Taylor checks between 32-image chunks."""
    from torch import nn

    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"), RunSettings(batch_size=128))
    chunks: list[int] = []  # images through the classifier, per forward pass
    stages: list[str] = []

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            chunks.append(len(output))

    progress = Progress(report=lambda stage, done, total: stages.append(stage), cancelled=lambda: bool(chunks))
    handle = nn.modules.module.register_module_forward_hook(count)
    try:
        with pytest.raises(Cancelled):
            workspace.score(load_registry().methods["taylor"], {"batches": "2"}, progress=progress)
    finally:
        handle.remove()
    assert chunks == [32] and "gradients" not in stages  # stopped after one chunk of the first batch


def _checks_until(calls: int) -> tuple[Progress, list[str]]:
    """A Progress that asks to cancel from its ``calls``-th check on, recording the stages it was told of."""
    seen = {"checks": 0}
    stages: list[str] = []

    def cancelled() -> bool:
        seen["checks"] += 1
        return seen["checks"] >= calls

    return Progress(report=lambda stage, done, total: stages.append(f"{stage} {done}"), cancelled=cancelled), stages


@pytest.mark.parametrize("calls", [2, 9])  # inside the forward pass (5 leaf modules), inside the backward pass
def test_a_training_step_stops_inside_its_passes_and_changes_no_weight(calls: int) -> None:
    from torch import nn

    from secateur.core.train.finetune import train_step

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Identity())
    before = state_hash(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    progress, _ = _checks_until(calls)
    with pytest.raises(Cancelled):
        train_step(model, images, labels, optimizer, None, torch.device("cpu"), check=progress.check)
    assert state_hash(model) == before  # stopped before the optimiser step
    # the hooks went with the cancelled step: left behind, they would raise Cancelled again here
    train_step(model, images, labels, optimizer, None, torch.device("cpu"))
    assert state_hash(model) != before


def test_paam_stops_inside_its_first_training_step() -> None:
    """One 128-image step took up to 4 s on a loaded machine; Cancel now lands within a layer of it."""
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"), RunSettings(batch_size=16))
    progress, stages = _checks_until(30)  # the demo ResNet has more than 30 leaf modules: inside one forward
    with pytest.raises(Cancelled):
        workspace.score(load_registry().method("paam"), {"epochs": 1, "max_steps": 3}, progress=progress)
    assert not any(stage.startswith("PAAM training") for stage in stages)


def test_hap_stops_inside_its_first_passes() -> None:
    """HAP's double backward pass over a chunk had no check inside; now no probe completes after a Cancel there."""
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"), RunSettings(batch_size=16))
    progress, stages = _checks_until(30)
    with pytest.raises(Cancelled):
        workspace.score(load_registry().method("hap"), {"probes": 3, "batches": 1, "chunk_size": 16}, progress=progress)
    assert not any(stage.startswith("Hessian-vector products") and not stage.endswith(" 0") for stage in stages)


def test_a_backward_pass_through_a_gradient_stops_before_any_parameter_gradient() -> None:
    """A Hessian-vector product reaches the parameters at its end: the checks run before each node of its graph."""
    from torch import nn

    from secateur.core.train.interrupt import checked_graph

    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    parameters = list(model.parameters())
    gradients = torch.autograd.grad(model(torch.randn(5, 4)).pow(2).sum(), parameters, create_graph=True)
    probes = [torch.ones_like(p) for p in parameters]
    arrived: list[int] = []
    handles = [p.register_hook(lambda grad, k=k: arrived.append(k)) for k, p in enumerate(parameters)]
    progress, _ = _checks_until(1)
    with pytest.raises(Cancelled), checked_graph(gradients, progress.check):
        torch.autograd.grad(gradients, parameters, grad_outputs=probes, retain_graph=True)
    assert arrived == []  # stopped at the first node, before any parameter's product was complete
    # the hooks went with the block: the same product now runs to the end without a check
    products = torch.autograd.grad(gradients, parameters, grad_outputs=probes)
    assert sorted(arrived) == [0, 1, 2, 3] and all(
        p.shape == q.shape for p, q in zip(products, parameters, strict=True)
    )
    for handle in handles:
        handle.remove()


def test_hap_checks_throughout_each_hessian_vector_product() -> None:
    """One HVP of 64 images went 1.3 s (4 s on a loaded machine) between checks; now every node of it checks."""
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"), RunSettings(batch_size=16))
    events: list[str] = []
    progress = Progress(
        report=lambda stage, done, total: events.append(f"{stage} {done}"),
        cancelled=lambda: events.append("check") or False,
    )
    workspace.score(load_registry().method("hap"), {"probes": 2, "batches": 1, "chunk_size": 16}, progress=progress)
    first = events.index("Hessian-vector products (2 probes) 0")
    second = events.index("Hessian-vector products (2 probes) 1")
    weights = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in loaded.model.modules())
    assert events[first:second].count("check") > 4 * weights  # one per parameter's gradient was all there was


def test_tracing_a_model_reports_each_root_and_stops_on_cancel() -> None:
    """MaxViT's groups took a minute to trace before any progress showed, and Cancel could not stop it."""
    loaded = load_model(parse_model_spec("demo"))
    before = state_hash(loaded.model)
    reports: list[tuple[str, int, int]] = []
    Workspace(loaded.model, loaded.input_shape, progress=Progress(report=lambda *report: reports.append(report)))
    weights = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in loaded.model.modules())
    assert reports == [("dependency groups", done, weights - 1) for done in range(weights - 1)]  # all but the fc
    progress, stages = _checks_until(5)
    with pytest.raises(Cancelled):
        Workspace(loaded.model, loaded.input_shape, progress=progress)
    assert stages == [f"dependency groups {done}" for done in range(5)]
    assert state_hash(loaded.model) == before


def test_opening_a_model_reports_its_tracing_and_stops_on_cancel() -> None:
    """The window's open traced MaxViT's groups for 50 s with the bar still; now it reports each root."""
    from secateur.core.workflow.session import Session

    reports: list[tuple[str, int, int]] = []
    session = Session.open("demo", progress=Progress(report=lambda *report: reports.append(report)))
    assert session.tree is not None and reports == [("dependency groups", done, 21) for done in range(21)]
    progress, stages = _checks_until(3)
    with pytest.raises(Cancelled):
        Session.open("demo", progress=progress)
    assert stages == ["dependency groups 0", "dependency groups 1", "dependency groups 2"]
