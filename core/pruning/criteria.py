"""Channel importance criteria shared by the baseline plugins (and by methods built on them).

Each criterion scores one dependency group: one value per channel, reduced
over every member layer of the group by the mean, without normalisation, the
way Torch-Pruning's group importances do (``group_reduction="mean"``,
``normalizer=None``). The planner normalises when it ranks globally.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn
from torch_pruning.pruner import function as prune_fn

from secateur.core.graph.attention import per_head, projection_weights
from secateur.core.graph.groups import GroupInfo
from secateur.core.graph.indices import covers_in_order
from secateur.core.pruning.scoring import Scores, ScoringContext

GRADIENT_CHUNK = 32  # images per forward/backward between two cancel checks (a 128-image batch takes ~2 s on one core)


OUT_CHANNELS = (prune_fn.prune_conv_out_channels, prune_fn.prune_linear_out_channels)
IN_CHANNELS = (prune_fn.prune_conv_in_channels, prune_fn.prune_linear_in_channels)
NORMS = (prune_fn.prune_batchnorm_out_channels, prune_fn.prune_layernorm_out_channels)


def _powered(weight: torch.Tensor, p: int) -> torch.Tensor:
    """|w|^p elementwise, in one pass for the usual p (Torch-Pruning computes ``w.abs().pow(p)`` also for p = 1)."""
    return weight.abs() if p == 1 else weight.square() if p == 2 else weight.abs().pow(p)


def _per_channel(weight: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum over every dimension of ``weight`` but ``dim``."""
    return weight.sum(dim=[d for d in range(weight.dim()) if d != dim]) if weight.dim() > 1 else weight


def _select(values: torch.Tensor, idxs: list[int]) -> torch.Tensor:
    """``values[idxs]``, without the gather and its index tensor when ``idxs`` take every value in order."""
    return values if covers_in_order(idxs, len(values)) else values[idxs]


class GroupMagnitude(tp.importance.GroupMagnitudeImportance):
    """Torch-Pruning's group magnitude importance: the same numbers, without copying each weight first.

    Torch-Pruning indexes or transposes a weight into a copy, takes ``abs()``
    and ``pow(p)`` of it (more copies) and then sums; on resnet50 its l1 scores
    took 136 ms at one thread, this 66 ms (vit_b_16: 236 and 62 ms), equal to
    within 1e-6 relative (the sums run in another order). Normalisation is
    Torch-Pruning's own, and so is every reduction but the mean and the sum,
    which skip the index tensors of items that cover the group in order
    (every item of mobilenet_v2's groups: its l1 scores 21.8 → 7.8 ms, resnet50 74.8 → 43.1 ms,
    medians of 21 interleaved, one thread).
    """

    def _reduce(self, group_imp: list[torch.Tensor], group_idxs: list[list[int]]) -> torch.Tensor:
        """Torch-Pruning's mean or sum of the items' scores at their root indices, in place where in order."""
        if self.group_reduction not in ("mean", "sum") or not group_imp:
            return super()._reduce(group_imp, group_idxs)
        reduced = torch.zeros_like(group_imp[0], dtype=torch.float32)
        counted = 0
        for imp, root_idxs in zip(group_imp, group_idxs, strict=True):
            imp = imp.to(reduced.device, dtype=reduced.dtype)
            if covers_in_order(root_idxs, len(reduced)):
                reduced += imp
            elif any(index is None for index in root_idxs):
                continue  # as Torch-Pruning: an item it could not map back to the root is left out
            else:
                reduced.scatter_add_(0, torch.tensor(root_idxs, device=imp.device), imp)
            counted += 1
        return reduced / counted if self.group_reduction == "mean" else reduced

    @torch.no_grad()
    def __call__(self, group: tp.Group) -> torch.Tensor | None:
        imps, roots = [], []
        for index, (dep, idxs) in enumerate(group):
            layer, fn = dep.layer, dep.pruning_fn
            if not isinstance(layer, tuple(self.target_types)):
                continue
            transposed = bool(getattr(layer, "transposed", False))
            if fn in OUT_CHANNELS:
                local = _select(_per_channel(_powered(layer.weight.data, self.p), 1 if transposed else 0), idxs)
            elif fn in IN_CHANNELS:
                local = _per_channel(_powered(layer.weight.data, self.p), 0 if transposed else 1)
                if fn == prune_fn.prune_conv_in_channels and layer.groups not in (1, layer.in_channels):
                    local = local.repeat(layer.groups)  # as Torch-Pruning does for grouped convolutions
                local = _select(local, idxs)
            elif fn in NORMS and (layer.affine if fn == NORMS[0] else layer.elementwise_affine):
                local = _powered(_select(layer.weight.data, idxs), self.p)
            else:
                continue
            imps.append(local)
            roots.append(group[index].root_idxs)
            if self.bias and fn not in IN_CHANNELS and layer.bias is not None:
                imps.append(_powered(_select(layer.bias.data, idxs), self.p))
                roots.append(group[index].root_idxs)
        if not imps:
            return None
        return self._normalize(self._reduce(imps, roots), self.normalizer)


