"""Cancelling a run midway leaves the model bit-identical and raises Cancelled."""

from __future__ import annotations

import pytest

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
    import torch
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
