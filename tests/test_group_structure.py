"""Grouped convolutions, squeeze-excitation, channel shuffles and depthwise stacks under every channel method.

Every plan must keep each grouped conv's channel blocks balanced (and, for
its inputs, aligned), whatever the scores say; the pruned model must run and
land exactly on the predicted size; a plan that breaks the rules is refused
before surgery.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch_pruning import _helpers, ops
from torch_pruning.dependency import index_mapping

from conftest import ARCHS
from secateur.core.common.errors import InputError, WorkError
from secateur.core.common.settings import RunSettings
from secateur.core.data.arrays import ArrayDataset
from secateur.core.data.loading import DataBundle
from secateur.core.graph import groups as groups_module
from secateur.core.graph.macs import trace_modules
from secateur.core.graph.trace_spy import spying_trace
from secateur.core.pruning import checks
from secateur.core.pruning.checks import check_group
from secateur.core.pruning.plan import GroupPlan, PlanOptions, PruningPlan, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.surgery import replay_core_edits
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import state_hash

sys.path.insert(0, str(ARCHS))
import user_models

SHAPE = (3, 32, 32)
RATIOS = (0.2, 0.5, 0.8)
# every built-in channel method, with the cheapest parameters that run its whole path
METHODS = {
    "random": {},
    "l1": {},
    "l2": {},
    "bn-scale": {},
    "taylor": {"batches": 1},
    "intra-fusion": {"batches": 1},
    "pxp": {"samples_per_class": 1},
    "hap": {"probes": 1, "batches": 1, "chunk_size": 16},
    "paam": {"epochs": 1, "max_steps": 1},
}
MODELS = {
    "grouped-se": user_models.grouped_se_net,
    "shuffle": user_models.shuffle_net,
    "separable": user_models.separable_stack,
    "split": user_models.cross_stage_split,
    "subsample": user_models.token_subsample,
    "ghost": user_models.channel_slice,
    "ghost-even": user_models.ghost_even,  # timm's ghostnet_100: no slice, the depthwise branch concatenated
    "cached": user_models.cached_scale,  # intra-fusion's deepcopy refused the traced cache
    "shaped-scale": user_models.shaped_scale_net,  # timm's poolformer: Scale.view(self.shape) went stale
}


def tiny_data() -> DataBundle:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (20, *SHAPE), dtype=np.uint8)
    dataset = ArrayDataset(images, np.arange(20) % 10, (0.5,) * 3, (0.25,) * 3)
    return DataBundle("tiny", dataset, dataset, dataset, [str(i) for i in range(10)], SHAPE)


def workspace_of(model: nn.Module) -> Workspace:
    return Workspace(model, SHAPE, tiny_data(), RunSettings(batch_size=10))


def assert_sound(workspace: Workspace, plan: PruningPlan, model: nn.Module, exact: bool = True) -> None:
    """Every group keeps its block rule, the model runs, and its size is the predicted one (or above, if not exact)."""
    groups = {group.id: group for group in workspace.groups}
    for group_id, group_plan in plan.groups.items():
        assert check_group(groups[group_id], group_plan) == "", group_id
    with torch.no_grad():
        assert model(torch.randn(2, *SHAPE)).shape == (2, 10)
    measured = (sum(p.numel() for p in model.parameters()), trace_modules(model, workspace.example)[""].macs)
    if exact:
        assert measured == (plan.predicted_params, plan.predicted_macs)
    else:
        assert measured[0] > plan.predicted_params and measured[1] > plan.predicted_macs


@pytest.mark.parametrize("method_id", sorted(METHODS))
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_channel_method_keeps_conv_groups_balanced(model_name: str, method_id: str) -> None:
    method = load_registry().method(method_id)
    workspace = workspace_of(MODELS[model_name]())
    try:
        scored = workspace.score(method, METHODS[method_id])
    except InputError as refused:  # LRP rules and PAAM's score networks do not fit every architecture
        assert method_id in ("pxp", "paam") and (model_name, method_id) != ("separable", "pxp")
        assert any(
            reason in str(refused)
            for reason in ("cannot propagate relevance through the operation", "through the tensor method 'split'",
                           "this model has none")
        )  # fmt: skip
        return
    for ratio, global_ranking in [(r, False) for r in RATIOS] + [(0.5, True)]:
        options = PlanOptions(global_ranking=global_ranking, raw_scores=method.comparable_scores)
        plan = workspace.plan(scored, Target("ratio", ratio), options, method_id)
        applied = workspace.apply(plan, method, METHODS[method_id], scored)
        implanted = any("over the plan" in note for note in applied.plan.notes)  # hap's implants add parameters
        assert_sound(workspace, applied.plan, applied.model, exact=not implanted)


def _adversarial(workspace: Workspace) -> Scores:
    """Random scores, except that every group's first block holds all of its highest scores."""
    generator = torch.Generator().manual_seed(3)
    scores = {}
    for group in workspace.groups:
        if group.prunable:
            values = torch.rand(group.channels, generator=generator)
            if group.blocks is not None:
                values[: group.channels // group.blocks.count] += 10.0
            scores[group.id] = values
    return Scores(groups=scores)


@pytest.mark.parametrize("model_name", ["grouped-se", "resnext-block"])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_adversarial_scores_cannot_unbalance_a_grouped_conv(model_name: str, global_ranking: bool) -> None:
    model = user_models.grouped_se_net() if model_name == "grouped-se" else _resnext_block()
    workspace = workspace_of(model)
    scores = _adversarial(workspace)
    blocked = [group for group in workspace.groups if group.blocks is not None]
    assert {group.blocks.count for group in blocked} >= ({2, 4, 8} if model_name == "grouped-se" else {8})
    for ratio in RATIOS:
        plan = workspace.plan(scores, Target("ratio", ratio), PlanOptions(global_ranking=global_ranking))
        assert any("chosen per block" in note for note in plan.notes)  # the rule overrode the scores, and says so
        for group in blocked:
            kept = plan.groups[group.id].kept
            size = group.channels // group.blocks.count
            counts = {sum(1 for k in kept if k // size == block) for block in range(group.blocks.count)}
            assert len(counts) == 1 and counts != {0}
        applied = workspace.apply(plan)
        assert_sound(workspace, plan, applied.model)


class _ResNeXtBlock(nn.Module):
    """1×1 → grouped 3×3 (groups=8) → 1×1 with BatchNorm, as ResNeXt's bottleneck."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 3, padding=1)
        self.reduce = nn.Sequential(nn.Conv2d(32, 64, 1), nn.BatchNorm2d(64), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=8), nn.BatchNorm2d(64), nn.ReLU())
        self.expand = nn.Conv2d(64, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.expand(self.grouped(self.reduce(x))))
        return self.head(x.mean(dim=(2, 3)))


def _resnext_block() -> nn.Module:
    return _ResNeXtBlock()


def test_aligned_cut_of_a_grouped_convs_inputs_preserves_the_function() -> None:
    """Silencing the channels the plan drops, then dropping them, must not change the outputs."""
    model = _ResNeXtBlock().eval()
    workspace = workspace_of(model)
    scores = _adversarial(workspace)
    plan = workspace.plan(scores, Target("ratio", 0.5))
    removed = plan.groups["reduce.0"].removed  # feeds the grouped conv's inputs
    assert removed and workspace.groups[[g.id for g in workspace.groups].index("reduce.0")].blocks.aligned
    with torch.no_grad():
        model.reduce[1].weight[removed] = 0.0  # the BatchNorm silences them: they add nothing downstream
        model.reduce[1].bias[removed] = 0.0
    only = PruningPlan("manual", plan.target, {"reduce.0": plan.groups["reduce.0"]})
    workspace = workspace_of(model)
    plan = workspace.plan(Scores(groups={"reduce.0": scores.groups["reduce.0"]}), Target("ratio", 0.5))
    assert plan.groups["reduce.0"] == only.groups["reduce.0"]
    pruned = workspace.apply(plan).model
    example = torch.randn(4, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(pruned(example), model(example), rtol=1e-5, atol=1e-5)
    assert pruned.grouped[0].weight.shape[1] == 4  # 8 blocks of 8 inputs, half kept in each


def test_a_plan_that_breaks_a_rule_is_refused_before_surgery() -> None:
    model = user_models.grouped_se_net()
    before = state_hash(model)
    workspace = workspace_of(model)
    group = next(g for g in workspace.groups if g.blocks is not None and g.blocks.aligned)
    target = Target("ratio", 0.5)
    unbalanced = PruningPlan("manual", target, {group.id: GroupPlan(range(group.channels // 2), group.channels)})
    with pytest.raises(InputError) as refused:
        workspace.apply(unbalanced)
    message = str(refused.value)
    assert refused.value.exit_code == 2
    assert group.id in message and group.blocks.layers[0] in message and "every block must keep" in message
    outside = PruningPlan("manual", target, {group.id: GroupPlan([0, group.channels + 3], group.channels)})
    with pytest.raises(InputError, match=r"outside 0\.\.31"):
        workspace.apply(outside)
    empty = PruningPlan("manual", target, {group.id: GroupPlan([], group.channels)})
    with pytest.raises(InputError, match="emptied"):
        workspace.apply(empty)
    locked = next(g for g in workspace.groups if not g.prunable)
    cut_locked = PruningPlan("manual", target, {locked.id: GroupPlan([0], locked.channels)})
    with pytest.raises(InputError, match="cannot be pruned"):
        workspace.apply(cut_locked)
    assert state_hash(model) == before  # refused before anything was cut
    assert state_hash(workspace.model) == before


def test_groups_through_a_channel_shuffle_are_kept_whole_with_the_reason() -> None:
    workspace = workspace_of(user_models.shuffle_net())
    shuffled = [g for g in workspace.groups if "channel shuffle" in g.locked_because]
    assert [g.id for g in shuffled] == ["depthwise"]
    assert not shuffled[0].prunable


def test_groups_through_a_split_are_kept_whole_with_the_reason() -> None:
    """Torch-Pruning 1.6 maps a split that meets a concatenation with wrong offsets (timm's cspresnet50 scored
    indices past a layer's width): such groups stay whole; the others are still pruned."""
    workspace = workspace_of(user_models.cross_stage_split())
    split = sorted(g.id for g in workspace.groups if "torch.split" in g.locked_because)
    assert split == ["block.2", "transition_b"]
    assert {g.id for g in workspace.groups if g.prunable} == {"stem.0", "block.0", "transition"}
    for group in workspace.groups:  # every member's indices within its layer's width
        if group.handle is not None:
            for item in group.handle:
                module = item.dep.target.module
                width = module.weight.shape[0] if hasattr(module, "weight") else None
                if width is not None and workspace.graph.is_out_channel_pruning_fn(item.dep.handler):
                    assert max(item.idxs) < width, (group.id, item)


@pytest.mark.parametrize(
    ("model_name", "sliced", "prunable"),
    [("subsample", ["mix"], {"query"}), ("ghost", ["cheap.0"], set())],
)
def test_groups_through_a_slice_are_kept_whole_with_the_reason(model_name: str, sliced: list, prunable: set) -> None:
    """LeViT's (B, H, W, C) token subsampling, which Torch-Pruning 1.6 maps as a channel slice, and GhostNet's
    ``cat(...)[:, :out]``, whose bound surgery cannot change: both broke the pruned model (checked by the
    every-method test above); such groups stay whole, the others are still pruned."""
    workspace = workspace_of(MODELS[model_name]())
    assert sorted(g.id for g in workspace.groups if "through a slice" in g.locked_because) == sliced
    assert {g.id for g in workspace.groups if g.prunable} == prunable


def test_a_concatenation_with_a_depthwise_convolution_of_itself_is_kept_whole_with_the_reason() -> None:
    """timm's ghostnet_100 (its slice keeps every channel): cutting channel j of the concatenation also cut
    channel n + j, so the pruned model had fewer channels than predicted, or no longer ran."""
    workspace = workspace_of(MODELS["ghost-even"]())
    reasons = {g.id: g.locked_because for g in workspace.groups}
    assert "depthwise convolution of themselves" in reasons["dw.0"]  # the concatenation, read by a depthwise conv
    assert {g.id for g in workspace.groups if g.prunable} == {"stem.0", "mix"}


@pytest.mark.parametrize(
    ("channels", "reason"),
    [
        (32, "Torch-Pruning maps its channels past blocks.1.tokens_out's 16 (index 31)"),  # fewer tokens
        (8, "Torch-Pruning maps its 8 channels onto blocks.1.tokens_out's 16, with no concatenation"),  # more
    ],
)
def test_a_group_mapped_through_a_transpose_is_kept_whole_with_the_reason(channels: int, reason: str) -> None:
    """timm's MLP-Mixer: Torch-Pruning followed the channel stream into the token MLP on the transposed tensor
    (16 tokens). With 32 channels scoring indexed past the token layer; with 8 the cut took tokens and the
    pruned model no longer ran. That group stays whole, the others still prune exactly."""
    workspace = Workspace(user_models.TokenMixer(channels=channels).eval(), (3, 16, 16))
    reasons = {g.id: g.locked_because for g in workspace.groups}
    assert reasons["blocks.1.channels_out"].startswith(reason)
    scores = workspace.score(load_registry().method("l1")).scores
    plan = workspace.plan(scores, Target("ratio", 0.5), PlanOptions(), "l1")
    pruned = workspace.apply(plan).model
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params
    assert any(group.removed for group in plan.groups.values())


def test_a_bare_per_channel_vector_is_predicted_cut_with_its_group() -> None:
    """timm's ConvNeXt scales each block by a bare 1-D ``gamma``: it was counted whole, 552 parameters over
    the pruned convnext_atto (10 bug cells in the zoo)."""

    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 16, 3, padding=1)
            self.mix = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.gamma = nn.Parameter(torch.rand(16))
            self.head = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = x + self.mix(x) * self.gamma[:, None, None]
            return self.head(x.mean(dim=(2, 3)))

    workspace = workspace_of(Scaled().eval())
    scores = workspace.score(load_registry().method("l1")).scores
    plan = workspace.plan(scores, Target("ratio", 0.5), PlanOptions(), "l1")
    pruned = workspace.apply(plan).model
    assert pruned.gamma.shape == (8,)
    assert sum(p.numel() for p in pruned.parameters()) == plan.predicted_params


def test_a_slice_of_another_dimension_leaves_the_group_prunable() -> None:
    class SpatialCrop(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.head = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x)[:, :, 4:-4, ::2].mean(dim=(2, 3)))

    workspace = workspace_of(SpatialCrop())
    assert {g.id: g.prunable for g in workspace.groups} == {"conv": True, "head": False}


def test_a_group_whose_index_mapping_explodes_is_kept_whole_with_the_reason(monkeypatch) -> None:
    """Swin's window partitions made Torch-Pruning's flatten mapping compound without end (25 minutes, 13.6 GB):
    past a bound the root is refused and kept whole; the groups that map normally are still pruned."""
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.Flatten(),
        nn.Linear(16 * 8 * 8, 10),
    )
    flatten = index_mapping._FlattenIndexMapping(stride=64)
    assert len(flatten([_helpers._HybridIndex(i, i) for i in range(16)])) == 1024  # under the bound: unchanged
    monkeypatch.setattr(groups_module, "MAX_MAPPED_INDICES", 1000)  # 16 channels × 64 positions = 1024 > 1000
    with pytest.raises(OverflowError, match="a flatten would map 16 indices to 1024"):
        flatten([_helpers._HybridIndex(i, i) for i in range(16)])
    workspace = Workspace(model, (3, 8, 8), settings=RunSettings(batch_size=2))
    by_id = {group.id: group for group in workspace.groups}
    assert not by_id["2"].prunable
    assert "Torch-Pruning cannot map this group's channels (OverflowError" in by_id["2"].locked_because
    assert by_id["0"].prunable  # 8 channels into the next conv: no flatten on its way


class TwoFlattenedHeads(nn.Module):
    """One conv group read by two Linear heads through two flattens (8 channels × 1024 positions each)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.left = nn.Linear(8 * 32 * 32, 4)
        self.right = nn.Linear(8 * 32 * 32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.conv(x)
        return self.left(features.flatten(1)) + self.right(torch.flatten(features, 1))


def test_the_flattens_of_one_group_are_bounded_together(monkeypatch) -> None:
    """MaxViT's partitions passed ~100 k indices per flatten around for 16 minutes (18 GB): the sum is bounded too."""
    assert workspace_of(TwoFlattenedHeads()).groups[0].prunable  # 2 × 8192 indices: far under the bound
    monkeypatch.setattr(groups_module, "MAX_MAPPED_INDICES", 10_000)  # each flatten 8192, the two 16384
    conv = {group.id: group for group in workspace_of(TwoFlattenedHeads()).groups}["conv"]
    assert not conv.prunable
    assert "the group's flattens map more than 10000 indices in all" in conv.locked_because


def test_a_groups_mapping_checks_for_cancel_at_each_flatten() -> None:
    """A refused MaxViT group maps for about 2.3 s: the tracing's progress is called inside it, at every flatten."""
    from secateur.core.common.errors import Cancelled
    from secateur.core.common.progress import Progress

    reports: list[tuple[str, int, int]] = []
    Workspace(TwoFlattenedHeads(), SHAPE, progress=Progress(report=lambda *report: reports.append(report)))
    assert sorted(set(reports)) == [("dependency groups", 0, 2), ("dependency groups", 1, 2)]  # the heads' classifier
    assert max(reports.count(report) for report in reports) >= 3  # the conv's root, then again at its flattens
    model = TwoFlattenedHeads().eval()
    graph = groups_module.build_dependency_graph(model, torch.zeros(1, *SHAPE))

    def cancel() -> None:
        raise Cancelled("cancelled by the user")

    with pytest.raises(Cancelled):  # a stop, not a root Torch-Pruning cannot map
        groups_module._mapped_group(graph, model.conv, graph.get_pruner_of_module(model.conv), cancel)


class WidthCoupled(nn.Module):
    """A stream read by a projection whose output the code reshapes by the stream's width (MaxViT's attention)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.proj = nn.Linear(8, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stream = self.stem(x).mean(dim=(2, 3))
        return self.head(self.proj(stream).reshape(-1, stream.shape[-1]))


def test_a_group_feeding_an_unmapped_layer_is_tried_and_kept_whole_when_cutting_it_breaks(monkeypatch) -> None:
    """maxvit_t: its attention's qkv could not be mapped, and cutting the stream feeding it broke the forward pass;
    such a group is now cut by one channel on a copy first, and kept whole with the error when the copy fails."""
    original = groups_module._mapped_group

    def refuse_proj(graph, root, pruner, check=None):
        if isinstance(root, nn.Linear) and root.out_features == 8:  # proj, as Torch-Pruning failing on it
            return None, "OverflowError in its index mapping: simulated"
        return original(graph, root, pruner, check)

    model = WidthCoupled().eval()
    before = state_hash(model)
    monkeypatch.setattr(groups_module, "_mapped_group", refuse_proj)
    by_id = {group.id: group for group in workspace_of(model).groups}
    assert by_id["proj"].locked_because.startswith(groups_module.UNMAPPED)
    assert not by_id["stem"].prunable
    assert by_id["stem"].locked_because.startswith("cutting it breaks the model (RuntimeError: shape '[-1, 7]'")
    assert by_id["stem"].plan_note == f"group stem kept whole: {by_id['stem'].locked_because}"  # said in every plan
    assert state_hash(model) == before  # the trial cut a copy


def test_models_whose_groups_all_map_are_not_probed(monkeypatch) -> None:
    from secateur.core.pruning import probe

    tried: list[str] = []
    monkeypatch.setattr(probe, "breakage", lambda model, group, example: tried.append(group.id) or "")
    for model in (user_models.grouped_se_net(), user_models.timm_style_vit(), WidthCoupled()):
        assert any(group.prunable for group in workspace_of(model).groups)
    assert tried == []


class _NeverCollecting:
    """Stands in for the collection flag: every ``get_pruning_group`` recomputes the mappings, as Torch-Pruning does."""

    def get(self) -> None:
        return None

    def set(self, value: object) -> None:
        return None

    def reset(self, token: object) -> None:
        return None


@pytest.mark.parametrize(("name", "size"), [("densenet121", 32), ("googlenet", 64), ("squeezenet1_1", 64)])
def test_groups_are_the_same_with_the_mappings_computed_once(monkeypatch, name: str, size: int) -> None:
    """Collecting groups computes the concat/split/reshape mappings once, not once per root: the same groups."""
    import torchvision

    options = {"aux_logits": False, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, weights=None, num_classes=10, **options).eval()
    example = torch.zeros(1, 3, size, size)
    concat_updates: list[int] = []
    update = index_mapping.update_concat_index_mapping
    monkeypatch.setattr(
        index_mapping, "update_concat_index_mapping", lambda g, n: concat_updates.append(1) or update(g, n)
    )

    def collected() -> tuple[list[tuple], int]:
        graph = groups_module.build_dependency_graph(model, example)
        concat_updates.clear()
        groups = groups_module.dependency_groups(model, graph, [])
        return [(g.to_dict(), g.locked_because, g.out_layers) for g in groups], len(concat_updates)

    once, updates_once = collected()
    monkeypatch.setattr(groups_module, "_mapped_graphs", _NeverCollecting())
    every_time, updates_every_time = collected()
    assert once == every_time and any(group[0]["prunable"] for group in once)
    concats = sum(
        node.type == ops.OPTYPE.CONCAT
        for node in groups_module.build_dependency_graph(model, example).module2node.values()
    )
    assert 0 < updates_once == concats < updates_every_time, (updates_once, concats, updates_every_time)


def test_the_spy_reads_shuffles_and_concatenation_sizes_from_the_pass_and_leaves_no_hook() -> None:
    model = user_models.shuffle_net()
    with torch.enable_grad(), spying_trace(model) as spy:
        model(torch.zeros(1, 3, 8, 8))
    assert not model._forward_hooks and spy.forward_done
    view, transpose = spy.shuffles()  # one shuffle: its view and its transpose
    assert (view.name(), transpose.name()) == ("ViewBackward0", "TransposeBackward0")

    class Outputs(dict):  # a model output class of its own (as Hugging Face's ModelOutput)
        pass

    wrapped = nn.Sequential(model)
    wrapped.register_forward_hook(lambda module, args, output: Outputs(logits=output))
    with torch.enable_grad(), spying_trace(wrapped) as spy:
        wrapped(torch.zeros(1, 3, 8, 8))
    assert len(spy.shuffles()) == 2  # walked from the dict's values
    tracked = torch.zeros(1, 5, 4, 4, requires_grad=True) * 2
    with torch.enable_grad():
        joined = torch.cat([tracked, torch.ones(1, 3, 4, 4), tracked[:, :2]], dim=-3)  # a constant in the middle
    assert spy.joined_sizes(joined.grad_fn) == [5, 3, 2]
    assert spy.joined_sizes(tracked.grad_fn) is None  # not a concatenation
    with torch.enable_grad():
        two_constants = torch.cat([tracked, torch.ones(1, 3, 4, 4), torch.ones(1, 1, 4, 4)], dim=1)
    assert spy.joined_sizes(two_constants.grad_fn) is None  # two unknowns: no guess


@pytest.mark.parametrize("meta_first", [False, True])
def test_a_model_broken_by_pruning_is_reported_as_such(monkeypatch, meta_first: bool) -> None:
    """A forward that hard-codes a width breaks after pruning: the error says pruning broke it, naming groups.

    Checked on the meta device first (as for a large model), the break fails there too and the real run reports it.
    """
    monkeypatch.setattr(checks, "META_CHECK_MACS", 0 if meta_first else checks.META_CHECK_MACS)
    workspace = workspace_of(user_models.hard_coded_width())
    plan = workspace.plan(workspace.score(load_registry().method("l1")), Target("ratio", 0.5))
    with pytest.raises(WorkError) as broken:
        workspace.apply(plan, load_registry().method("l1"))
    message = str(broken.value)
    assert "pruning with l1 broke the model" in message and "conv" in message
    assert "belong together" not in message


class ValueBranch(nn.Module):
    """Two convs; with ``peek`` the forward branches on a value, which the meta device cannot read."""

    def __init__(self, peek: bool) -> None:
        super().__init__()
        self.peek = peek
        self.first, self.second = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Linear(8, 10)
        self.devices: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.devices.append(x.device.type)
        hidden = self.first(x)
        if self.peek and bool(hidden.sum() > 1e9):
            hidden = hidden * 0.5
        return self.head(self.second(hidden).mean((2, 3)))


@pytest.mark.parametrize("peek", [False, True])
def test_a_large_model_is_checked_on_the_meta_device_and_run_for_real_when_that_cannot_tell(monkeypatch, peek) -> None:
    """Above ``META_CHECK_MACS`` the pruned model's code runs on meta tensors (shapes, no arithmetic); code that
    reads a value cannot run there, so the model then runs for real. Its own tensors stay real either way."""
    monkeypatch.setattr(checks, "META_CHECK_MACS", 0)
    model = ValueBranch(peek)
    workspace = workspace_of(model)
    plan = workspace.plan(workspace.score(load_registry().method("l1")), Target("ratio", 0.5))
    applied = workspace.apply(plan, load_registry().method("l1"))
    assert applied.model.devices[-2:] == (["meta", "cpu"] if peek else ["cpu", "meta"])
    assert all(tensor.device.type == "cpu" for tensor in [*applied.model.parameters(), *applied.model.buffers()])
    assert applied.model.first.out_channels == 8
    assert applied.model(torch.zeros(2, *SHAPE)).shape == (2, 10)


def test_plugins_and_checkpoints_meet_the_same_rules_through_apply_plan() -> None:
    """``apply_plan`` (what plugins and checkpoint replay use) refuses an unbalanced cut before surgery."""
    from secateur.core.api import apply_plan

    model = user_models.grouped_se_net()
    before = state_hash(model)
    workspace = workspace_of(model)
    group = next(g for g in workspace.groups if g.blocks is not None)
    plan = PruningPlan("plugin", Target("ratio", 0.5), {group.id: GroupPlan([0, 1, 2], group.channels)})
    with pytest.raises(InputError, match=f"edit prune_channels: group {group.id} .*every block must keep"):
        apply_plan(model, plan, workspace.example)
    assert state_hash(model) == before


class DeepBeforeConcat(nn.Module):
    """A concatenation 600 element-wise steps after its first input's layer: past Torch-Pruning's size inference.

    Torch-Pruning walks back at most 500 steps to infer a concatenation's input
    sizes; swin_s's patch merging is such a case, and its trace crashed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.left = nn.Conv2d(3, 8, 3, padding=1)
        self.right = nn.Conv2d(3, 4, 3, padding=1)
        self.merge = nn.Conv2d(12, 6, 1)
        self.head = nn.Linear(6, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.left(x)
        for _ in range(600):
            left = torch.relu(left)
        merged = self.merge(torch.cat([left, self.right(x)], dim=1))
        return self.head(merged.mean(dim=(2, 3)))


def test_a_concatenation_torch_pruning_cannot_size_takes_the_sizes_seen_in_the_trace() -> None:
    model = DeepBeforeConcat()
    graph = groups_module.build_dependency_graph(model, torch.randn(1, *SHAPE))
    (cat,) = [node for node in graph.module2node.values() if node.type == groups_module.tp.ops.OPTYPE.CONCAT]
    assert cat.module.concat_sizes == [8, 4] and cat.module.offsets == [0, 8, 12]
    workspace = workspace_of(model)
    left = next(group for group in workspace.groups if group.id == "left")
    assert left.prunable and "merge" in left.layers
    plan = PruningPlan("manual", Target("ratio", 0.3), {"left": GroupPlan([0, 2, 3, 5, 7], 8)})
    pruned = workspace.apply(plan).model
    assert pruned.merge.in_channels == 9  # the left input's offsets, not the right's, were cut
    reference = model.merge.weight[:, [0, 2, 3, 5, 7, 8, 9, 10, 11]]
    assert torch.equal(pruned.merge.weight, reference)


def test_a_trace_failing_after_the_forward_pass_blames_torch_pruning_not_the_input(monkeypatch) -> None:
    def crash(graph: object) -> None:
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")

    monkeypatch.setattr(index_mapping, "update_index_mapping", crash)
    with pytest.raises(InputError) as refused:
        groups_module.build_dependency_graph(DeepBeforeConcat(), torch.randn(1, *SHAPE))
    message = str(refused.value)
    assert "the model runs on an input of shape (3, 32, 32), but Torch-Pruning cannot build" in message
    assert "NoneType" in message and "check --input-size and that the model runs" not in message
    with pytest.raises(InputError, match=r"cannot be traced on an input of shape \(5, 32, 32\)"):
        groups_module.build_dependency_graph(DeepBeforeConcat(), torch.randn(1, 5, 32, 32))


def test_a_width_repeated_in_a_shape_attribute_follows_the_cut_and_its_replay() -> None:
    """timm's poolformer_s12: Torch-Pruning cut ``Scale.scale`` but not ``Scale.shape == (C, 1, 1)``, which
    forward reads, so every pruned poolformer failed; the attribute now follows, in apply and in replay."""
    workspace = workspace_of(user_models.shaped_scale_net())
    method = load_registry().method("l1")
    scored = workspace.score(method, {})
    applied = workspace.apply(workspace.plan(scored, Target("ratio", 0.5), PlanOptions(), "l1"), method, {}, scored)
    widths = {name: len(applied.plan.groups[group].kept) for name, group in [("res", "fc2"), ("inner", "fc1")]}
    assert widths["res"] < 16 and widths["inner"] < 32
    assert applied.model.res_scale.shape == (widths["res"], 1, 1)
    assert applied.model.inner_scale.shape == (widths["inner"], 1, 1)
    replayed = user_models.shaped_scale_net()
    replayed.load_state_dict(workspace.model.state_dict())
    replay_core_edits(replayed, list(applied.edits), workspace.example)
    replayed.load_state_dict(applied.model.state_dict())
    example = torch.randn(2, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(replayed.eval()(example), applied.model(example))


def test_a_group_that_grows_without_end_is_kept_whole_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's rexnet_100: through a slice-add-concatenate per block, Torch-Pruning's group grew with the number of
    paths (this 4-block model: 1,629 dependencies; 8 blocks: 58 k after 5 minutes; rexnet_100 ran 45 minutes
    without an end). Past the cap (lowered here, so the small model reaches it) the root is kept whole."""
    assert "through a slice" in workspace_of(user_models.slice_residual_net()).groups[0].locked_because  # uncapped
    monkeypatch.setattr(groups_module, "MAX_GROUP_ITEMS", 200)
    workspace = workspace_of(user_models.slice_residual_net())
    reasons = {g.id: g.locked_because for g in workspace.groups}
    capped = sorted(gid for gid, reason in reasons.items() if "more than 200 layer dependencies" in reason)
    assert capped == ["blocks.1.conv.0", "blocks.2.conv.0", "blocks.3.conv.0"]
    assert "through a slice" in reasons["blocks.0.conv.0"]


def test_a_known_layers_tuples_are_not_taken_for_widths() -> None:
    """A Conv1d of 3 outputs and kernel 3 has ``kernel_size == (3,)`` beside a bias of 3: not a width to follow."""
    from secateur.core.graph.width_attributes import width_attributes

    model = nn.Sequential(nn.Conv1d(4, 3, 3), user_models._ShapedScale(3))
    assert [(type(found.module).__name__, found.attribute) for found in width_attributes(model)] == [
        ("_ShapedScale", "shape")
    ]
