"""Intra-Fusion: exact on duplicated channels, transport marginals, folding, groups, conformance."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from secateur.core.common.errors import Cancelled
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.contract import Scored
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import GroupPlan, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method
from secateur.plugins.intra_fusion import batchnorm_pairs, fold_batchnorm, l1_cost, transport

DEFAULTS = {"importance": "l1", "batches": 1, "marginals": "uniform", "solver": "emd", "sinkhorn_reg": 0.01}


class Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def method():
    return load_registry().methods["intra-fusion"]


def test_exact_duplicates_are_fused_without_changing_the_function(method) -> None:
    torch.manual_seed(0)
    model = Pair().eval()
    with torch.no_grad():  # channels 4..7 copy 0..3; the consumer's columns are split in halves between copies
        model.conv1.weight[4:] = model.conv1.weight[:4]
        model.conv1.bias[4:] = model.conv1.bias[:4]
        model.conv2.weight[:, :4] /= 2
        model.conv2.weight[:, 4:] = model.conv2.weight[:, :4]
    workspace = Workspace(model, (3, 16, 16))
    plan = PruningPlan("intra-fusion", Target("ratio", 0.5), {"conv1": GroupPlan([0, 1, 2, 3], 8)})
    x = torch.randn(5, 3, 16, 16)
    uniform = Scored(Scores())  # uniform marginals: no importance scores needed
    applied = workspace.apply(plan, method, {**DEFAULTS, "normalization": "average"}, uniform)
    fused, edits = applied.model, list(applied.edits)
    dropped = Workspace(model, (3, 16, 16)).apply(plan).model
    with torch.no_grad():
        expected = model(x)
        assert fused.conv1.out_channels == 4 and edits[0]["kind"] == "prune_channels"
        assert (fused(x) - expected).abs().max() < 1e-5
        assert (dropped(x) - expected).abs().max() > 1e-2


def test_transport_maps_have_the_declared_marginals() -> None:
    rng = torch.Generator().manual_seed(0)
    features = torch.randn(12, 7, generator=rng)
    kept = [1, 4, 6, 9]
    for importance in (None, torch.rand(12, generator=rng) + 0.1):
        plan, t_out, t_in = transport(features, kept, importance, "emd", 0.0)
        a = np.full(12, 1 / 12) if importance is None else (importance / importance.sum()).double().numpy()
        b = np.full(4, 1 / 4) if importance is None else (importance[kept] / importance[kept].sum()).double().numpy()
        assert np.allclose(plan.sum(axis=1), a) and np.allclose(plan.sum(axis=0), b)
        assert torch.allclose(t_out.sum(dim=1), torch.ones(4, dtype=torch.float64))  # rows of T_out average
        assert torch.allclose(t_in.sum(dim=0), torch.ones(12, dtype=torch.float64))  # columns of T_in sum
    _, t_out, _ = transport(features, list(range(12)), None, "emd", 0.0)
    assert torch.allclose(t_out, torch.eye(12, dtype=torch.float64))  # keeping everything is the identity


def test_sinkhorn_stays_finite_on_wide_layers() -> None:
    """Found by the zoo on alexnet's 4096-wide classifier: exp(-cost / reg) underflowed and the plan was NaN."""
    rng = torch.Generator().manual_seed(0)
    features = torch.randn(40, 9216, generator=rng)
    features = features / features.norm(dim=1, keepdim=True)  # as fuse_group normalises them
    kept = list(range(0, 40, 2))
    plan, t_out, t_in = transport(features, kept, None, "sinkhorn", 0.01)
    assert np.isfinite(plan).all() and torch.isfinite(t_out).all() and torch.isfinite(t_in).all()
    assert np.allclose(plan.sum(axis=1), 1 / 40, rtol=1e-3) and np.allclose(plan.sum(axis=0), 1 / 20, rtol=1e-3)
    assert (t_out.argmax(dim=1) == torch.tensor(kept)).all()  # each kept channel mostly keeps itself


