"""The host's guard on the model a method reads: was it changed while the method ran?

A method must not change ``context.model``, the workspace's working copy.
A third-party method reads a private deep copy of the user's model, and
``changed_tensors`` compares every parameter and buffer of it with the user's
model's afterwards: names, shapes, dtypes and bits. One pass over both models
(about 0.13 s for vit_b_16's 86 M parameters on one loaded CPU core), exact (a
permutation, a write through ``.data`` or a replaced tensor are all seen, NaNs
compare equal to themselves), and no "before" pass is needed: the source is
the "before". A built-in method reads a copy that shares the user's storage
(``secateur.core.pruning.sharing``); ``written_tensors`` checks it by version
counters, and the conformance kit hashes the user's model around every
built-in method's scoring, which sees any write (through ``.data`` too).
"""

from __future__ import annotations

import torch
from torch import nn

_SAME_WIDTH_INTEGER = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict([*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)])


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers of its width (so NaN equals NaN and -0.0 differs from 0.0)."""
    tensor = tensor.detach()
    width = _SAME_WIDTH_INTEGER.get(tensor.element_size())
    if width is None or tensor.is_complex() or tensor.is_quantized:  # rare: compared by value
        return tensor
    return tensor.view(width)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device != b.device:
        b = b.to(a.device)
    return torch.equal(_bits(a), _bits(b))


@torch.no_grad()
def changed_tensors(source: nn.Module, copy: nn.Module) -> list[str]:
    """The parameters and buffers by which ``copy`` differs from ``source``: added, removed or changed, in order."""
    before, after = _tensors(source), _tensors(copy)
    names = [*before, *(name for name in after if name not in before)]
    return [name for name in names if name not in before or name not in after or not _same(after[name], before[name])]


def tensor_marks(model: nn.Module) -> dict[str, tuple[torch.Tensor, int]]:
    """Every parameter and buffer with its version counter, for ``written_tensors`` after a method ran."""
    return {name: (tensor, tensor._version) for name, tensor in _tensors(model).items()}


def written_tensors(model: nn.Module, marks: dict[str, tuple[torch.Tensor, int]]) -> list[str]:
    """The parameters and buffers of ``model`` written in place, replaced, added or removed since ``marks``.

    For a working copy that shares the user's storage (a built-in method's):
    no second pass over the data, and no copy to compare with. A write through
    ``.data`` bypasses the version counter and is not seen here; a third-party
    method therefore reads a private copy that ``changed_tensors`` compares bit for bit.
    """
    now = _tensors(model)
    names = [*marks, *(name for name in now if name not in marks)]
    return [name for name in names if name not in now or name not in marks or _moved(now[name], *marks[name])]


def _moved(tensor: torch.Tensor, marked: torch.Tensor, version: int) -> bool:
    return tensor is not marked or tensor._version != version
