"""What Torch-Pruning's trace of a model leaves out, read from the autograd graph of the same forward pass.

Torch-Pruning 1.6 builds its graph from the autograd nodes of one forward pass.
Two things it needs are not in the parts of those nodes it reads, so the spy
reads them from the same nodes:

- channel shuffles (``view(B, G, C/G, ...)`` then ``transpose(1, 2)``), which
  it maps as the identity: the groups through one are kept whole;
- the sizes of the tensors a ``torch.cat`` joins, which it infers by walking
  the graph back to a layer, giving up past 500 steps (in swin_s, whose patch
  merging concatenates four slices of a deep stage, the walk gives up and its
  concatenation mapping crashed on the unknown size).

Every autograd node knows the shapes of the gradients it receives
(``_input_metadata``: the shapes of the forward outputs it belongs to), and a
view's node the shape it was taken of. An earlier spy intercepted every torch
call as the model ran (a ``TorchFunctionMode``): 8–10 ms of Python per pass on
mobilenet_v2, a quarter of the trace; reading the nodes afterwards costs
well under a millisecond.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch_pruning.utils import flatten_as_list

_VIEWS = ("ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0")


def _output_shape(grad_fn: object, index: int = 0) -> tuple[int, ...] | None:
    """The shape of output ``index`` of the forward op that ``grad_fn`` differentiates."""
    metadata = getattr(grad_fn, "_input_metadata", None)
    if not metadata or index >= len(metadata):
        return None
    return tuple(int(size) for size in metadata[index].shape)


def _input_shapes(grad_fn: object) -> list[tuple[int, ...] | None]:
    """The shapes of the forward op's tensor inputs (None for an input autograd does not track)."""
    return [None if fn is None else _output_shape(fn, index) for fn, index in grad_fn.next_functions]


def _splits_channels(source: tuple[int, ...], result: tuple[int, ...]) -> bool:
    """(B, C, ...) viewed as (B, G, C/G, ...) with G > 1."""
    if len(source) < 3 or len(result) != len(source) + 1:
        return False
    return result[1] > 1 and result[1] * result[2] == source[1]


def _swaps_the_split(transpose: object, rank: int) -> bool:
    """transpose(x, 1, 2) (or 2, 1, or negative equivalents) of a ``rank``-dimensional tensor."""
    dims = (getattr(transpose, "_saved_dim0", None), getattr(transpose, "_saved_dim1", None))
    return None not in dims and sorted(int(d) % rank for d in dims) == [1, 2]


class _TraceSpy:
    """The forward pass's autograd nodes, read for channel shuffles and concatenation sizes."""

    def __init__(self) -> None:
        self.outputs: list[object] = []  # the grad_fns of the pass's outputs, where the walk starts
        self.forward_done = False  # the model's forward pass returned

    def _nodes(self) -> Iterator[object]:
        """Every autograd node the pass's outputs depend on, each once."""
        seen: set[int] = set()
        stack = list(self.outputs)
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            stack.extend(fn for fn, _ in node.next_functions if fn is not None)

    def shuffles(self) -> list[object]:
        """The view and transpose nodes of every channel shuffle in the pass."""
        found: list[object] = []
        for node in self._nodes():
            if node.name() != "TransposeBackward0" or not node.next_functions:
                continue
            view, index = node.next_functions[0]
            if view is None or view.name() not in _VIEWS:
                continue
            inputs = _input_shapes(view)
            source = (inputs[0] if inputs else None) or tuple(getattr(view, "_saved_self_sym_sizes", ()))
            result = _output_shape(view, index)
            if result and source and _splits_channels(source, result) and _swaps_the_split(node, len(result)):
                found += [view, node]
        return found

    def joined_sizes(self, grad_fn: object) -> list[int] | None:
        """The sizes a concatenation joined along its axis, from its autograd node (None if not one).

        One input autograd does not track (a constant) is sized by what the others leave of the result.
        """
        joined = _output_shape(grad_fn)
        dim = getattr(grad_fn, "_saved_dim", None)
        if joined is None or dim is None:
            return None
        dim = int(dim) % len(joined)
        shapes = _input_shapes(grad_fn)
        sizes = [None if shape is None else shape[dim] for shape in shapes]
        unknown = [position for position, size in enumerate(sizes) if size is None]
        if len(unknown) > 1:
            return None
        if unknown:
            sizes[unknown[0]] = joined[dim] - sum(size for size in sizes if size is not None)
        return sizes  # type: ignore[return-value]


@contextmanager
def spying_trace(model: nn.Module) -> Iterator[_TraceSpy]:
    """Watch ``model``'s forward passes (used around Torch-Pruning's tracing): their outputs' autograd nodes."""
    spy = _TraceSpy()

    def leave(module: nn.Module, args: tuple, output: object) -> None:
        # the outputs Torch-Pruning walks from, found the way it finds them (a dict subclass's values included)
        leaves = flatten_as_list(output)
        spy.outputs += [leaf.grad_fn for leaf in leaves if getattr(leaf, "grad_fn", None) is not None]
        spy.forward_done = True

    handle = model.register_forward_hook(leave)
    try:
        yield spy
    finally:
        handle.remove()