def test_the_cost_is_computed_in_chunks_that_check_for_cancel(monkeypatch) -> None:
    """A wide group's cost takes minutes: it is built in chunks, equal to one cdist, with a check before each."""
    import secateur.plugins.intra_fusion as intra_fusion

    rng = torch.Generator().manual_seed(0)
    features, targets = torch.randn(50, 30, generator=rng), torch.randn(7, 30, generator=rng)
    monkeypatch.setattr(intra_fusion, "COST_CHUNK", 10 * 7 * 30)  # ten rows per chunk
    checks: list[int] = []
    cost = l1_cost(features, targets, lambda: checks.append(1))
    assert np.allclose(cost, torch.cdist(features.double(), targets.double(), p=1).numpy())
    assert len(checks) == 5

    def cancel() -> None:
        if checks:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        l1_cost(features, targets, cancel)


def test_the_cost_chunks_run_on_torchs_threads_and_land_in_their_rows(monkeypatch) -> None:
    """On two threads each chunk still writes its own rows (an uneven last chunk included)."""
    import threading

    import secateur.plugins.intra_fusion as intra_fusion

    rng = torch.Generator().manual_seed(1)
    features, targets = torch.randn(53, 30, generator=rng), torch.randn(7, 30, generator=rng)
    monkeypatch.setattr(intra_fusion, "COST_CHUNK", 4 * 7 * 30)  # four rows per chunk, fourteen chunks
    threads: set[int] = set()
    real_cdist = intra_fusion.cdist

    def recorded(*args, **kwargs):
        threads.add(threading.get_ident())
        return real_cdist(*args, **kwargs)

    monkeypatch.setattr(intra_fusion, "cdist", recorded)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cost = l1_cost(features, targets)
    finally:
        torch.set_num_threads(before)
    assert np.allclose(cost, torch.cdist(features.double(), targets.double(), p=1).numpy())
    assert threading.get_ident() not in threads and 1 <= len(threads) <= 2


@pytest.mark.parametrize("spec", ["demo", "demo-vgg"])
def test_batchnorm_folding_keeps_the_logits(spec: str) -> None:
    loaded = load_model(parse_model_spec(spec))
    workspace = Workspace(loaded.model, loaded.input_shape)
    folded = copy.deepcopy(loaded.model)
    pairs = batchnorm_pairs(workspace._prepare().model, workspace.graph)
    fold_batchnorm(folded, pairs)
    x = torch.randn(4, *loaded.input_shape)
    with torch.no_grad():
        assert len(pairs) >= 8 and (folded(x) - loaded.model(x)).abs().max() < 1e-4


@pytest.mark.parametrize("name", ["demo", "resnet18", "mobilenet_v2"])
def test_residual_and_depthwise_groups_stay_consistent(method, name: str) -> None:
    if name == "demo":
        model, shape = load_model(parse_model_spec("demo")).model, (3, 32, 32)
    else:
        model, shape = torchvision.models.get_model(name, weights=None).eval(), (3, 64, 64)
    workspace = Workspace(model, shape)
    scored = workspace.score(method, {"batches": "1"})
    plan = workspace.plan(scored, Target("ratio", 0.4))
    applied = workspace.apply(plan, method, {}, scored)
    fused = applied.model
    assert sum(p.numel() for p in fused.parameters()) == plan.predicted_params
    with torch.no_grad():
        assert torch.isfinite(fused(torch.randn(2, *shape))).all()
    depthwise_notes = [note for note in applied.plan.notes if "depthwise" in note]
    assert bool(depthwise_notes) == (name == "mobilenet_v2")  # reported to the user, plain selection there


def test_conforms_and_refuses_bad_parameters() -> None:
    check_method("intra-fusion", {"batches": 1}, model="demo-vgg")
    from secateur.core.common.errors import InputError
    from secateur.core.pruning.params import validate_params

    spec = load_registry().methods["intra-fusion"].params
    with pytest.raises(InputError, match="parameter importance='magic' is not one of l1, l2"):
        validate_params(spec, {"importance": "magic"}, "intra-fusion")
    with pytest.raises(InputError, match="parameter sinkhorn_reg='0' is out of range"):
        validate_params(spec, {"sinkhorn_reg": "0"}, "intra-fusion")
