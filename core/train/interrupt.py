"""Cancel checks inside a forward and backward pass, so that Cancel stops a long step within a layer.

One training step of the demo ResNet on 128 images took up to 4 s on a loaded
2-core machine, and a check between steps made Cancel wait that long. The
checks here run before every leaf module's forward and as each parameter's
gradient arrives (also in ``torch.autograd.grad``, as HAP's Hessian-vector
products use it); raising there leaves the pass before the optimiser step, so
a cancelled step changes no weight.

A backward pass through a gradient (a Hessian-vector product) is different: no
parameter's gradient is ready until most of it has run, so a check per
parameter came seconds apart (Cancel waited 1.7-4.2 s in HAP on the demo).
``checked_graph`` checks before every node of such a graph instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def checked_passes(model: nn.Module, check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` (which raises to stop) throughout ``model``'s forward and backward passes in this block."""
    handles = [
        module.register_forward_pre_hook(lambda *_: check())
        for module in model.modules()
        if next(module.children(), None) is None
    ]
    handles += [
        parameter.register_hook(lambda _grad: check()) for parameter in model.parameters() if parameter.requires_grad
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def checked_graph(outputs: Iterable[torch.Tensor], check: Callable[[], None]) -> Iterator[None]:
    """Call ``check`` before each node of the autograd graph behind ``outputs`` runs in a backward pass."""
    seen: set[torch.autograd.graph.Node] = set()
    pending = [t.grad_fn for t in outputs if t.grad_fn is not None]
    while pending:
        node = pending.pop()
        if node in seen:
            continue
        seen.add(node)
        pending.extend(child for child, _ in node.next_functions if child is not None)
    handles = [node.register_prehook(lambda _grad_outputs: check()) for node in seen]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
