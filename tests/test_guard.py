"""The guard on the model a method reads: the working copy compared bit for bit with the user's model."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from secateur.core.api import MethodInfo, Scores
from secateur.core.common.errors import WorkError
from secateur.core.model.demo_architectures import DemoVGG
from secateur.core.pruning import workspace as workspace_module
from secateur.core.pruning.guard import changed_tensors
from secateur.core.pruning.workspace import Workspace


def _model() -> nn.Module:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer; BatchNorm counts one batch (an int64 buffer)
    return model.eval()


def test_an_exact_copy_is_unchanged_even_with_nans_and_integer_buffers() -> None:
    model = _model()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    assert int(model[1].num_batches_tracked) == 1
    assert changed_tensors(model, copy.deepcopy(model)) == []


@pytest.mark.parametrize(
    ("change", "name"),
    [
        (lambda m: m[0].weight.data.mul_(1.0 + 1e-7), "0.weight"),  # .data: the version counter does not see it
        (lambda m: m[0].weight.data.copy_(m[0].weight.data.flip(0)), "0.weight"),  # a permutation of channels
        (lambda m: m[1].running_var.add_(1), "1.running_var"),
        (lambda m: m[1].num_batches_tracked.add_(1), "1.num_batches_tracked"),
        (lambda m: setattr(m[0], "bias", nn.Parameter(m[0].bias.data[:4].clone())), "0.bias"),  # a new shape
        (lambda m: setattr(m[4], "weight", nn.Parameter(m[4].weight.data.double())), "4.weight"),  # a new dtype
        (lambda m: m[0].weight.data.view(-1)[5:6].neg_(), "0.weight"),  # one element's sign
    ],
)
def test_any_change_to_one_tensor_is_named(change, name: str) -> None:
    model = _model()
    changed = copy.deepcopy(model)
    change(changed)
    assert changed_tensors(model, changed) == [name]


def test_added_and_removed_tensors_are_named_in_order() -> None:
    model = _model()
    changed = copy.deepcopy(model)
    changed[0].bias = None
    changed[1].register_buffer("extra", torch.zeros(2))
    assert changed_tensors(model, changed) == ["0.bias", "1.extra"]


def _mutator(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: torch.ones(group.channels)})
    context.model.features[0].weight.data[0].zero_()


def test_a_method_that_changes_its_model_fails_and_the_users_model_is_untouched() -> None:
    user = DemoVGG().eval()
    reference = copy.deepcopy(user)
    workspace = Workspace(user, (3, 32, 32))
    handed = workspace.context().model
    method = MethodInfo(id="mutator", title="t", description="d", granularity="channel", score=_mutator)
    with pytest.raises(WorkError, match=r"method mutator .* changed the model it was given to score \(features.0"):
        workspace.score(method)
    assert changed_tensors(reference, user) == []
    assert workspace.context().model is not handed  # the changed copy is forgotten
    assert changed_tensors(user, workspace.context().model) == []


def test_residual_blocks_are_found_only_for_a_method_that_asks(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    original = workspace_module.residual_blocks
    monkeypatch.setattr(workspace_module, "residual_blocks", lambda model: calls.append(1) or original(model))
    workspace = Workspace(DemoVGG(), (3, 32, 32))

    def reader(context, params):
        yield Scores(blocks={block.name: 1.0 for block in context.blocks if block.removable})

    def ones(context, params):
        yield Scores(groups={group.id: torch.ones(group.channels) for group in context.groups})

    workspace.score(MethodInfo(id="ones", title="t", description="d", granularity="channel", score=ones))
    assert calls == []
    workspace.score(MethodInfo(id="reader", title="t", description="d", granularity="block", score=reader))
    assert calls == [1]


def test_a_score_for_an_unknown_block_is_still_refused() -> None:
    workspace = Workspace(DemoVGG(), (3, 32, 32))

    def invented(context, params):
        yield Scores(blocks={"features.99": 1.0})

    method = MethodInfo(id="invented", title="t", description="d", granularity="block", score=invented)
    with pytest.raises(WorkError, match=r"method invented scored 'features.99', which is not a removable block"):
        workspace.score(method)
