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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from torch.overrides import TorchFunctionMode


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


def _splits_channels(source: torch.Tensor, result: torch.Tensor) -> bool:
    """(B, C, ...) viewed as (B, G, C/G, ...) with G > 1."""
    if source.dim() < 3 or result.dim() != source.dim() + 1:
        return False
    return result.shape[1] > 1 and result.shape[1] * result.shape[2] == source.shape[1]


def _swaps_the_split(args: tuple) -> bool:
    """transpose(x, 1, 2): the two axes a channel split made."""
    return len(args) >= 3 and sorted(int(d) % args[0].dim() for d in args[1:3]) == [1, 2]


class _ShuffleSpy(TorchFunctionMode):
    """Records the autograd nodes of channel shuffles: a channel axis split in two, then those two swapped."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[int, tuple[torch.Tensor, object]] = {}  # split channel axes: id -> (tensor, its grad_fn)
        self.grad_fns: list[object] = []  # the view and transpose nodes of completed shuffles

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if not isinstance(result, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
            return result
        source = args[0]
        if name in ("view", "reshape") and _splits_channels(source, result):
            self.splits[id(result)] = (result, result.grad_fn)
        elif name in ("transpose", "swapaxes") and id(source) in self.splits and _swaps_the_split(args):
            self.grad_fns += [self.splits[id(source)][1], result.grad_fn]
        return result

    def shuffles(self) -> list[object]:
        """The grad_fns of the completed shuffles' view and transpose."""
        return [fn for fn in self.grad_fns if fn is not None]


@contextmanager
def spying_shuffles(model: nn.Module) -> Iterator[_ShuffleSpy]:
    """Watch ``model``'s forward passes for channel shuffles (used around Torch-Pruning's tracing).

    The spy is active only while ``model`` runs: an active mode sends every
    torch call, even ``isinstance(x, nn.Parameter)``, through Python, which
    made Torch-Pruning's graph building after the trace about 1.5× slower.
    """
    spy = _ShuffleSpy()
    active: list[bool] = []

    def enter(module: nn.Module, args: tuple) -> None:
        spy.__enter__()
        active.append(True)

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        if active:
            active.pop()
            spy.__exit__(None, None, None)

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    try:
        yield spy
    finally:
        for handle in handles:
            handle.remove()
        while active:  # the forward pass raised: leave the mode it entered
            active.pop()
            spy.__exit__(None, None, None)


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
    return any(
        node.type == tp.ops.OPTYPE.SPLIT for item in group for node in (item.dep.source, item.dep.target)
    )

