"""PAAM: score network against a hand computation, regulariser gradient, gating, folding, pruning, refusals."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.model.export import export_model
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method, state_hash
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.plugins.paam import gate_target, gate_targets, threshold_kept
from secateur.plugins.paam_scores import FilterAttention, Gates, fold_scores, phi, standardised_filters

SHAPE = (3, 16, 16)


class Tiny(nn.Module):
    """Two conv–BN–ReLU layers (both internal channels) and a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    model = Tiny()
    with torch.no_grad():  # BatchNorm statistics and affine parameters away from their defaults
        for norm in (model.bn1, model.bn2):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    return model.eval()


def tiny_data() -> DataBundle:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, *SHAPE, generator=generator)
    labels = images.mean(dim=(2, 3)).argmax(1)  # learnable: the brightest colour channel
    split = TensorDataset(images, labels)
    return DataBundle("tiny", split, split, split, ["a", "b", "c", "d"], SHAPE)


def randomise(gates: Gates, seed: int = 1) -> None:
    """Score networks away from their initialisation, so scores differ per filter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for network in gates.networks.values():
            network.value.copy_(torch.randn(network.value.shape, generator=generator) * 0.3)
            network.bias.fill_(-0.2)


@pytest.fixture(scope="module")
def method():
    return load_registry().methods["paam"]


def test_scores_match_a_hand_computation_and_start_at_one() -> None:
    weight = torch.randn(5, 3, 3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    network = FilterAttention(27, 4, torch.Generator().manual_seed(0)).double()
    assert torch.equal(network(standardised_filters(weight)), torch.ones(5, dtype=torch.float64))  # w_V = 0, β₀ = 0
    with torch.no_grad():
        network.value.copy_(torch.linspace(-2, 2, 27, dtype=torch.float64))
        network.bias.fill_(-0.5)
    rows = weight.reshape(5, 27)
    x = (rows - rows.mean(1, keepdim=True)) / torch.sqrt(rows.var(1, unbiased=False, keepdim=True) + 1e-5)
    q, k, v = network.query.detach(), network.key.detach(), network.value.detach()
    expected = []
    for c in range(5):
        logits = [float(x[c] @ q @ (x[j] @ k)) / math.sqrt(4) for j in range(5)]
        weights = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
        u = sum(float(weights[j]) * float(x[j] @ v) for j in range(5)) - 0.5
        expected.append(math.exp(u) if u < 0 else 1 + u)
    scores = network(standardised_filters(weight)).detach()
    assert scores.shape == (5,) and (scores > 0).all()
    assert torch.allclose(scores, torch.tensor(expected, dtype=torch.float64), atol=1e-10)
    u = torch.tensor([-50.0, -1.0, 0.0, 2.0])
    assert torch.allclose(phi(u), torch.tensor([math.exp(-50), math.exp(-1), 1.0, 3.0]))
    assert (phi(u) > 0).all()


def test_regulariser_gradient_is_the_mean_of_phi_prime() -> None:
    model = tiny_model()
    targets = gate_targets(Workspace(model, SHAPE).context())
    assert [t.group for t in targets] == ["conv1", "conv2"]
    gates = Gates(model, targets, 4, torch.Generator().manual_seed(0))
    model(torch.randn(2, *SHAPE))
    bias = [network.bias for network in gates.networks.values()]
    grads = torch.autograd.grad(gates.penalty(), bias)
    assert [float(g) for g in grads] == pytest.approx([8 / 14, 6 / 14])  # φ'(0) = 1: each filter weighs 1/N
    randomise(gates)
    model(torch.randn(2, *SHAPE))
    network, conv = gates.networks["0"], model.conv1
    value_grad, weight_grad = torch.autograd.grad(gates.penalty(), [network.value, conv.weight])
    with torch.no_grad():  # d mean(s)/d w_V = Σ_c φ'(u_c) (A X)_c / N, N = 14 gated filters
        rows = conv.weight.flatten(1)
        xs = (rows - rows.mean(1, keepdim=True)) / torch.sqrt(rows.var(1, unbiased=False, keepdim=True) + 1e-5)
        attention = torch.softmax((xs @ network.query) @ (xs @ network.key).T / 2, dim=1)
        u = attention @ xs @ network.value + network.bias
        slope = torch.where(u < 0, torch.exp(u), torch.ones_like(u))
    expected = (slope[:, None] * (attention @ xs)).sum(0) / 14
    assert torch.allclose(value_grad, expected, atol=1e-6)
    assert weight_grad.abs().sum() > 0  # the penalty reaches the filter weights through the scores


def test_gates_multiply_the_feature_maps_and_start_as_the_identity() -> None:
    model = tiny_model()
    x = torch.randn(3, *SHAPE)
    with torch.no_grad():
        plain_logits, plain_norm = model(x), model.bn1(model.conv1(x))
    gates = Gates(model, gate_targets(Workspace(model, SHAPE).context()), 4, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), plain_logits)  # s ≡ 1 at initialisation: logits unchanged
        randomise(gates)
        model(x)  # a forward pass computes the scores once; the BatchNorm hooks use them
        scores = gates.scores()
        gated = model.bn1(model.conv1(x))
    assert torch.allclose(gated, plain_norm * scores["conv1"].view(1, -1, 1, 1), atol=1e-6)
    assert not torch.allclose(scores["conv1"], torch.ones(8))
    gates.remove()
    with torch.no_grad():
        assert torch.equal(model(x), plain_logits)


def test_folding_the_scores_into_batchnorm_keeps_the_logits() -> None:
    model = tiny_model()
    gates = Gates(model, gate_targets(Workspace(model, SHAPE).context()), 4, torch.Generator().manual_seed(0))
    randomise(gates)
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        gated = model(x)
        scores = gates.scores()
        gates.remove()
        fold_scores(model, gates.targets, scores)
        assert (model(x) - gated).abs().max() < 1e-5


def test_shared_residual_scores_fold_exactly_on_the_demo_resnet() -> None:
    model = load_model(parse_model_spec("demo")).model
    targets = gate_targets(Workspace(model, (3, 32, 32)).context(), "shared")
    residual = [t for t in targets if len(t.pairs) > 1]
    assert len(targets) == 12 and len(residual) == 3  # 9 internal groups and one residual stream per stage
    assert residual[0].pairs[0] == ("conv1", "bn1") and len(residual[0].pairs) == 4  # the stem and 3 blocks
    gates = Gates(model, targets, 8, torch.Generator().manual_seed(0))
    randomise(gates)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        gated = model(x)
        scores = gates.scores()
        gates.remove()
        fold_scores(model, targets, scores)
        assert (model(x) - gated).abs().max() < 1e-5


def test_removing_zero_scored_channels_keeps_the_outputs(method, tmp_path) -> None:
    model, data = tiny_model(), tiny_data()
    workspace = Workspace(model, SHAPE, data, settings=RunSettings(batch_size=16))
    scored = workspace.score(method, {"epochs": 1, "max_steps": 2, "lambda": 0.0})
    scores, state = scored.scores, scored.state
    state.scores["conv1"][[1, 4, 6]] = 1e-30  # numerically zero gates
    state.scores["conv2"][[0]] = 0.0
    x = torch.randn(5, *SHAPE)
    with torch.no_grad():
        reference = state.model(x)  # the trained network without gates
    plan = workspace.plan(scores, Target("ratio", 0.3))
    applied = workspace.apply(plan, method, {"threshold": 0.05, "recalibrate_bn": False}, scored)
    pruned, edits = applied.model, list(applied.edits)
    assert (pruned.conv1.out_channels, pruned.conv2.out_channels) == (5, 5)
    assert edits == [{"kind": "prune_channels", "groups": {"conv1": [1, 4, 6], "conv2": [0]}}]
    assert applied.plan.predicted_params == sum(p.numel() for p in pruned.parameters()) != plan.predicted_params
    assert any("τ = 0.05" in note and "10 gated channels kept" in note for note in applied.plan.notes)
    assert not any("τ" in note for note in plan.notes)  # the plan handed to apply is unchanged
    folded_scores = {k: v.clone() for k, v in state.scores.items()}
    with torch.no_grad():
        gated = Tiny()
        gated.load_state_dict(state.model.state_dict())
        fold_scores(gated.eval(), state.targets, folded_scores)
        assert (pruned(x) - gated(x)).abs().max() < 1e-6  # removal is exact where the gate is zero
        assert (gated(x) - reference).abs().max() > 1e-3  # and the zeroed gates did change the function
        exported = torch.export.load(export_model(pruned, SHAPE, "pt2", tmp_path / "pruned.pt2")).module()
        assert (exported(x[:1]) - pruned(x[:1])).abs().max() < 1e-6  # exported for a batch of one
    recalibrated = workspace.apply(plan, method, {"threshold": 0.05}, scored).model
    recalibrate_batchnorm(pruned, data.loader("calibration", 16), torch.device("cpu"))  # the same, by hand
    assert torch.allclose(recalibrated.bn2.running_var, pruned.bn2.running_var)
    assert not torch.allclose(recalibrated.bn2.running_var, state.model.bn2.running_var[1:])


def test_batchnorm_statistics_are_those_of_the_trained_scores(method) -> None:
    workspace = Workspace(tiny_model(), SHAPE, tiny_data(), settings=RunSettings(batch_size=16))
    state = workspace.score(method, {"epochs": 1, "max_steps": 2, "lambda": 20.0}).state
    folded = copy.deepcopy(state.model)
    fold_scores(folded, state.targets, state.scores)
    expected = copy.deepcopy(folded)  # statistics recomputed another way: on the folded network
    recalibrate_batchnorm(expected, tiny_data().loader("train", 16), torch.device("cpu"), max_batches=2)
    for name in ("bn1", "bn2"):
        ours, theirs = getattr(folded, name), getattr(expected, name)
        assert torch.allclose(ours.running_mean, theirs.running_mean, atol=1e-5)
        assert torch.allclose(ours.running_var, theirs.running_var, atol=1e-5)
    assert state.scores["conv1"].max() < 0.9  # the scores did move, so stale statistics would differ


def test_threshold_rule_keeps_at_least_one_filter() -> None:
    assert threshold_kept(torch.tensor([0.9, 0.01, 0.3, 0.04]), 0.05) == [0, 2]
    assert threshold_kept(torch.tensor([0.01, 0.03, 0.02]), 0.05) == [1]


def test_lambda_drives_scores_down_monotonically(method) -> None:
    means, kept = [], []
    for value in (0.0, 2.0, 20.0):
        workspace = Workspace(tiny_model(), SHAPE, tiny_data(), settings=RunSettings(batch_size=16))
        scores = workspace.score(method, {"epochs": 2, "max_steps": 4, "lambda": value}).scores
        values = torch.cat(list(scores.groups.values()))
        means.append(float(values.mean()))
        kept.append(sum(len(threshold_kept(v, 0.5)) for v in scores.groups.values()))
    assert abs(means[0] - 1.0) < 0.05  # λ = 0: the scores stay near 1
    assert means[0] > means[1] > means[2] and kept[0] > kept[1] > kept[2]


def test_cancellation_leaves_the_model_and_refuses_apply(method) -> None:
    model = tiny_model()
    before = state_hash(model)
    workspace = Workspace(model, SHAPE, tiny_data(), settings=RunSettings(batch_size=16))
    calls = {"count": 0}

    def report(stage: str, done: int, total: int) -> None:
        calls["count"] += 1

    with pytest.raises(Cancelled):
        workspace.score(method, {"epochs": 3}, Progress(report, lambda: calls["count"] >= 2))
    assert state_hash(model) == before and state_hash(workspace.context().model) == before
    l1 = workspace.score(load_registry().methods["l1"])
    plan = workspace.plan(l1, Target("ratio", 0.3))
    with pytest.raises(InputError, match="paam: run its scoring first"):
        workspace.apply(plan, method, {}, l1)  # another method's scores carry no trained network


def test_models_covered_and_refused() -> None:
    demo = Workspace(load_model(parse_model_spec("demo")).model, (3, 32, 32)).context()
    assert [t.group for t in gate_targets(demo)] == [f"layer{s}.{b}.conv1" for s in (1, 2, 3) for b in range(3)]
    stem = next(group for group in demo.groups if group.id == "conv1")
    assert "tied by a residual addition" in gate_target(demo, stem)
    resnet = Workspace(torchvision.models.resnet18(weights=None).eval(), (3, 32, 32)).context()
    assert [t.pairs for t in gate_targets(resnet)][:2] == [
        (("layer1.0.conv1", "layer1.0.bn1"),),
        (("layer1.1.conv1", "layer1.1.bn1"),),
    ]
    assert len(gate_targets(resnet)) == 8  # one internal group per basic block; residual channels kept whole
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 2)).eval()
    with pytest.raises(InputError, match="paam needs convolutions followed by BatchNorm"):
        gate_targets(Workspace(plain, SHAPE).context())


def test_vgg11_bn_gates_every_conv() -> None:
    model = torchvision.models.vgg11_bn(weights=None, num_classes=10).eval()
    targets = gate_targets(Workspace(model, (3, 32, 32)).context())
    assert [t.pairs[0][1] for t in targets] == [f"features.{i + 1}" for i in (0, 4, 8, 11, 15, 18, 22, 25)]


def test_bad_parameters_are_refused(method) -> None:
    with pytest.raises(InputError, match="parameter lambda='-1' is out of range"):
        validate_params(method.params, {"lambda": "-1"}, "paam")
    with pytest.raises(InputError, match=r"parameter threshold='1\.5' is out of range"):
        validate_params(method.params, {"threshold": "1.5"}, "paam")
    with pytest.raises(InputError, match="parameter epochs='0' is out of range"):
        validate_params(method.params, {"epochs": "0"}, "paam")
    with pytest.raises(InputError, match="method paam needs data"):
        Workspace(tiny_model(), SHAPE).score(method, {})


def test_conforms_and_round_trips_without_score_modules(method) -> None:
    report = check_method("paam", {"epochs": 1, "max_steps": 1, "threshold": 0.0}, model="demo-vgg")
    assert report.params_after < report.params_before and report.scored_groups == 8
    loaded = load_model(parse_model_spec("demo-vgg"))
    workspace = Workspace(loaded.model, loaded.input_shape, tiny_data_32(), settings=RunSettings(batch_size=16))
    scored = workspace.score(method, {"epochs": 1, "max_steps": 1})
    pruned = workspace.apply(workspace.plan(scored, Target("ratio", 0.3)), method, {"threshold": 0.0}, scored).model
    assert set(pruned.state_dict()) == set(loaded.model.state_dict())  # no score network in the saved model
    assert not any(m._forward_hooks for m in pruned.modules())


def tiny_data_32() -> DataBundle:
    generator = torch.Generator().manual_seed(0)
    split = TensorDataset(
        torch.randn(32, 3, 32, 32, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    )
    return DataBundle("tiny32", split, split, split, [str(i) for i in range(10)], (3, 32, 32))
