"""Group structure: channels that must be kept in balanced blocks, and groups that cannot be cut.

A grouped convolution (``groups`` = G) splits its channels into G blocks of
consecutive channels. Its output channels stay a valid grouped conv only if
every block keeps the same number of channels; its input channels are sliced
by Torch-Pruning once for all blocks (``ConvPruner.prune_in_channels`` keeps
the first block's offsets), so every block must keep the same offsets.
GroupNorm needs equal counts per normalisation group. Torch-Pruning's own
pruner does the same (``_get_channel_groups``: importance averaged over the
blocks, the same offsets removed in each).

A channel shuffle (``view(B, G, C/G, H, W).transpose(1, 2)``) permutes
channels, but Torch-Pruning's graph maps indices through it as the identity,
so any cut through it would scramble the consumers' inputs: such groups are
kept whole, with the reason shown to the user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch_pruning as tp
from torch import nn


@dataclass(frozen=True)
class Blocks:
    """A group's channels fall in ``count`` equal blocks of consecutive channels.

    ``aligned``: every block keeps the same offsets (a grouped conv's inputs);
    otherwise every block keeps the same number of channels.
    """

    count: int
    aligned: bool
    layers: tuple[str, ...]  # the layers that impose the blocks, for messages

    def describe(self) -> str:
        how = "the same offsets in each" if self.aligned else "the same number in each"
        return f"{self.count} channel blocks of {', '.join(self.layers)} ({how})"

    def to_dict(self) -> dict[str, object]:
        return {"count": self.count, "aligned": self.aligned, "layers": list(self.layers)}


def _is_depthwise(module: nn.Module) -> bool:
    """Torch-Pruning's depthwise case: inputs and outputs pruned together, no block structure left."""
    return isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels > 1


def _member_blocks(module: nn.Module, is_out: bool) -> tuple[int, bool]:
    """(blocks, aligned) one member imposes on its channels along the pruned dimension."""
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not _is_depthwise(module):
        return module.groups, not is_out and not module.transposed
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.transposed:
        return module.groups, False
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return module.num_groups, False
    return 1, False


def group_blocks(
    group: tp.Group, graph: tp.DependencyGraph, names: dict[nn.Module, str], channels: int
) -> tuple[Blocks | None, str]:
    """The block structure of a Torch-Pruning group, or why the group cannot be cut at all ("" if it can)."""
    count, aligned, layers = 1, False, []
    for item in group:
        module = item.dep.target.module
        is_out = graph.is_out_channel_pruning_fn(item.dep.handler)
        blocks, member_aligned = _member_blocks(module, is_out)
        if blocks == 1:
            continue
        name = names.get(module, type(module).__name__)
        width = graph.get_out_channels(module) if is_out else graph.get_in_channels(module)
        if width != channels or list(item.idxs) != list(item.root_idxs):
            return None, (
                f"the {blocks} channel blocks of {name} are reached through a concatenation or split, "
                "which keeps them from being balanced"
            )
        count = math.lcm(count, blocks)
        aligned = aligned or member_aligned
        if name not in layers:
            layers.append(name)
    if count == 1:
        return None, ""
    if channels % count:
        return None, f"its {channels} channels do not split into the {count} blocks of {', '.join(layers)}"
    return Blocks(count, aligned, tuple(layers)), ""


# --- channel shuffles --------------------------------------------------------------


def passes_shuffle(group: tp.Group, shuffles: list[object]) -> bool:
    """Whether any dependency of the group runs through a recorded channel shuffle."""
    for item in group:
        for node in (item.dep.source, item.dep.target):
            grad_fn = getattr(node, "grad_fn", None)
            if grad_fn is not None and any(grad_fn is shuffle for shuffle in shuffles):
                return True
    return False


def passes_split(group: tp.Group) -> bool:
    """Whether any dependency of the group runs through a ``torch.split`` or ``chunk`` of a tensor.

    Torch-Pruning 1.6 maps a split's halves with wrong offsets when they meet again
    in a concatenation (CSPNet's cross-stage split: indices past a layer's width, or
    the wrong half cut), and the split sizes live in the model's own code, which
    surgery cannot change, so such a group is kept whole.
    """
    return any(node.type == tp.ops.OPTYPE.SPLIT for item in group for node in (item.dep.source, item.dep.target))


def passes_slice(group: tp.Group) -> bool:
    """Whether any dependency of the group runs through a slice that Torch-Pruning maps as a channel slice.

    A slice's bounds live in the model's code, which surgery cannot change: after
    GhostNet-style ``torch.cat([a, b], 1)[:, :12]`` loses channels, the slice still
    keeps 12. And Torch-Pruning 1.6 takes dim 1 of every 4-D tensor for the
    channels, so LeViT's subsampling of a (B, H, W, C) token grid, every other
    row and column, is mapped as a channel slice (the query layer after it lost
    half of the cut). Slices it leaves alone (another dimension) do not count.
    """
    return any(
        node.type == tp.ops.OPTYPE.SLICE and _cuts_as_channels(node)
        for item in group
        for node in (item.dep.source, item.dep.target)
    )


def _cuts_as_channels(node: object) -> bool:
    """Whether Torch-Pruning maps this slice node as a channel slice and the slice drops something."""
    op = node.module  # type: ignore[attr-defined]
    sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)  # type: ignore[attr-defined]
    if sizes is None:
        return True  # mapped whatever the dimension
    if (len(sizes) == 4 and op.dim != 1) or (len(sizes) == 3 and op.dim != 2):
        return False  # Torch-Pruning 1.6's rule: not the channels of an (N, C, H, W) or (N, L, C) tensor
    size = int(sizes[op.dim])
    return slice(op.start, op.end, op.step).indices(size) != (0, size, 1)


