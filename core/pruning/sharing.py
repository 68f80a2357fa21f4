"""The workspace's working copy: its own modules over the user's tensors, until surgery.

A full deep copy of the user's model (so that tracing, scoring and surgery
never touch it) cost 0.2–0.8 s on vit_b_16, most of Secateur's overhead over
calling Torch-Pruning directly. Surgery replaces the tensors it prunes with new
ones and never writes into the old; so the working copy can be new module
objects over the user's own parameters and buffers (new ``Parameter`` objects
on the same storage: a flag such as ``requires_grad`` set on the copy stays on
the copy), and ``unshare`` clones whatever the pruned result still shares once
surgery is done, so that training the result never reaches the user's model.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model``'s modules whose parameters and buffers share ``model``'s storage."""
    memo: dict[int, object] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach(), requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach()
    return copy.deepcopy(model, memo)


def _storages(model: nn.Module) -> set[int]:
    tensors = [*model.parameters(), *model.buffers()]
    return {t.untyped_storage().data_ptr() for t in tensors if t.numel()}


def unshare(result: nn.Module, source: nn.Module) -> int:
    """Give ``result`` its own copy of every parameter and buffer it shares with ``source``; returns how many.

    A tensor held by two modules of ``result`` (tied weights) stays one tensor.
    """
    shared = _storages(source)
    clones: dict[int, torch.Tensor] = {}
    for module in result.modules():
        for slots in (module._parameters, module._buffers):
            for name, tensor in slots.items():
                if tensor is None or not tensor.numel() or tensor.untyped_storage().data_ptr() not in shared:
                    continue
                if id(tensor) not in clones:
                    clone = tensor.detach().clone()
                    if isinstance(tensor, nn.Parameter):
                        clone = nn.Parameter(clone, requires_grad=tensor.requires_grad)
                    clones[id(tensor)] = clone
                slots[name] = clones[id(tensor)]
    return len(clones)
