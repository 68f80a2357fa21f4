"""The layer tree against independent counts: torchvision's published figures and torch's FLOP counter."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from conftest import ARCHS
from secateur.core.graph.layer_tree import LayerTree
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.workspace import build_layer_tree, tree_of


def _tree(spec: str, **options: object) -> LayerTree:
    return tree_of(load_model(parse_model_spec(spec, **options)), torch.device("cpu"))


def _flop_counter_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> dict[str, int]:
    """Per-module MACs by torch's FLOP counter (2 FLOPs per MAC), with grad on so attention is not fused."""
    with FlopCounterMode(display=False) as counter:
        model(torch.randn(1, *shape)).sum()
    root = type(model).__name__
    return {
        ("" if name == root else name.removeprefix(f"{root}.")): sum(ops.values()) // 2
        for name, ops in counter.get_flop_counts().items()
        if name != "Global"
    }


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "vgg11_bn", "vit_b_16"])
def test_torchvision_totals_match_the_published_figures(name: str) -> None:
    tree = _tree(f"torchvision:{name}")
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    assert tree.params == meta["num_params"]
    assert tree.macs / 1e9 == pytest.approx(meta["_ops"], rel=2e-3)
    assert tree.input_shape == (3, 224, 224)
    top_level = sum(layer.params for layer in tree.layers if layer.parent == "")
    own = {"vit_b_16": 768}.get(name, 0)  # ViT's class token belongs to the root module itself
    assert top_level + own == tree.params


def test_resnet50_shows_25_56_m_params_and_4_1_g_macs() -> None:
    tree = _tree("torchvision:resnet50")
    assert round(tree.params / 1e6, 2) == 25.56
    assert round(tree.macs / 1e9, 1) == 4.1


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_per_layer_macs_match_torch_flop_counter(name: str) -> None:
    tree = _tree(f"torchvision:{name}")
    reference = _flop_counter_macs(torchvision.models.get_model(name, weights=None), (3, 224, 224))
    assert tree.macs == reference[""]
    for layer in tree.layers:
        assert layer.macs == reference.get(layer.name, 0), layer.name


def test_vit_attention_macs_match_the_flop_counter_plus_the_attention_products() -> None:
    tree = _tree("torchvision:vit_b_16")
    reference = _flop_counter_macs(torchvision.models.vit_b_16(weights=None), (3, 224, 224))
    tokens, width, layers = 197, 768, 12
    products = 2 * tokens * tokens * width  # q·kᵀ and attention·v, which the counter's CPU path leaves out
    assert tree.macs == reference[""] + layers * products


def test_resnet18_tree_groups_and_blocks() -> None:
    tree = _tree("torchvision:resnet18")
    conv = tree.layer("layer2.0.conv1")
    assert (conv.type, conv.in_channels, conv.out_channels, conv.output_shape) == ("Conv2d", 64, 128, (1, 128, 28, 28))
    assert conv.macs == 128 * 28 * 28 * 64 * 9 and conv.params == 128 * 64 * 9
    groups = {group.id: group for group in tree.groups}
    stem = groups[tree.layer("conv1").group]
    # identity shortcuts tie the stem to every block output of stage 1
    assert {"conv1", "bn1", "layer1.0.bn2", "layer1.1.bn2", "layer2.0.conv1"} <= set(stem.layers)
    assert stem.channels == 64 and stem.prunable
    assert tree.classifier == "fc" and not groups["fc"].prunable
    blocks = {block.name: block.removable for block in tree.blocks}
    assert blocks == {
        "layer1.0": True, "layer1.1": True, "layer2.0": False, "layer2.1": True,
        "layer3.0": False, "layer3.1": True, "layer4.0": False, "layer4.1": True,
    }  # fmt: skip


def test_demo_trees() -> None:
    resnet = _tree("demo")
    assert resnet.input_shape == (3, 32, 32) and resnet.classifier == "fc"
    assert [b.name for b in resnet.blocks if b.removable] == [
        "layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2",
    ]  # fmt: skip
    reference = _flop_counter_macs(load_model(parse_model_spec("demo")).model, (3, 32, 32))
    assert resnet.macs == reference[""]
    vgg = _tree("demo-vgg")
    assert vgg.blocks == [] and vgg.classifier == "classifier.3"
    assert sum(group.prunable for group in vgg.groups) == 9  # 8 convs and the hidden linear layer


def test_vgg11_bn_and_mobilenet_v2_groups() -> None:
    vgg = _tree("torchvision:vgg11_bn")
    assert sum(g.prunable for g in vgg.groups) == 10 and vgg.blocks == []  # 8 convs, 2 hidden linears
    mobile = _tree("torchvision:mobilenet_v2")
    depthwise = mobile.layer("features.2.conv.1.0")
    expand = mobile.layer("features.2.conv.0.0")
    assert depthwise.group == expand.group  # a depthwise conv's channels are its producer's channels
    assert sum(b.removable for b in mobile.blocks) == 10


def test_user_architectures() -> None:
    path = ARCHS / "user_models.py"
    concat = _tree(f"{path}:ConcatNet")
    groups = {group.id: group for group in concat.groups}
    assert "merge" in groups[concat.layer("left").group].layers  # the concatenation feeds merge
    assert {"left", "right"} <= set(groups[concat.layer("stem.0").group].layers)
    depthwise = _tree(f"{path}:DepthwiseGroupedNet")
    assert depthwise.layer("depthwise").group == depthwise.layer("stem").group
    assert depthwise.layer("grouped").macs == 64 * 32 * 32 * (64 // 4) * 9
    transformer = _tree(f"{path}:TinyTransformer")
    assert [(b.name, b.removable) for b in transformer.blocks] == [("blocks.0", True), ("blocks.1", True)]
    attention = transformer.layer("blocks.0.attention")
    tokens, dim = 16, 32
    assert attention.macs == 4 * tokens * dim * dim + 2 * tokens * tokens * dim
    assert (
        transformer.macs
        == _flop_counter_macs(load_model(parse_model_spec(f"{path}:TinyTransformer")).model, (3, 32, 32))[""]
        + 2 * 2 * tokens * tokens * dim
    )  # the counter leaves out the attention products of both blocks


def test_projection_shortcut_blocks_are_listed_but_not_removable() -> None:
    tree = build_layer_tree(torchvision.models.resnet50(weights=None), torch.randn(1, 3, 64, 64), "resnet50")
    first = next(block for block in tree.blocks if block.name == "layer1.0")
    assert not first.removable and "shortcut through a layer" in first.reason
