"""pxp's transformer LRP: rules against hand computations, conservation, head indices, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.vision_transformer import ConvStemConfig

from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.graph.attention import prune_heads, replace_module
from secateur.core.pruning.plan import Target
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace
from secateur.plugins.lrp_vit import (
    TransformerLRP,
    _Homogeneous,
    _Softmax,
    is_vit,
    vit_relevance,
    without_biases,
)

CPU = torch.device("cpu")
LAYER0 = "encoder.layers.encoder_layer_0"


def small_vit(**overrides: object) -> VisionTransformer:
    """A two-block ViT; torchvision zeroes the head, so it gets random weights to give non-zero logits."""
    torch.manual_seed(0)
    options = dict(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128, num_classes=10)
    model = VisionTransformer(**{**options, **overrides}).eval()
    nn.init.normal_(model.heads[-1].weight, std=0.5)
    return model


@pytest.fixture(scope="module")
def vit() -> VisionTransformer:
    return small_vit()


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(4, 3, 32, 32, generator=generator), torch.tensor([1, 2, 3, 4])


def test_uniform_product_rule_matches_a_hand_computation() -> None:
    a, v = torch.tensor([[0.2, 0.8], [0.6, 0.4]]), torch.tensor([[1.0, -2.0], [3.0, 1.5]])
    relevance = torch.tensor([[1.0, 0.5], [-0.25, 2.0]])
    a_in, v_in = a.clone().requires_grad_(), v.clone().requires_grad_()
    out = _Homogeneous.apply(torch.matmul, 2, 1e-9, a_in, v_in)
    got_a, got_v = torch.autograd.grad(out, (a_in, v_in), relevance)
    product = a @ v
    expected_a, expected_v = torch.zeros(2, 2), torch.zeros(2, 2)
    for i in range(2):  # R_a[i,j] = Σ_k a_ij v_jk R_ik / (2 o_ik);  R_v[j,k] = Σ_i a_ij v_jk R_ik / (2 o_ik)
        for j in range(2):
            for k in range(2):
                share = a[i, j] * v[j, k] * relevance[i, k] / (2 * product[i, k])
                expected_a[i, j] += share
                expected_v[j, k] += share
    torch.testing.assert_close(got_a, expected_a)
    torch.testing.assert_close(got_v, expected_v)
    assert abs(got_a.sum() + got_v.sum() - relevance.sum()) < 1e-5


def test_softmax_rule_is_the_linearisation_with_its_value_as_bias() -> None:
    scores = torch.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    relevance = torch.tensor([[0.3, 0.2, 0.5]])
    ledger: list[torch.Tensor] = []
    (got,) = torch.autograd.grad(_Softmax.apply(scores, ledger), scores, relevance)
    s = scores.detach().softmax(-1)[0]
    jacobian = torch.diag(s) - torch.outer(s, s)  # J[j, i] = ∂s_j/∂x_i
    x = scores.detach()[0]
    expected = torch.stack([x[i] * sum(jacobian[j, i] * relevance[0, j] / s[j] for j in range(3)) for i in range(3)])
    torch.testing.assert_close(got[0], expected)
    bias = s - jacobian @ x  # s = J x + b: the bias keeps Σ_j b_j R_j / s_j
    torch.testing.assert_close(ledger[0], (bias * relevance[0] / s).sum().reshape(1))


def test_layer_norm_rule_conserves_and_holds_the_deviation_constant(vit) -> None:
    lrp = TransformerLRP(without_biases(vit), CPU, 1e-9)
    norm = lrp.model.encoder.layers[0].ln_1
    x = torch.randn(2, 5, 64, requires_grad=True)
    relevance = torch.randn(2, 5, 64)
    (got,) = torch.autograd.grad(lrp._layer_norm(norm, x), x, relevance)
    xd = x.detach()
    centred = xd - xd.mean(-1, keepdim=True)
    y = centred / (xd.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt() * norm.weight
    scaled = relevance * (y / centred) / y  # ε-rule through y = diag(w/σ)(x - mean x)
    expected = xd * (scaled - scaled.mean(-1, keepdim=True))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got.sum(-1), relevance.sum(-1), rtol=1e-4, atol=1e-4)


def test_bias_free_relevance_at_the_pixels_adds_up_to_the_logit(vit, batch) -> None:
    """Σ pixels + what the softmax biases keep = the explained logit; every other rule conserves."""
    images, labels = batch
    explained = TransformerLRP(without_biases(vit), CPU, 1e-9).explain(images, labels)
    logit = explained.logits.gather(1, labels[:, None])[:, 0]
    total = (explained.pixels.flatten(1).sum(1) + explained.absorbed) * logit  # relevance started at 1 = logit/logit
    torch.testing.assert_close(total, logit, rtol=1e-3, atol=1e-5)
    assert (explained.absorbed.abs() > 1e-3).all()  # AttnLRP's softmax does keep a share: the ledger is needed
    with_biases = TransformerLRP(vit, CPU, 1e-9).explain(images, labels)
    leak = (with_biases.pixels.flatten(1).sum(1) + with_biases.absorbed - 1).abs()
    assert leak.max() > 1e-2  # biases, class token and position embedding keep relevance: the check can fail


def test_vit_b_16_conserves_relevance_without_biases() -> None:
    """The same budget on torchvision:vit_b_16 (random weights): 12 blocks of 12 heads, width 768.

    At 96×96 (37 tokens) to stay fast on a CPU; bench/pxp_vit_conservation.py measures 224×224.
    """
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=96).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zeroes it: the logits would all be 0
    image, label = torch.randn(1, 3, 96, 96, generator=torch.Generator().manual_seed(2)), torch.tensor([7])
    explained = TransformerLRP(without_biases(model), CPU, 1e-9).explain(image, label)
    assert explained.logits[0, 7].abs() > 0.05 and len(explained.attention) == 12
    torch.testing.assert_close(explained.pixels.sum() + explained.absorbed[0], torch.tensor(1.0), rtol=0, atol=1e-3)
    for name, at_output in explained.attention.items():
        torch.testing.assert_close(explained.units[f"{name}:heads"].sum(1), at_output, rtol=1e-3, atol=1e-4)


def test_head_relevance_sums_to_the_relevance_at_the_attention_output(vit, batch) -> None:
    explained = TransformerLRP(without_biases(vit), CPU, 1e-9).explain(*batch)
    for layer in ("encoder_layer_0", "encoder_layer_1"):
        name = f"encoder.layers.{layer}.self_attention"
        heads = explained.units[f"{name}:heads"]
        assert heads.shape == (4, 4)
        torch.testing.assert_close(heads.sum(1), explained.attention[name], rtol=1e-3, atol=1e-4)


def test_scores_cover_the_workspace_groups_of_heads_and_neurons(vit, batch) -> None:
    scores = vit_relevance(vit, [batch], CPU, SILENT)
    groups = {g.id: g for g in Workspace(vit, (3, 32, 32)).context().groups}
    assert set(scores) == set(groups)
    for key, values in scores.items():
        assert values.shape == (groups[key].channels,) and (values >= 0).all() and values.dtype == torch.float32
    assert groups[f"{LAYER0}.self_attention:heads"].kind == "heads"
    assert groups[f"{LAYER0}.mlp.0"].kind == "channels"


def test_relevance_sums_absolute_values_over_images_and_batches(vit, batch) -> None:
    images, labels = batch
    whole = vit_relevance(vit, [batch], CPU, SILENT)
    split = vit_relevance(vit, [(images[:1], labels[:1]), (images[1:], labels[1:])], CPU, SILENT)
    per_image = TransformerLRP(vit, CPU, 1e-6).explain(images, labels).units
    for key, values in whole.items():
        torch.testing.assert_close(split[key], values, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(values, per_image[key].abs().sum(0))


def test_head_indices_follow_the_head_pruning_of_core(vit, batch) -> None:
    """A head whose output projection columns are zero has no relevance, and pruning it leaves the others unchanged."""
    silenced = copy.deepcopy(vit)
    attention = silenced.get_submodule(f"{LAYER0}.self_attention")
    with torch.no_grad():
        attention.out_proj.weight[:, 16:32] = 0  # head 1 of 4 (head_dim 16)
    scores = vit_relevance(silenced, [batch], CPU, SILENT)
    heads = scores[f"{LAYER0}.self_attention:heads"]
    assert heads[1] == 0 and (heads[[0, 2, 3]] > 0).all()
    pruned = copy.deepcopy(silenced)
    replace_module(pruned, f"{LAYER0}.self_attention", prune_heads(attention, [0, 2, 3]))
    after = vit_relevance(pruned, [batch], CPU, SILENT)
    torch.testing.assert_close(after[f"{LAYER0}.self_attention:heads"], heads[[0, 2, 3]], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(after[f"{LAYER0}.mlp.0"], scores[f"{LAYER0}.mlp.0"], rtol=1e-4, atol=1e-6)


def test_relevance_prunes_the_least_relevant_heads_and_neurons_through_the_workspace(vit, batch) -> None:
    workspace = Workspace(vit, (3, 32, 32))
    scores = Scores(groups=vit_relevance(workspace.context().model, [batch], CPU, SILENT))
    plan = workspace.plan(scores, Target("ratio", 0.5))
    heads, neurons = f"{LAYER0}.self_attention:heads", f"{LAYER0}.mlp.0"
    assert plan.groups[heads].kept == sorted(scores.groups[heads].argsort(descending=True)[:2].tolist())
    assert plan.groups[neurons].kept == sorted(scores.groups[neurons].argsort(descending=True)[:64].tolist())
    pruned = workspace.apply(plan).model
    assert pruned.get_submodule(f"{LAYER0}.self_attention").num_heads == 2
    assert pruned.get_submodule(neurons).out_features == 64
    assert vit_relevance(pruned, [batch], CPU, SILENT)[heads].shape == (2,)


def test_deterministic_and_the_model_is_left_untouched(vit, batch) -> None:
    before = {key: value.clone() for key, value in vit.state_dict().items()}
    first = vit_relevance(vit, [batch], CPU, SILENT)
    second = vit_relevance(vit, [batch], CPU, SILENT)
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert all(torch.equal(before[key], value) for key, value in vit.state_dict().items())
    assert not vit.training and all(p.requires_grad for p in vit.parameters())
    assert not batch[0].requires_grad


def test_progress_is_reported_and_cancellation_stops(vit, batch) -> None:
    seen: list[tuple[str, int, int]] = []
    vit_relevance(vit, [batch, batch], CPU, Progress(report=lambda *step: seen.append(step)))
    assert [(done, total) for _, done, total in seen] == [(0, 2), (1, 2), (2, 2)]
    with pytest.raises(Cancelled):
        vit_relevance(vit, [batch], CPU, Progress(cancelled=lambda: True))


def test_is_vit() -> None:
    assert is_vit(small_vit())
    assert is_vit(nn.Sequential(nn.MultiheadAttention(8, 2)))
    assert not is_vit(torchvision.models.resnet18(num_classes=10))


def _swapped(name: str, module: nn.Module) -> VisionTransformer:
    model = small_vit()
    replace_module(model, name, module)
    return model


@pytest.mark.parametrize(
    ("model", "named"),
    [
        (lambda: _swapped(f"{LAYER0}.ln_1", nn.Identity()), f"{LAYER0}.ln_1 (Identity)"),
        (lambda: _swapped("encoder.layers.encoder_layer_1.mlp.1", nn.SiLU()), "encoder_layer_1.mlp.1 (SiLU)"),
        (lambda: small_vit(conv_stem_configs=[ConvStemConfig(16, 3, 2)]), "conv_proj (Sequential)"),
        (lambda: nn.Sequential(nn.Linear(8, 8), nn.MultiheadAttention(8, 2)), "1 (MultiheadAttention): attention"),
        (lambda: torchvision.models.resnet18(num_classes=10), "the model (ResNet): not a vision transformer"),
    ],
)
def test_unsupported_modules_are_refused_by_name(model, named, batch) -> None:
    with pytest.raises(InputError, match=r"pxp cannot propagate relevance through .*") as error:
        vit_relevance(model(), [batch], CPU, SILENT)
    assert named in str(error.value) and "supports torchvision VisionTransformer" in str(error.value)


def test_a_changed_forward_is_refused(batch) -> None:
    class Doubled(VisionTransformer):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    model = Doubled(image_size=32, patch_size=8, num_layers=1, num_heads=4, hidden_dim=64, mlp_dim=128).eval()
    nn.init.normal_(model.heads[-1].weight, std=0.5)
    with pytest.raises(InputError, match="forward differs from torchvision's VisionTransformer"):
        vit_relevance(model, [batch], CPU, SILENT)


@pytest.mark.parametrize(
    ("batches", "epsilon", "message"),
    [
        ([], 1e-6, "no reference images"),
        ([(torch.randn(2, 3, 32, 32), torch.tensor([0, 10]))], 1e-6, r"labels must be one class index in \[0, 10\)"),
        ([(torch.randn(2, 3, 64, 64), torch.tensor([0, 1]))], 1e-6, r"batches of shape \(N ≥ 1, 3, 32, 32\)"),
        ([(torch.randn(0, 3, 32, 32), torch.tensor([], dtype=torch.long))], 1e-6, r"\(N ≥ 1, 3, 32, 32\)"),
        ([(torch.randn(2, 1, 32, 32), torch.tensor([0, 1]))], 1e-6, r"batches of shape \(N ≥ 1, 3, 32, 32\)"),
        ([(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))], 0.0, "epsilon must be > 0"),
    ],
)
def test_bad_input_is_refused(vit, batches, epsilon, message) -> None:
    with pytest.raises(InputError, match=message):
        vit_relevance(vit, batches, CPU, SILENT, epsilon=epsilon)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(vit, batch) -> None:
    on_cpu = vit_relevance(vit, [batch], CPU, SILENT)
    on_gpu = vit_relevance(vit, [batch], torch.device("cuda"), SILENT)
    for key, values in on_cpu.items():
        assert on_gpu[key].device.type == "cpu"
        torch.testing.assert_close(on_gpu[key], values, rtol=1e-3, atol=1e-5)