def concat_with_depthwise(group: tp.Group) -> bool:
    """Whether the group holds both a concatenation and a depthwise convolution (GhostNet's ghost module).

    A ghost module concatenates ``x`` with a depthwise convolution of ``x``:
    channel ``j`` and channel ``n + j`` of the concatenation are the same
    channel of ``x``, so Torch-Pruning's cut of either cuts both, and the
    pruned model had fewer channels than the plan or no longer ran
    (timm's ghostnet_100). Torch-Pruning's group does not show the two
    channels meeting (it visits each layer once), so the rule is the
    pattern itself: conservative, a group with both is kept whole.
    """
    concatenated = any(
        node.type == tp.ops.OPTYPE.CONCAT for item in group for node in (item.dep.source, item.dep.target)
    )
    return concatenated and any(_is_depthwise(item.dep.target.module) for item in group)


def _pruned_width(module: nn.Module, is_out: bool) -> int | None:
    """The size of the dimension Torch-Pruning cuts in ``module`` (None for modules without weights of their own)."""
    for out_name, in_name in (("out_channels", "in_channels"), ("out_features", "in_features")):
        if hasattr(module, out_name):
            return int(getattr(module, out_name if is_out else in_name))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return int(module.num_features)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    return None


def index_past_width(group: tp.Group, graph: tp.DependencyGraph) -> tuple[nn.Module, int, int] | None:
    """A member whose mapped channel indices run past its width: (layer, width, largest index), or None.

    timm's MLP-Mixer applies its token MLP to the transposed tensor; Torch-Pruning
    followed the residual stream's 512 channels into a 196-wide token layer, and
    scoring indexed past it ("index 196 is out of bounds for dimension 0 with size 196").
    """
    for item in group:
        module = item.dep.target.module
        width = _pruned_width(module, graph.is_out_channel_pruning_fn(item.dep.handler))
        if width is None or not item.idxs:
            continue
        largest = max(item.idxs)  # in C: the indices are ints, or (index, root index) pairs, compared index first
        largest = int(largest[0] if isinstance(largest, tuple) else largest)
        if largest >= width:
            return module, width, largest
    return None


# Nodes past which a group's channels are only part of a member's width (a flatten instead maps them to all of it).
_PARTIAL = {
    tp.ops.OPTYPE.CONCAT, tp.ops.OPTYPE.SPLIT, tp.ops.OPTYPE.SLICE, tp.ops.OPTYPE.UNBIND, tp.ops.OPTYPE.EXPAND,
}  # fmt: skip


def width_mismatch(group: tp.Group, graph: tp.DependencyGraph) -> tuple[nn.Module, int, int] | None:
    """A member wider or narrower than the indices mapped into it, with no concatenation or split between.

    (layer, its width, the group's channels), or None; ``group`` holds all of its
    root's channels. timm's MLP-Mixer with more tokens than channels: Torch-Pruning
    reads the transpose before the token MLP as the identity and maps an
    8-channel group onto the token layer's 16 inputs; cutting channels cut tokens,
    and the pruned model no longer ran. A flatten before a Linear maps the
    channels onto all of its inputs; only concatenations, splits and slices
    leave part of a member outside the group.
    """
    if any(node.type in _PARTIAL for item in group for node in (item.dep.source, item.dep.target)):
        return None
    channels = _pruned_width(group[0].dep.target.module, True)
    if channels is None:
        return None
    for item in group:
        module = item.dep.target.module
        width = _pruned_width(module, graph.is_out_channel_pruning_fn(item.dep.handler))
        if width is not None and width != len(item.idxs):
            return module, width, channels
    return None
