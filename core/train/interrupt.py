"""Cancel checks inside a forward and backward pass, so that Cancel stops a long step within a layer.

One training step of the demo ResNet on 128 images took up to 4 s on a loaded
2-core machine, and a check between steps made Cancel wait that long. The
checks here run before every leaf module's forward and as each parameter's
gradient arrives (also in ``torch.autograd.grad``, as HAP's Hessian-vector
products use it); raising there leaves the pass before the optimiser step, so
a cancelled step changes no weight.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
