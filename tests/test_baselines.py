"""Each baseline's scores against an independent computation on a small network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.pruning.criteria import GroupMagnitude
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace


class Chain(nn.Module):
    """conv1 → bn1 → relu → conv2 → bn2 → relu → pool → fc: two groups, easy to compute by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 5, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(5)
        self.fc = nn.Linear(5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def methods():
    return load_registry().methods


@pytest.fixture
def chain() -> Chain:
    torch.manual_seed(0)
    model = Chain()
    for bn in (model.bn1, model.bn2):
        nn.init.uniform_(bn.weight, -1, 1)
    return model.eval()


def _workspace(model: nn.Module, data=None) -> Workspace:
    return Workspace(model, (3, 32, 32), data)


def _by_hand(model: Chain, p: int, g1: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Mean over the group's layers of each channel's summed |w|^p: producer rows, BN γ, consumer columns."""
    w1, w2, w3 = model.conv1.weight, model.conv2.weight, model.fc.weight
    first = (w1.abs().pow(p).sum((1, 2, 3)) + model.bn1.weight.abs().pow(p) + w2.abs().pow(p).sum((0, 2, 3))) / 3
    second = (w2.abs().pow(p).sum((1, 2, 3)) + model.bn2.weight.abs().pow(p) + w3.abs().pow(p).sum(0)) / 3
    return {"conv1": first.detach(), "conv2": second.detach()}


@pytest.mark.parametrize(("method", "p"), [("l1", 1), ("l2", 2)])
def test_magnitude_scores(methods, chain: Chain, method: str, p: int) -> None:
    scores = _workspace(chain).score(methods[method]).scores
    expected = _by_hand(chain, p)
    assert set(scores.groups) == {"conv1", "conv2"}
    for group, values in expected.items():
        assert torch.allclose(scores.groups[group], values, rtol=1e-5), group


def test_bn_scale_scores(methods, chain: Chain) -> None:
    scores = _workspace(chain).score(methods["bn-scale"]).scores
    assert torch.allclose(scores.groups["conv1"], chain.bn1.weight.abs().detach())
    assert torch.allclose(scores.groups["conv2"], chain.bn2.weight.abs().detach())


def test_random_scores_follow_the_seed(methods, chain: Chain) -> None:
    first = _workspace(chain).score(methods["random"]).scores.groups["conv1"]
    again = _workspace(chain).score(methods["random"]).scores.groups["conv1"]
    other = Workspace(chain, (3, 32, 32), settings=RunSettings(seed=1)).score(methods["random"]).scores.groups["conv1"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert ((first >= 0) & (first < 1)).all()


def test_taylor_scores_against_autograd(methods, chain: Chain) -> None:
    """|Σ g·w| over each layer's parameters of a channel (weights, biases, γ and β), mean over layers."""
    data = load_data("demo")
    workspace = Workspace(chain, (3, 32, 32), data, settings=RunSettings(batch_size=50))
    before = {k: v.clone() for k, v in chain.state_dict().items()}
    scores = workspace.score(methods["taylor"], {"batches": "2"}).scores
    images = torch.stack([data.calibration[i][0] for i in range(100)])
    labels = torch.tensor([data.calibration[i][1] for i in range(100)])
    params = [chain.conv1.weight, chain.conv1.bias, chain.bn1.weight, chain.bn1.bias, chain.conv2.weight]
    loss = F.cross_entropy(chain(images), labels, reduction="sum")
    g = dict(zip(["w1", "b1", "gamma", "beta", "w2"], torch.autograd.grad(loss, params), strict=True))
    producer = ((chain.conv1.weight * g["w1"]).sum((1, 2, 3)) + chain.conv1.bias * g["b1"]).abs()
    norm = (chain.bn1.weight * g["gamma"] + chain.bn1.bias * g["beta"]).abs()
    consumer = (chain.conv2.weight * g["w2"]).sum((0, 2, 3)).abs()
    expected = ((producer + norm + consumer) / 3).detach()
    assert torch.allclose(scores.groups["conv1"], expected, rtol=1e-3, atol=1e-6)
    assert all(torch.equal(v, chain.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in chain.parameters())


class ChainWithAuxiliary(Chain):
    """The chain plus an auxiliary head used only in training mode, as GoogLeNet and Inception have."""

    def __init__(self) -> None:
        super().__init__()
        self.aux_conv = nn.Conv2d(6, 4, 1)
        self.aux_fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            hidden = torch.relu(self.bn1(self.conv1(x)))
            return self.aux_fc(self.aux_conv(hidden).mean(dim=(2, 3))) + super().forward(x)
        return super().forward(x)


def test_taylor_scores_a_model_whose_auxiliary_head_is_unused_in_eval(methods) -> None:
    """Found by the zoo battery on GoogLeNet: autograd refused the parameters the eval forward never uses."""
    torch.manual_seed(0)
    with_aux = ChainWithAuxiliary().eval()
    plain = Chain().eval()
    plain.load_state_dict(with_aux.state_dict(), strict=False)
    data = load_data("demo")
    settings = RunSettings(batch_size=50)
    scores = Workspace(with_aux, (3, 32, 32), data, settings=settings).score(methods["taylor"], {"batches": "1"})
    reference = Workspace(plain, (3, 32, 32), data, settings=settings).score(methods["taylor"], {"batches": "1"})
    assert set(scores.scores.groups) == set(reference.scores.groups) == {"conv1", "conv2"}  # traced in eval
    for group, values in reference.scores.groups.items():
        assert torch.allclose(scores.scores.groups[group], values, rtol=1e-5), group


def test_every_baseline_scores_every_demo_group(methods) -> None:
    from secateur.core.model.specs import parse_model_spec
    from secateur.core.pruning.loading import load_model

    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"))
    prunable = {g.id: g.channels for g in workspace.groups if g.prunable}
    partials = []
    for method in ("random", "l1", "l2", "bn-scale", "taylor"):
        scores = workspace.score(
            methods[method], {"batches": "1"} if method == "taylor" else {}, on_partial=partials.append
        ).scores
        assert {gid: len(v) for gid, v in scores.groups.items()} == prunable, method
    assert len(partials) == 5 * len(prunable)  # one partial result per group, streamed


class Mixed(nn.Module):
    """Every layer kind the magnitude criterion reads: grouped, depthwise and transposed convs, BatchNorm with
    and without affine, Linear and LayerNorm, all with biases."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.plain_bn = nn.BatchNorm2d(16, affine=False)
        self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.up = nn.ConvTranspose2d(16, 8, 2, stride=2)
        self.up_bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 12)
        self.norm = nn.LayerNorm(12)
        self.head = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        x = self.depthwise(self.plain_bn(self.grouped(x)))
        x = torch.relu(self.up_bn(self.up(x))).mean(dim=(2, 3))
        return self.head(self.norm(self.fc(x)))


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("only_batchnorm", [False, True])
def test_group_magnitude_equals_torch_prunings_importance(p: int, bias: bool, only_batchnorm: bool) -> None:
    """Secateur's one-pass magnitude criterion against Torch-Pruning's own, group by group, on every layer kind."""
    torch.manual_seed(0)
    model = Mixed().eval()
    for norm in (model.bn, model.up_bn, model.norm):
        nn.init.uniform_(norm.weight, -1, 1)
        nn.init.uniform_(norm.bias, -1, 1)
    options = {"p": p, "group_reduction": "mean", "normalizer": None, "bias": bias}
    if only_batchnorm:
        options["target_types"] = [nn.modules.batchnorm._BatchNorm]
    ours, reference = GroupMagnitude(**options), tp.importance.GroupMagnitudeImportance(**options)
    groups = [group for group in _workspace(model).groups if group.handle is not None]
    assert {"stem", "up", "fc"} <= {group.id for group in groups}
    for group in groups:
        expected, got = reference(group.handle), ours(group.handle)
        assert (expected is None) == (got is None), group.id
        if expected is not None:
            assert got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-5, atol=1e-7), group.id


@pytest.mark.parametrize("reduction", ["mean", "sum", "max"])
def test_group_magnitude_reduces_items_in_order_or_not_as_torch_pruning_does(reduction: str) -> None:
    """The in-order fast path and the scatter for permuted roots, partial roots and unmapped (None) roots."""
    generator = torch.Generator().manual_seed(0)
    scores = [torch.rand(6, generator=generator) for _ in range(5)]
    roots = [list(range(6)), [5, 4, 3, 2, 1, 0], [0, 2, 4, 1, 3, 5], [0, None, 2, 3, 4, 5], list(range(6))]
    options = {"p": 1, "group_reduction": reduction, "normalizer": None}
    ours, reference = GroupMagnitude(**options), tp.importance.GroupMagnitudeImportance(**options)
    expected = reference._reduce([s.clone() for s in scores], roots)
    got = ours._reduce([s.clone() for s in scores], roots)
    assert torch.equal(got, expected)  # the same additions in the same order: equal bits
    if reduction != "max":  # the maximum is Torch-Pruning's own code
        in_order = ours._reduce([scores[0], scores[4]], [roots[0], roots[4]])
        assert torch.equal(in_order, (scores[0] + scores[4]) / (2 if reduction == "mean" else 1))