def _per_group(
    context: ScoringContext, importance: tp.importance.Importance, stage: str, heads: Callable | None = None
) -> Iterator[Scores]:
    """Score each group with a Torch-Pruning criterion, and attention heads with ``heads(module)``."""
    for index, group in enumerate(context.groups):
        if group.kind == "heads":
            values = None if heads is None else heads(context.model.get_submodule(group.layers[0]))
        else:
            values = importance(group.handle)
        context.progress(stage, index + 1, len(context.groups))
        if values is not None:  # None: the criterion has nothing to measure in this group
            yield Scores(groups={group.id: values.detach().float().cpu()})


def magnitude_scores(context: ScoringContext, p: int) -> Iterator[Scores]:
    """Lp norm of each channel's weights, averaged over the group's layers."""
    importance = GroupMagnitude(p=p, group_reduction="mean", normalizer=None)

    def heads(module: nn.Module) -> torch.Tensor:
        parts = per_head(module, [w.detach() for w in projection_weights(module)])
        return torch.stack([part.abs().pow(p).sum(1) for part in parts]).mean(0)

    yield from _per_group(context, importance, f"L{p} norms", heads)


def batchnorm_scale_scores(context: ScoringContext) -> Iterator[Scores]:
    """|γ| of the group's BatchNorm layers; groups without BatchNorm are not scored (so not pruned)."""
    importance = GroupMagnitude(
        p=1, group_reduction="mean", normalizer=None, target_types=[nn.modules.batchnorm._BatchNorm]
    )
    yield from _per_group(context, importance, "BatchNorm scales")


def random_scores(context: ScoringContext) -> Iterator[Scores]:
    """Uniform random importance, from the run's seed."""
    generator = context.generator()
    for index, group in enumerate(context.groups):
        context.progress("random", index + 1, len(context.groups))
        yield Scores(groups={group.id: torch.rand(group.channels, generator=generator)})


