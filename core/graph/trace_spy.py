"""What Torch-Pruning's trace of a model leaves out, seen by watching the same forward pass.

Torch-Pruning 1.6 builds its graph from the autograd nodes of one forward pass.
Two things it needs are not in those nodes, so a spy records them as the model
runs:

- channel shuffles (``view(B, G, C/G, ...)`` then ``transpose(1, 2)``), which
  it maps as the identity: the groups through one are kept whole;
- the sizes of the tensors a ``torch.cat`` joins, which it infers by walking
  the graph back to a layer, giving up past 500 steps (in swin_s, whose patch
  merging concatenates four slices of a deep stage, the walk gives up and its
  concatenation mapping crashed on the unknown size).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode


def _splits_channels(source: torch.Tensor, result: torch.Tensor) -> bool:
    """(B, C, ...) viewed as (B, G, C/G, ...) with G > 1."""
    if source.dim() < 3 or result.dim() != source.dim() + 1:
        return False
    return result.shape[1] > 1 and result.shape[1] * result.shape[2] == source.shape[1]


def _swaps_the_split(args: tuple) -> bool:
    """transpose(x, 1, 2): the two axes a channel split made."""
    return len(args) >= 3 and sorted(int(d) % args[0].dim() for d in args[1:3]) == [1, 2]


def _joined_sizes(args: tuple, kwargs: dict) -> list[int] | None:
    """The sizes along the joined axis of ``torch.cat(tensors, dim)``'s inputs (None if not plain tensors)."""
    tensors = args[0] if args else kwargs.get("tensors")
    dim = args[1] if len(args) > 1 else kwargs.get("dim", 0)
    if not isinstance(tensors, list | tuple) or not all(isinstance(t, torch.Tensor) for t in tensors):
        return None
    return [int(t.shape[dim]) for t in tensors]


class _TraceSpy(TorchFunctionMode):
    """Records the autograd nodes of channel shuffles and of concatenations, with the concatenations' sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: dict[int, tuple[torch.Tensor, object]] = {}  # split channel axes: id -> (tensor, its grad_fn)
        self.grad_fns: list[object] = []  # the view and transpose nodes of completed shuffles
        self.joined: list[tuple[object, list[int]]] = []  # (a cat's grad_fn, its inputs' sizes along the cat)
        self.forward_done = False  # the model's forward pass returned

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if not isinstance(result, torch.Tensor) or not args:
            return result
        if name in ("cat", "concat", "concatenate") and result.grad_fn is not None:
            sizes = _joined_sizes(args, kwargs)
            if sizes is not None:
                self.joined.append((result.grad_fn, sizes))
        if not isinstance(args[0], torch.Tensor):
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

    def joined_sizes(self, grad_fn: object) -> list[int] | None:
        """The sizes a recorded concatenation joined along its axis, found by its autograd node."""
        return next((sizes for fn, sizes in self.joined if fn is grad_fn), None)


@contextmanager
def spying_trace(model: nn.Module) -> Iterator[_TraceSpy]:
    """Watch ``model``'s forward passes (used around Torch-Pruning's tracing).

    The spy is active only while ``model`` runs: an active mode sends every
    torch call, even ``isinstance(x, nn.Parameter)``, through Python, which
    made Torch-Pruning's graph building after the trace about 1.5× slower.
    """
    spy = _TraceSpy()
    active: list[bool] = []

    def enter(module: nn.Module, args: tuple) -> None:
        spy.__enter__()
        active.append(True)

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        if active:
            active.pop()
            spy.__exit__(None, None, None)
        spy.forward_done = True

    handles = [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]
    try:
        yield spy
    finally:
        for handle in handles:
            handle.remove()
        while active:  # the forward pass raised: leave the mode it entered
            active.pop()
            spy.__exit__(None, None, None)
