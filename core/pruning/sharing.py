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
import functools
import types

import torch
from torch import nn


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules whose parameters and buffers share ``model``'s storage.

    A model made of plain modules (every attribute a number, a string, a
    class, a function or a container of those; no hooks) is copied module by
    module, each a new object over a copy of its attribute dictionary with new
    containers: 3-5 ms on mobilenet_v2 where ``copy.deepcopy`` took 15-20 ms.
    Any other model (hooks, unregistered tensors, custom objects, its own copy
    protocol) is deep-copied, so that nothing it holds is shared with the
    user's model.
    """
    memo: dict[int, object] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach(), requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach()
    copied = _structural_copy(model, memo)
    return copied if copied is not None else copy.deepcopy(model, memo)


_PLAIN_TYPES = (bool, int, float, complex, str, bytes, type(None), torch.dtype, torch.device, torch.layout, type)
_SHARED_TYPES = (types.FunctionType, types.BuiltinFunctionType)  # copy.deepcopy shares these too
_HOOK_SLOTS = {name for name in nn.Module().__dict__ if "hooks" in name}


def _plain(value: object, containers: bool = True) -> bool:
    """Whether ``value`` is made of numbers, strings, classes and functions only (``deepcopy`` would rebuild it as is).

    With ``containers``, lists, sets and dicts of such are plain too: the copy gets new ones (``_fresh``).
    """
    if isinstance(value, _PLAIN_TYPES + _SHARED_TYPES):
        return True
    if type(value) in (tuple, frozenset) or (containers and type(value) in (list, set)):
        return all(_plain(item, containers) for item in value)
    if containers and type(value) is dict:
        return all(_plain(key) and _plain(item) for key, item in value.items())
    if type(value) is functools.partial:  # torchvision's norm_layer=partial(LayerNorm, eps=1e-6), shared as is
        return all(_plain(part, containers=False) for part in (value.func, value.args, *value.keywords.values()))
    return False


_CONTAINERS = (list, set, dict, tuple)  # a tuple may hold a list


def _fresh(value: object) -> object:
    """A plain value with new containers (a list the copy changes stays the original's)."""
    kind = type(value)
    if kind not in _CONTAINERS:
        return value
    if kind in (list, set):
        return kind(_fresh(item) for item in value)
    if kind is dict:
        return {key: _fresh(item) for key, item in value.items()}
    return tuple(_fresh(item) for item in value) if any(type(item) in _CONTAINERS for item in value) else value


def _torch_own(method: object) -> bool:
    """A method of torch's own (``Conv2d.__setstate__`` only fills in attributes that old pickles lack)."""
    return method is nn.Module.__setstate__ or getattr(method, "__module__", "").startswith("torch.")


def _copyable(module: nn.Module) -> bool:
    """A module ``copy.deepcopy`` would rebuild from its attribute dictionary alone, holding nothing mutable."""
    kind = type(module)
    if (
        hasattr(kind, "__deepcopy__")
        or kind.__reduce_ex__ is not object.__reduce_ex__
        or kind.__reduce__ is not object.__reduce__
        or not _torch_own(kind.__setstate__)
        or kind.__getstate__ is not nn.Module.__getstate__
    ):
        return False
    for name, value in module.__dict__.items():
        if name in _HOOK_SLOTS:
            if value:  # a hook may be bound to a module of this model: deepcopy rebinds it to the copy
                return False
        elif name in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
            continue
        elif not _plain(value):
            return False
    return True


def _structural_copy(model: nn.Module, tensors: dict[int, object]) -> nn.Module | None:
    """New module objects over ``tensors`` (the copies by ``id`` of the originals), or None if a module is not plain."""
    originals = list(model.modules())  # each module once, shared ones included
    if not all(_copyable(module) for module in originals):
        return None
    copies: dict[int, nn.Module] = {}
    for module in originals:
        # as deepcopy reads it, every container new (the set of non-persistent buffer names included)
        state = {name: _fresh(value) for name, value in module.__getstate__().items()}
        for name in _HOOK_SLOTS:
            state[name] = type(state[name])()
        state["_parameters"] = {n: None if t is None else tensors[id(t)] for n, t in module._parameters.items()}
        state["_buffers"] = {n: None if t is None else tensors[id(t)] for n, t in module._buffers.items()}
        twin = object.__new__(type(module))
        twin.__dict__.update(state)
        copies[id(module)] = twin
    for module in originals:
        copies[id(module)].__dict__["_modules"] = {
            name: None if child is None else copies[id(child)] for name, child in module._modules.items()
        }
    return copies[id(model)]


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
