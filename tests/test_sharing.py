"""The working copy over the user's storage: no data copied to score, none shared after apply, writes caught."""

from __future__ import annotations

import copy
import dataclasses
import functools

import pytest
import torch
from torch import nn

from secateur.core.api import MethodInfo, Scores
from secateur.core.common.errors import WorkError
from secateur.core.model.demo_architectures import DemoVGG
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import HOST_PACKAGE, load_registry
from secateur.core.pruning.sharing import _structural_copy, shared_copy, unshare
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import state_hash


def _storages(model: nn.Module) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()] if t.numel()}


class TiedHead(nn.Module):
    """Two classifiers over one weight, the way language models tie embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )
        self.first = nn.Linear(8, 4)
        self.second = nn.Linear(8, 4)
        self.second.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.body(x).flatten(1)
        return self.first(features) + self.second(features)


def test_the_shared_copy_has_its_own_modules_and_parameters_over_the_same_storage() -> None:
    model = TiedHead().eval()
    work = shared_copy(model)
    assert _storages(work) == _storages(model)
    assert all(a is not b for a, b in zip(work.modules(), model.modules(), strict=True))
    assert all(a is not b for a, b in zip(work.parameters(), model.parameters(), strict=True))
    assert work.second.weight is work.first.weight  # the tie survives
    work.body[0].weight.requires_grad_(False)  # a flag set on the copy stays on the copy
    assert model.body[0].weight.requires_grad


def test_unshare_clones_what_is_shared_keeps_ties_and_values() -> None:
    model = TiedHead().eval()
    work = shared_copy(model)
    work.body[0].weight = nn.Parameter(work.body[0].weight.detach()[:4].clone())  # as surgery does: a new tensor
    expected = {name: t.clone() for name, t in work.state_dict().items()}
    assert unshare(work, model) == 9  # conv bias, 5 of BatchNorm, the tied weight once, the two heads' biases
    assert not _storages(work) & _storages(model)
    assert work.second.weight is work.first.weight and isinstance(work.first.weight, nn.Parameter)
    assert all(torch.equal(t, expected[name]) for name, t in work.state_dict().items())


@pytest.mark.parametrize("method_id", ["l1", "taylor"])
def test_training_the_pruned_model_never_reaches_the_users_model(method_id: str) -> None:
    from secateur.core.data.loading import load_data

    user = DemoVGG().eval()
    before = state_hash(user)
    workspace = Workspace(user, (3, 32, 32), load_data("demo"))
    assert _storages(workspace.context().model) == _storages(user)  # scoring copied no data
    scored = workspace.score(load_registry().method(method_id), {"batches": 1} if method_id == "taylor" else {})
    pruned = workspace.apply(workspace.plan(scored, Target("ratio", 0.3))).model
    assert not _storages(pruned) & _storages(user)
    optimizer = torch.optim.SGD(pruned.parameters(), lr=0.1)
    pruned.train()
    pruned(torch.randn(4, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert state_hash(user) == before


def _writer(context, params):
    for group in context.groups:
        yield Scores(groups={group.id: torch.ones(group.channels)})
    with torch.no_grad():
        context.model.features[0].weight[0].zero_()


def test_a_built_in_method_that_writes_its_model_is_named() -> None:
    workspace = Workspace(DemoVGG().eval(), (3, 32, 32))
    method = MethodInfo(id="writer", title="t", description="d", granularity="channel", score=_writer)
    method = dataclasses.replace(method, package=HOST_PACKAGE)  # as the host marks its own methods
    with pytest.raises(
        WorkError, match=r"method writer .* changed the model it was given to score \(features.0.weight\)"
    ):
        workspace.score(method)


def test_a_third_party_method_reads_a_private_copy_and_the_users_model_stays_as_it_was() -> None:
    user = DemoVGG().eval()
    reference = copy.deepcopy(user)
    workspace = Workspace(user, (3, 32, 32))
    method = MethodInfo(id="writer", title="t", description="d", granularity="channel", score=_writer)
    with pytest.raises(WorkError, match=r"changed the model it was given to score \(features.0.weight\)"):
        workspace.score(method)
    assert state_hash(user) == state_hash(reference)


def test_a_built_in_method_that_replaces_a_tensor_of_its_model_is_named() -> None:
    """A replaced tensor bumps no version counter: the guard compares the tensor objects too."""

    def replacer(context, params):
        for group in context.groups:
            yield Scores(groups={group.id: torch.ones(group.channels)})
        context.model.features[0].bias = nn.Parameter(torch.zeros_like(context.model.features[0].bias))

    workspace = Workspace(DemoVGG().eval(), (3, 32, 32))
    method = MethodInfo(id="replacer", title="t", description="d", granularity="channel", score=replacer)
    method = dataclasses.replace(method, package=HOST_PACKAGE)
    with pytest.raises(WorkError, match=r"changed the model it was given to score \(features.0.bias\)"):
        workspace.score(method)


class PlainBlock(nn.Module):
    """What torchvision's modules hold: numbers, tuples, a list, a class, a partial, one child used twice."""

    def __init__(self) -> None:
        super().__init__()
        self.dims = [0, 2, 3, 1]
        self.norm_layer = functools.partial(nn.LayerNorm, eps=1e-6)
        self.kind = nn.ReLU
        self.act = nn.ReLU()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), self.act, nn.Conv2d(4, 4, 1), self.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).permute(*self.dims)


def test_a_plain_model_is_copied_module_by_module_with_fresh_containers() -> None:
    model = PlainBlock().eval()
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    work = _structural_copy(model, tensors)
    assert work is not None and type(work) is PlainBlock
    assert work.body[1] is work.body[3] is work.act is not model.act  # a module used twice stays one module
    assert work.dims == model.dims and work.dims is not model.dims
    work.dims[0] = 9  # a list changed on the copy (as a pruner may) stays changed on the copy only
    assert model.dims == [0, 2, 3, 1]
    work.dims[0] = 0
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(work(x), model(x))
    assert _storages(shared_copy(model)) == _storages(model)


def test_a_model_with_a_hook_or_an_unregistered_tensor_is_deep_copied() -> None:
    hooked = PlainBlock().eval()
    hooked.body[0].register_forward_hook(hooked.act.forward)  # bound to a module of the model
    assert _structural_copy(hooked, {id(t): t for t in hooked.parameters()}) is None
    work = shared_copy(hooked)
    (hook,) = work.body[0]._forward_hooks.values()
    assert hook.__self__ is work.act  # deepcopy rebinds a bound hook to the copy's module
    masked = PlainBlock().eval()
    masked.mask = torch.ones(3)  # a plain attribute, not a buffer
    work = shared_copy(masked)
    assert _structural_copy(masked, {}) is None and work.mask is not masked.mask