def taylor_scores(context: ScoringContext, batches: int) -> Iterator[Scores]:
    """First-order Taylor importance |Σ g·w| per channel, gradients summed over labelled batches.

    Gradients come from ``torch.autograd.grad`` in eval mode, so neither the
    BatchNorm statistics nor the parameters' ``.grad`` of the user's model are
    touched. A channel's parameters in a layer are its weight slice and, for
    producers and normalisation layers, its bias (γ and β). Parameters the
    eval-mode forward never uses (GoogLeNet's and Inception's auxiliary heads)
    get a zero gradient: they cannot change the loss.
    """
    model = context.model
    parameters = [p for p in model.parameters() if p.requires_grad]
    sums = [torch.zeros_like(p) for p in parameters]
    loader = context.loader("calibration")
    total = min(batches, len(loader))
    for step, (images, labels) in enumerate(loader):
        if step >= total:
            break
        # in chunks with a cancel check between them: in eval mode the summed loss's gradient is additive
        for chunk_images, chunk_labels in zip(images.split(GRADIENT_CHUNK), labels.split(GRADIENT_CHUNK), strict=True):
            context.progress.check()
            logits = model(chunk_images.to(context.device))
            loss = F.cross_entropy(logits, chunk_labels.to(context.device), reduction="sum")
            chunk_gradients = torch.autograd.grad(loss, parameters, allow_unused=True)
            for accumulated, gradient in zip(sums, chunk_gradients, strict=True):
                if gradient is not None:
                    accumulated.add_(gradient)
        context.progress("gradients", step + 1, total)
    gradients = {id(p): g for p, g in zip(parameters, sums, strict=True)}
    for index, group in enumerate(context.groups):
        if group.kind == "heads":
            values = _taylor_heads(context.model.get_submodule(group.layers[0]), gradients)
        else:
            values = _taylor_group(context, group, gradients)
        context.progress("Taylor scores", index + 1, len(context.groups))
        if values is not None:
            yield Scores(groups={group.id: values})


def _signed_products(module: nn.Module, is_out: bool, gradients: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """Σ w·g per channel of one layer, along its output (or input) channel dimension."""
    if not isinstance(module, (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._NormBase, nn.LayerNorm)):
        return None
    if is_out:
        total = None
        for parameter in module.parameters(recurse=False):
            if id(parameter) not in gradients:
                continue
            product = (parameter * gradients[id(parameter)]).detach()
            if isinstance(module, nn.modules.conv._ConvNd) and module.transposed and product.dim() > 1:
                product = product.transpose(0, 1)
            per_channel = product.reshape(product.shape[0], -1).sum(1)
            total = per_channel if total is None else total + per_channel
        return total
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.in_channels and module.groups > 1:
        return None  # depthwise: its channels are counted once, as outputs
    weight = module.weight
    if weight is None or id(weight) not in gradients:
        return None
    product = (weight * gradients[id(weight)]).detach()
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        per_input = product.transpose(0, 1).reshape(product.shape[1], -1).sum(1)
        return per_input.repeat(module.groups)  # grouped conv: each group sees its own slice of inputs
    if isinstance(module, nn.modules.conv._ConvNd):
        return product.reshape(product.shape[0], -1).sum(1)
    return product.sum(0)


def _taylor_group(context: ScoringContext, group: GroupInfo, gradients: dict[int, torch.Tensor]) -> torch.Tensor | None:
    """Mean over the group's layers of |Σ w·g| per channel, mapped to the group's own channel order."""
    total = torch.zeros(group.channels, dtype=torch.float64)
    layers = torch.zeros(group.channels, dtype=torch.float64)
    for item in group.handle:
        products = _signed_products(
            item.dep.target.module, context.graph.is_out_channel_pruning_fn(item.dep.handler), gradients
        )
        if products is None:
            continue
        roots = torch.as_tensor(item.root_idxs, dtype=torch.long)
        local = products.double().cpu()[torch.as_tensor(item.idxs, dtype=torch.long)]
        member = torch.zeros(group.channels, dtype=torch.float64).index_add_(0, roots, local)
        total += member.abs()
        layers[roots.unique()] += 1
    if not layers.any():
        return None
    return (total / layers.clamp(min=1)).float()


def _taylor_heads(module: nn.Module, gradients: dict[int, torch.Tensor]) -> torch.Tensor:
    """Mean over q, k, v and the output projection of |Σ w·g| per head."""
    weights = projection_weights(module)
    products = [(w * gradients[id(w)]).detach() for w in weights]
    return torch.stack([part.sum(1).abs() for part in per_head(module, products)]).mean(0).float().cpu()
