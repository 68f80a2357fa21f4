"""pxp: LRP conservation on real architectures, a hand-computed toy, rules, refusals, search, conformance."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import LRP
from torch import nn
from torch.fx.experimental.optimization import fuse

from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.explain.canonize import canonize, zero_biases
from secateur.core.explain.lrp import Composite, channel_map, channel_relevance, input_relevance, target_logits
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method
from secateur.plugins.pxp import candidates, group_scores, layer_importance, reference_batches, search_rules

EXACT = Composite(epsilon=1e-9)
TOLERANCE = 1e-4  # relative error of Σ input relevance against the explained logit (float32, ε = 1e-9)
SPECS = {"demo": 32, "demo-vgg": 32, "torchvision:resnet18": 64, "torchvision:resnet50": 64}


def _model(spec: str) -> nn.Module:
    return load_model(parse_model_spec(spec), with_weights=spec.startswith("demo")).model.eval()


def _inputs(size: int, count: int = 2) -> torch.Tensor:
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def _relative_error(relevance: torch.Tensor, logits: torch.Tensor) -> float:
    return float(((relevance.flatten(1).sum(1) - logits).abs() / logits.abs()).max())


@pytest.mark.parametrize("spec", list(SPECS))
def test_epsilon_rule_conserves_relevance_after_canonisation(spec: str) -> None:
    model = canonize(_model(spec))
    zero_biases(model)
    x = _inputs(SPECS[spec])
    with torch.no_grad():
        targets = model(x).argmax(1)  # the predicted class: its logit is not tiny even with random weights
    logits = target_logits(model, x, targets)
    assert _relative_error(input_relevance(model, EXACT, x, targets), logits) < TOLERANCE
    for name, values in channel_relevance(model, EXACT, x, targets).items():
        if spec == "demo-vgg":  # a chain: every layer's relevance sums to the initial relevance 1
            assert torch.allclose(values.sum(1), torch.ones(2), atol=TOLERANCE), name


class Activations(nn.Module):
    """A conv chain through every pass-through activation, one of them called twice (as a block reuses one)."""

    def __init__(self) -> None:
        super().__init__()
        kinds = [nn.ReLU6(inplace=True), nn.SiLU(), nn.GELU(), nn.Hardswish(), nn.LeakyReLU(0.1), nn.Mish()]
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(len(kinds)))
        self.acts = nn.ModuleList(kinds)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, act in zip(self.convs, self.acts, strict=True):
            x = act(conv(x))
        return self.fc(self.acts[0](x).mean(dim=(2, 3)))


def test_relevance_passes_through_elementwise_activations_unchanged() -> None:
    """ReLU6, SiLU, GELU, Hardswish, LeakyReLU, Mish (MobileNet, EfficientNet, ConvNeXt): conserved layer by layer."""
    torch.manual_seed(0)
    original = Activations().eval()
    model = canonize(original)
    x = _inputs(8)
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-6)  # the same function, in-place ReLU6 or not
        zero_biases(model)
        targets = model(x).argmax(1)
    logits = target_logits(model, x, targets)
    assert _relative_error(input_relevance(model, EXACT, x, targets), logits) < TOLERANCE
    per_layer = channel_relevance(model, EXACT, x, targets)
    assert len(per_layer) == 7
    for name, values in per_layer.items():  # a chain: every layer's relevance sums to the initial relevance 1
        assert torch.allclose(values.sum(1), torch.ones(2), atol=TOLERANCE), name


def test_functional_addition_breaks_conservation_on_the_demo_resnet() -> None:
    folded = fuse(_model("demo"))  # BatchNorm folded, but the residual `+` left functional
    zero_biases(folded)
    x = _inputs(32)
    with torch.no_grad():
        targets = folded(x).argmax(1)
    relevance = LRP(folded).attribute(x.clone().requires_grad_(True), target=targets.tolist()).detach()
    assert _relative_error(relevance, target_logits(folded, x, targets)) > 0.1


def test_zplus_relevance_is_non_negative_and_alphabeta_conserves() -> None:
    model = canonize(_model("demo-vgg"))
    zero_biases(model)
    x = _inputs(32)
    with torch.no_grad():
        targets = model(x).argmax(1)
    zplus = Composite("zplus", "zplus", "zplus", "zplus")
    assert all((values >= 0).all() for values in channel_relevance(model, zplus, x, targets).values())
    alphabeta = Composite("alphabeta", "alphabeta", "alphabeta", "epsilon", epsilon=1e-9, alpha=2.0)
    assert _relative_error(input_relevance(model, alphabeta, x, targets), target_logits(model, x, targets)) < 1e-3
    # α = 1, β = 0 is the z⁺ rule computed by captum's own Alpha1_Beta0_Rule
    one = channel_relevance(model, Composite("alphabeta", "alphabeta", "alphabeta", "zplus", alpha=1.0), x, targets)
    for name, values in channel_relevance(model, zplus, x, targets).items():
        assert torch.allclose(values, one[name], rtol=1e-4, atol=1e-6), name


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 1, bias=False)
        self.conv2 = nn.Conv2d(2, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _hand_relevance(model: Toy, x: np.ndarray, target: int) -> tuple[np.ndarray, np.ndarray]:
    """ε → 0 LRP of the toy, written out: initial relevance 1 on the target logit."""
    w1 = model.conv1.weight.detach().numpy()[:, 0, 0, 0]
    w2 = model.conv2.weight.detach().numpy()[:, :, 0, 0]
    v = model.fc.weight.detach().numpy()[target]
    a1 = np.maximum(0, w1[:, None, None] * x[None])  # (2, H, W)
    z2 = np.einsum("ck,khw->chw", w2, a1)
    a2 = np.maximum(0, z2)
    pooled = a2.mean(axis=(1, 2))
    logit = float(v @ pooled)
    r_pool = v * pooled / logit  # ε rule at the linear layer
    r2 = a2 / (a2.size / 2 * pooled)[:, None, None] * r_pool[:, None, None]  # ε rule at the average pool
    r1 = np.zeros_like(a1)
    for c in range(2):
        for k in range(2):
            r1[k] += np.where(z2[c] != 0, a1[k] * w2[c, k] / np.where(z2[c] != 0, z2[c], 1), 0) * r2[c]
    return r1.sum(axis=(1, 2)), r2.sum(axis=(1, 2))


def test_relevance_of_a_toy_network_matches_a_hand_computation() -> None:
    toy = Toy().eval()
    with torch.no_grad():
        toy.conv1.weight.copy_(torch.tensor([1.0, -0.5]).reshape(2, 1, 1, 1))
        toy.conv2.weight.copy_(torch.tensor([[0.8, -0.3], [0.5, 0.9]]).reshape(2, 2, 1, 1))
        toy.fc.weight.copy_(torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0.6, -0.2]]))
    images = torch.randn(2, 1, 3, 3, generator=torch.Generator().manual_seed(4))
    targets = torch.tensor([0, 2])
    context = SimpleNamespace(progress=lambda stage, done, total: None)
    importance = layer_importance(canonize(toy), EXACT, [(images, targets)], context)
    expected = {"conv1": np.zeros(2), "conv2": np.zeros(2)}
    for image, target in zip(images, targets.tolist(), strict=True):
        r1, r2 = _hand_relevance(toy, image[0].numpy(), target)
        expected["conv1"] += np.abs(r1)
        expected["conv2"] += np.abs(r2)
    assert (expected["conv1"] > 0.05).all() and (expected["conv2"] > 0.05).all()
    for name in ("conv1", "conv2"):
        assert np.allclose(importance[name].numpy(), expected[name], rtol=1e-4, atol=1e-7), name


def test_lrp_runs_in_chunks_that_sum_to_one_pass_and_cancel_between_them() -> None:
    toy = Toy().eval()
    canonical = canonize(toy)
    images = torch.randn(40, 1, 3, 3, generator=torch.Generator().manual_seed(5))
    targets = torch.randint(0, 3, (40,), generator=torch.Generator().manual_seed(6))
    calls: list[int] = []
    context = SimpleNamespace(progress=lambda stage, done, total: calls.append(total))
    importance = layer_importance(canonical, EXACT, [(images, targets)], context)
    whole = channel_relevance(canonical, EXACT, images, targets)  # one pass over all 40: the reference
    for name, values in whole.items():
        assert torch.allclose(importance[name], values.abs().sum(0).double(), rtol=1e-5), name
    assert calls == [3, 3, 3]  # 16 + 16 + 8 images, a progress report (and cancellation check) after each

    def cancel(stage: str, done: int, total: int) -> None:
        raise Cancelled("cancelled by the user")

    seen: list[int] = []
    original = channel_relevance

    def counting(model, composite, chunk, labels):
        seen.append(len(labels))
        return original(model, composite, chunk, labels)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(Cancelled):
        patch.setattr("secateur.plugins.pxp.channel_relevance", counting)
        layer_importance(canonical, EXACT, [(images, targets)], SimpleNamespace(progress=cancel))
    assert seen == [16]  # stopped after the first chunk, not the whole batch


def test_channel_maps_partition_the_input_relevance() -> None:
    torch.manual_seed(5)
    small = nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 5, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(5, 3),
    )
    model = canonize(small)
    image = _inputs(12, 1)[0]
    target = int(model(image[None]).argmax())
    total = sum(channel_map(model, EXACT, image, target, "2", c) for c in range(5))
    whole = input_relevance(model, EXACT, image[None], torch.tensor([target]))[0].sum(0)
    whole = whole / target_logits(model, image[None], torch.tensor([target]))[0]
    assert total.shape == image.shape[1:] and torch.allclose(total, whole, atol=1e-5)
    assert not torch.allclose(channel_map(model, EXACT, image, target, "2", 0), whole, atol=1e-3)
    with pytest.raises(InputError, match=r"channel 5 of 2: the layer has channels 0\.\.4"):
        channel_map(model, EXACT, image, target, "2", 5)
    with pytest.raises(InputError, match="layer 'nope' is not a conv or linear layer"):
        channel_map(model, EXACT, image, target, "nope", 0)


class WithNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LocalResponseNorm(2))
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean(dim=(2, 3)))


class WithGate(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.fc((y * torch.sigmoid(y)).mean(dim=(2, 3)))


class WithAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x, x, x)[0]


def test_unsupported_architectures_are_refused_naming_the_module() -> None:
    with pytest.raises(InputError, match=r"through module 'body\.1' \(LocalResponseNorm\); supported modules are"):
        canonize(WithNorm())
    with pytest.raises(InputError, match=r"through the operation 'sigmoid'"):
        canonize(WithGate())
    with pytest.raises(InputError, match=r"'attention' is attention \(MultiheadAttention\)"):
        canonize(WithAttention())


def test_vision_transformers_are_scored_by_heads_and_mlp_neurons() -> None:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64)
    workspace = Workspace(vit.eval(), (3, 32, 32), load_data("demo"))
    pxp = load_registry().methods["pxp"]
    scores = workspace.score(pxp, {"samples_per_class": 1}).scores
    heads = {g.id for g in workspace.groups if g.kind == "heads"}
    assert heads and heads <= set(scores.groups)
    assert {"encoder.layers.encoder_layer_0.mlp.0", "encoder.layers.encoder_layer_1.mlp.0"} <= set(scores.groups)
    assert all(values.shape == (4,) for gid, values in scores.groups.items() if gid in heads)
    pruned = workspace.apply(workspace.plan(scores, Target("ratio", 0.5))).model
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in vit.parameters())
    with pytest.raises(InputError, match="on a transformer use search=0"):
        workspace.score(pxp, {"samples_per_class": 1, "search": 2})


def test_canonisation_keeps_the_function_and_leaves_the_model_alone() -> None:
    model = _model("torchvision:resnet18")
    before = copy.deepcopy(model.state_dict())
    canonical = canonize(model)
    x = _inputs(64)
    with torch.no_grad():
        assert (canonical(x) - model(x)).abs().max() < 1e-4
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    kinds = {type(module).__name__ for module in canonical.modules()}
    assert "BatchNorm2d" not in kinds and "Addition_Module" in kinds


@pytest.fixture(scope="module")
def method():
    return load_registry().methods["pxp"]


def test_conforms_determinism_checkpoint_and_cancellation() -> None:
    report = check_method("pxp", {"samples_per_class": 1}, model="demo-vgg")
    assert report.params_after < report.params_before and report.partial_results >= 5


def test_bad_parameters_and_missing_data_are_refused(method) -> None:
    with pytest.raises(InputError, match="parameter rule_low='beta' is not one of epsilon, zplus, gamma, alphabeta"):
        validate_params(method.params, {"rule_low": "beta"}, "pxp")
    with pytest.raises(InputError, match="parameter search='28' is out of range"):
        validate_params(method.params, {"search": "28"}, "pxp")
    with pytest.raises(InputError, match="parameter samples_per_class='0' is out of range"):
        validate_params(method.params, {"samples_per_class": "0"}, "pxp")
    with pytest.raises(InputError, match=r"LRP alpha 0\.5: must be at least 1"):
        Composite(alpha=0.5)
    loaded = load_model(parse_model_spec("demo-vgg"))
    with pytest.raises(InputError, match="needs data"):
        Workspace(loaded.model, loaded.input_shape).score(method, {})


SEARCH = {"samples_per_class": 1, "search": 2, "search_step": 0.45, "search_images": 40}


def test_rule_search_keeps_the_best_composite_and_can_be_cancelled(method) -> None:
    loaded = load_model(parse_model_spec("demo-vgg"))
    workspace = Workspace(loaded.model, loaded.input_shape, load_data("demo"), settings=RunSettings(batch_size=100))
    params = validate_params(method.params, SEARCH, "pxp")
    context = workspace.context()
    batches = reference_batches(context, 1)
    result = search_rules(context, canonize(context.model), batches, Composite(), params)
    assert list(result.areas) == candidates(Composite(), 2, context.generator())
    assert next(iter(result.areas)) == Composite() and result.grid == [0.0, 0.45, 0.9]
    best = result.best
    assert result.areas[best] == max(result.areas.values()) and len({c[0] for c in result.curves.values()}) == 1
    rules = {f"rule_{group}": getattr(best, group) for group in ("low", "mid", "high", "fc")}
    explicit = workspace.score(method, {"samples_per_class": 1, **rules}).scores
    kept = group_scores(context, result.importance[best])
    assert set(kept) == set(explicit.groups) and all(torch.equal(kept[g], explicit.groups[g]) for g in kept)

    calls = {"count": 0}

    def count(stage: str, done: int, total: int) -> None:
        calls["count"] += "rule search 2/2" in stage

    with pytest.raises(Cancelled):
        workspace.score(method, SEARCH, Progress(report=count, cancelled=lambda: calls["count"] > 0))


def test_window_shows_a_channel_relevance_map_computed_on_the_worker(qtbot, tmp_path) -> None:
    from PySide6.QtCore import QSettings

    from secateur.app.window import MainWindow

    window = MainWindow(load_registry(), QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    with qtbot.waitSignal(window.job_done, timeout=120_000):
        window.open("demo-vgg", "demo")
    window.tabs.setCurrentWidget(window.relevance)
    window.heatmap.show_group("features.3", np.arange(32, dtype=np.float32))
    window.heatmap.channel_clicked.emit("features.3", 5)  # as a click on channel 5 of the heatmap does
    view = window.relevance
    assert view.layer.currentText() == "features.3" and view.channel.value() == 5
    view.image_index.setValue(7)
    with qtbot.waitSignal(window.job_done, timeout=120_000):
        view.show_button.click()
    shown = view.map_item.image
    session = window.session
    assert session is not None and session.data is not None
    from secateur.core.explain.lrp import explain_channel

    expected = explain_channel(session.model, session.data, 7, "features.3", 5, torch.device("cpu"))
    assert shown.shape == (32, 32) and np.allclose(shown, expected.relevance, atol=1e-6)
    assert view.image_item.image.shape == (32, 32, 3) and "features.3, channel 5" in view.caption.text()
    assert window.grab().save(str(tmp_path / "relevance.png")) and (tmp_path / "relevance.png").stat().st_size > 0
