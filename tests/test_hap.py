"""HAP: Hutchinson traces against the exact Hessian, sensitivities per group, implants, conformance."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.func import functional_call
from torch.utils.data import TensorDataset

from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.export import export_model
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.contract import Scored
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import GroupPlan, PlanOptions, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.surgery import apply_plan
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method
from secateur.plugins import hap
from secateur.plugins.hap import hutchinson_channel_traces
from secateur.plugins.hap_implants import ImplantedConv2d, implantable, reorder_group, reorder_problem

PROBES = 5000


class Tiny(nn.Module):
    """197 weights: a residual pair (conv0 and conv1 produce the same channels), a strided conv, a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(3, 2, 3, stride=2, padding=1, bias=False)
        self.fc = nn.Linear(2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.tanh(self.conv0(x))
        y = torch.tanh(y + self.conv1(y))
        return self.fc(torch.tanh(self.conv2(y)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def method():
    return load_registry().methods["hap"]


@pytest.fixture
def one_thread():
    """Tiny tensors: thousands of small Hessian-vector products run faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny(one_thread) -> tuple[Tiny, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = Tiny().eval()
    with torch.no_grad():
        for layer in (model.conv0, model.conv1, model.conv2):
            layer.weight.mul_(3.0)  # larger weights: curvature well away from zero
    images = torch.randn(16, 2, 6, 6, generator=torch.Generator().manual_seed(1))
    labels = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(2))
    return model, images, labels


LAYERS = ("conv0", "conv1", "conv2", "fc")


def _exact_channel_traces(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Tr(H_cc) per output channel of every weight, from the full Hessian (float64)."""
    model = model.double()
    shapes = {name: getattr(model, name).weight.shape for name in LAYERS}
    sizes = [shapes[name].numel() for name in LAYERS]
    theta = torch.cat([getattr(model, name).weight.detach().flatten() for name in LAYERS])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(LAYERS, flat.split(sizes), strict=True))
        weights = {f"{name}.weight": parts[name].view(shapes[name]) for name in LAYERS}
        return F.cross_entropy(functional_call(model, weights, (images.double(),)), labels)

    diagonal = torch.autograd.functional.hessian(loss, theta).diagonal()
    model.float()
    return {
        name: part.view(shapes[name][0], -1).sum(1) for name, part in zip(LAYERS, diagonal.split(sizes), strict=True)
    }


def _traces(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, probes: int, chunks: int = 1):
    weights = [getattr(model, name).weight for name in LAYERS]
    parts = list(zip(images.chunk(chunks), labels.chunk(chunks), strict=True))
    losses = (F.cross_entropy(model(x), y, reduction="sum") / len(labels) for x, y in parts)
    return hutchinson_channel_traces(weights, [0] * len(weights), losses, probes, seed=0)


def test_hutchinson_matches_the_exact_hessian_per_channel_and_per_layer(tiny) -> None:
    model, images, labels = tiny
    assert sum(getattr(model, name).weight.numel() for name in LAYERS) == 197
    exact = _exact_channel_traces(model, images, labels)
    estimates = _traces(model, images, labels, PROBES)
    for name, samples in zip(LAYERS, estimates, strict=True):
        assert samples.shape == (PROBES, len(exact[name]))
        error = (samples.mean(0) - exact[name]).abs()
        bound = 4 * samples.std(0) / PROBES**0.5
        assert (error <= bound).all(), f"{name}: |estimate − exact| {error} exceeds 4·sd/√N {bound}"
        layer = samples.sum(1)  # the per-channel traces add up to the layer's trace, probe by probe
        assert abs(layer.mean() - exact[name].sum()) <= 4 * layer.std() / PROBES**0.5
    assert any((e.abs() > 1e-3).any() for e in exact.values())  # not a trivially flat loss


def test_chunks_share_each_probe(tiny) -> None:
    model, images, labels = tiny
    whole = _traces(model, images, labels, 7)
    chunked = _traces(model, images, labels, 7, chunks=4)
    for a, b in zip(whole, chunked, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_one_probe_is_exact_for_a_diagonal_quadratic() -> None:
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(5, 3, 2, dtype=torch.float64, generator=generator, requires_grad=True)  # channels along dim 0
    columns = torch.randn(4, 6, dtype=torch.float64, generator=generator, requires_grad=True)  # along dim 1
    d_rows = torch.randn(5, 3, 2, dtype=torch.float64, generator=generator)
    d_columns = torch.randn(4, 6, dtype=torch.float64, generator=generator)
    loss = 0.5 * ((d_rows * rows**2).sum() + (d_columns * columns**2).sum())
    traces = hutchinson_channel_traces([rows, columns], [0, 1], [loss], probes=1, seed=3)
    assert torch.allclose(traces[0][0], d_rows.reshape(5, -1).sum(1), rtol=0, atol=1e-12)
    assert torch.allclose(traces[1][0], d_columns.sum(0), rtol=0, atol=1e-12)


def test_cancellation_is_checked_between_the_gradient_and_each_probe() -> None:
    weight = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    reports: list[tuple[int, int]] = []

    def cancel_at_once(done: int, total: int) -> None:
        reports.append((done, total))
        raise Cancelled("cancelled by the user")

    losses = ((weight**3).sum() for _ in range(2))
    with pytest.raises(Cancelled):
        hutchinson_channel_traces([weight], [0], losses, probes=4, seed=0, progress=cancel_at_once, chunks=2)
    assert reports == [(0, 8)]  # asked before the first Hessian-vector product, not after a probe


def _bundle(images: torch.Tensor, labels: torch.Tensor) -> DataBundle:
    dataset = TensorDataset(images, labels)
    return DataBundle("tiny", dataset, dataset, dataset, [str(c) for c in range(4)], (2, 6, 6))


def test_scores_are_sensitivities_summed_over_the_producers(method, tiny) -> None:
    model, images, labels = tiny
    workspace = Workspace(model, (2, 6, 6), _bundle(images, labels), settings=RunSettings(batch_size=16))
    scores = workspace.score(method, {"probes": 500, "batches": 1}).scores
    residual = next(group.id for group in workspace.groups if "conv0" in group.layers and "conv1" in group.layers)
    assert set(scores.groups) == {residual, "conv2"}  # fc's outputs are the classes: never scored
    exact = _exact_channel_traces(model, images, labels)
    samples = dict(zip(LAYERS, _traces(model, images, labels, 500), strict=True))

    def factor(name: str) -> torch.Tensor:  # ‖W[c]‖² / numel(W[c])
        weight = getattr(model, name).weight.detach().double()
        return weight.pow(2).reshape(weight.shape[0], -1).mean(1)

    for group, producers in ((residual, ("conv0", "conv1")), ("conv2", ("conv2",))):
        per_probe = sum(samples[name] * factor(name) for name in producers)
        assert torch.allclose(scores.groups[group].double(), per_probe.mean(0), rtol=1e-5)  # same probes
        expected = sum(exact[name] * factor(name) for name in producers)
        bound = 4 * per_probe.std(0) / 500**0.5
        assert ((scores.groups[group].double() - expected).abs() <= bound).all()


# --- implants ---------------------------------------------------------------------------------


def test_implantable_convolutions() -> None:
    assert implantable(nn.Conv2d(4, 8, 3, padding=1)) and implantable(nn.Conv2d(4, 8, 3, stride=2, padding=1))
    assert implantable(nn.Conv2d(4, 8, 5, padding=4, dilation=2)) and implantable(nn.Conv2d(4, 8, 3, padding="same"))
    assert not implantable(nn.Conv2d(4, 8, 1))  # already 1×1
    assert not implantable(nn.Conv2d(4, 8, 3))  # uncentred: a 1×1 would not line up
    assert not implantable(nn.Conv2d(4, 8, 3, padding=1, groups=4))
    assert not implantable(nn.Linear(4, 8)) and not implantable(nn.ConvTranspose2d(4, 8, 3, padding=1))


@pytest.mark.parametrize("implanted", [[1, 4], [4, 5]])  # scattered, and the tail (no permutation needed)
def test_an_implant_is_the_centre_tap_of_its_kernel(implanted: list[int]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1).eval()
    module = ImplantedConv2d.from_conv(conv, implanted)
    assert module.scattered == (implanted == [1, 4]) and module.out_channels == 6
    x = torch.randn(2, 4, 9, 9)
    with torch.no_grad():
        zeroed = conv(x)
        zeroed[:, implanted] = 0  # zero-initialised implants: those channels output 0 (no bias)
        assert torch.equal(module(x), zeroed)
        module.implant.weight.normal_()
        reference = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        reference.load_state_dict(conv.state_dict())
        reference.weight[implanted] = 0
        reference.weight[implanted, :, 1, 1] = module.implant.weight[:, :, 0, 0]
        reference.bias[implanted] = 0
        assert torch.allclose(module(x), reference(x), atol=1e-6)


@pytest.mark.parametrize("name", ["demo", "mobilenet_v2"])  # residual groups; depthwise consumers
def test_reordering_a_group_keeps_the_function(name: str) -> None:
    if name == "demo":
        model, shape = load_model(parse_model_spec("demo")).model, (3, 32, 32)
    else:
        model, shape = torchvision.models.get_model(name, weights=None).eval(), (3, 32, 32)
    workspace = Workspace(model, shape)
    context = workspace.context()
    names = {module: n for n, module in context.model.named_modules()}
    reordered_model = copy.deepcopy(context.model)
    generator = torch.Generator().manual_seed(0)
    reordered = 0
    for group in context.groups:
        members = list(context.members(group))
        if reorder_problem(members, group.channels) is None:
            order = torch.randperm(group.channels, generator=generator).tolist()
            reorder_group(reordered_model, members, names, order)
            reordered += 1
    assert reordered >= len(context.groups) // 2
    x = torch.randn(2, *shape)
    with torch.no_grad():
        assert (reordered_model(x) - context.model(x)).abs().max() < 1e-4


_RELOAD = """
import sys, torch
from secateur.core import load_checkpoint
with torch.no_grad():
    torch.save(load_checkpoint(sys.argv[1])(torch.load(sys.argv[2])), sys.argv[3])
"""


IMPLANT_RATIO = 0.9  # high enough that the residual groups, whose L1 scores rank low, take implants too


@pytest.fixture(scope="module")
def implanted(method):
    """The demo ResNet, 50% of its channels removed (global ranking, cap 0.95), the top 90% of them implanted.

    The implant surgery does not depend on how the scores were made, so L1 scores stand in for Hessian
    traces here (handed to apply as HAP's scoring state); the conformance test runs the Hessian path.
    """
    loaded = load_model(parse_model_spec("demo"))
    workspace = Workspace(loaded.model, loaded.input_shape)
    scores = workspace.score(load_registry().methods["l1"]).scores
    params = validate_params(method.params, {"implant_ratio": IMPLANT_RATIO}, "hap")
    plan = workspace.plan(scores, Target("ratio", 0.5), PlanOptions(global_ranking=True, max_layer_ratio=0.95))
    applied = workspace.apply(plan, method, params, Scored(scores, hap.HapState(scores, 0)))
    pruned, edits = applied.model, list(applied.edits)
    return loaded, workspace, applied.plan, pruned, edits, scores


def test_implants_start_at_zero_and_keep_the_other_channels(implanted) -> None:
    _, workspace, plan, pruned, edits, scores = implanted
    modules = {name: m for name, m in pruned.named_modules() if isinstance(m, ImplantedConv2d)}
    assert [edit["kind"] for edit in edits] == ["prune_channels", "hap_implants"]
    assert set(modules) == set(edits[1]["layers"]) and len(modules) >= 8
    assert {"layer3.0.conv2", "layer3.1.conv2", "layer3.2.conv2"} <= set(modules)  # a residual group reordered
    assert not any(m.scattered for m in modules.values())  # the groups were reordered: implants come last
    assert any("implant parameters" in note for note in plan.notes)
    extra = sum(p.numel() for p in pruned.parameters()) - plan.predicted_params
    assert extra > sum(m.implant.weight.numel() for m in modules.values()) > 0
    # the same plan with the implanted channels dropped gives exactly the plan's size
    plain = workspace.apply(plan).model
    assert sum(p.numel() for p in plain.parameters()) == plan.predicted_params
    # reference: the plan with the implanted channels kept in place and their k×k kernels zeroed
    context = workspace.context()
    candidates = hap.implant_candidates(context)
    chosen = hap.choose_implants(plan, scores, candidates, IMPLANT_RATIO)
    reference = copy.deepcopy(context.model)
    with torch.no_grad():
        for group_id, channels in chosen.items():
            for layer in candidates[group_id]:
                reference.get_submodule(layer).weight[channels] = 0
    kept = {g: GroupPlan(sorted({*p.kept, *chosen.get(g, [])}), p.total) for g, p in plan.groups.items()}
    reference, _ = apply_plan(reference, PruningPlan("hap", plan.target, kept), context.example)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (pruned(x) - reference(x)).abs().max() < 1e-4


def test_implanted_model_round_trips_exports_and_prunes_again(implanted, tmp_path: Path) -> None:
    loaded, _, _, pruned, edits, _ = implanted
    with torch.no_grad():
        for module in pruned.modules():
            if isinstance(module, ImplantedConv2d):
                module.implant.weight.normal_(0, 0.1)  # as after fine-tuning: the implants matter
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = pruned(example)
    info = CheckpointInfo(loaded.spec, loaded.input_shape, edits, {"method": "hap"})
    path = save_checkpoint(tmp_path / "hap.safetensors", pruned, info)
    torch.save(example, tmp_path / "x.pt")
    result = subprocess.run(
        [sys.executable, "-c", _RELOAD, str(path), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (torch.load(tmp_path / "y.pt") - expected).abs().max() <= 1e-5

    onnx_path = export_model(pruned, (3, 32, 32), "onnx", tmp_path / "hap.onnx")
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {session.get_inputs()[0].name: example[:1].numpy()})
    assert np.abs(output - expected[:1].numpy()).max() <= 1e-4

    # Torch-Pruning traces the implanted model exactly, so it can be pruned again and still reload
    again = Workspace(pruned, (3, 32, 32))
    plan = again.plan(again.score(load_registry().methods["l1"]).scores, Target("ratio", 0.3))
    applied = again.apply(plan)
    twice, more = applied.model, list(applied.edits)
    assert sum(p.numel() for p in twice.parameters()) == plan.predicted_params
    info = CheckpointInfo(loaded.spec, (3, 32, 32), edits + more)
    path = save_checkpoint(tmp_path / "twice.safetensors", twice, info)
    with torch.no_grad():
        assert (load_checkpoint(path)(example) - twice(example)).abs().max() <= 1e-5


def test_damaged_implant_edits_are_refused(implanted, tmp_path: Path) -> None:
    loaded, _, _, pruned, edits, _ = implanted
    layer = next(iter(edits[1]["layers"]))
    for layers, message in (
        ({"nowhere": [0]}, "names layer 'nowhere'"),
        ({"fc": [0]}, "not an implantable conv"),
        ({layer: [10_000]}, "must be some, not all"),
    ):
        bad = [edits[0], {"kind": "hap_implants", "layers": layers}]
        path = save_checkpoint(tmp_path / "bad.safetensors", pruned, CheckpointInfo(loaded.spec, (3, 32, 32), bad))
        with pytest.raises(InputError, match=message):
            load_checkpoint(path)


# --- the method as a whole ---------------------------------------------------------------------


def test_conforms(method) -> None:
    report = check_method("hap", {"probes": 1, "batches": 1}, model="demo-vgg")
    assert report.partial_results == report.scored_groups > 0
    assert report.params_after < report.params_before


def test_without_implants_the_plan_is_applied_as_is(method, tiny) -> None:
    model, images, labels = tiny
    workspace = Workspace(model, (2, 6, 6), _bundle(images, labels), settings=RunSettings(batch_size=16))
    params = {"probes": 3, "batches": 1, "implant_ratio": 0.0}
    scored = workspace.score(method, params)
    plan = workspace.plan(scored, Target("ratio", 0.4))
    applied = workspace.apply(plan, method, params, scored)
    pruned, edits = applied.model, list(applied.edits)
    assert [edit["kind"] for edit in edits] == ["prune_channels"]
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"probes": "0"}, "parameter probes='0' is out of range"),
        ({"batches": "many"}, "parameter batches='many' is not a int"),
        ({"chunk_size": 0}, "parameter chunk_size=0 is out of range"),
        ({"implant_ratio": "1.5"}, "parameter implant_ratio='1.5' is out of range"),
        ({"implant_ratio": "-0.1"}, "parameter implant_ratio='-0.1' is out of range"),
        ({"ratio": "0.5"}, "unknown parameter 'ratio'"),
    ],
)
def test_bad_parameters_are_refused(method, params: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_params(method.params, params, "hap")
