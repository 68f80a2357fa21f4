"""The host's guard on the model a method reads: a cheap fingerprint of every parameter and buffer.

A method must not change ``context.model``; the host fingerprints it before
scoring and compares afterwards. Per tensor: an xor of every element's bits
(``torch.hash_tensor``; exact, but blind to a permutation) and a sum over
every seventh element (which a permutation of channels changes), gathered in
one transfer: about 0.1 s for vit_b_16's 86 M parameters on two CPU cores,
far less than the scoring it guards.
"""

from __future__ import annotations

import torch
from torch import nn

Fingerprint = dict[str, tuple[tuple[int, ...], str, int | float, float]]


def _tensors(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]


@torch.no_grad()
def fingerprint(model: nn.Module) -> Fingerprint:
    """Every parameter and buffer by name: shape, dtype, bit hash and strided sum."""
    named = _tensors(model)
    if not named:
        return {}
    hash_tensor = getattr(torch, "hash_tensor", None)
    device = named[0][1].device
    if hash_tensor is not None:
        hashes_cpu = torch.stack([hash_tensor(t.detach()).to(device) for _, t in named]).cpu().tolist()
    else:  # torch before 2.8: a full float64 sum stands in for the bit hash
        hashes_cpu = torch.stack([t.detach().sum(dtype=torch.float64) for _, t in named]).cpu().tolist()
    sums = [t.detach().reshape(-1)[::7].sum(dtype=torch.float64) for _, t in named]
    sums_cpu = torch.stack(sums).cpu().tolist()
    return {
        name: (tuple(t.shape), str(t.dtype), h, float(s))
        for (name, t), h, s in zip(named, hashes_cpu, sums_cpu, strict=True)
    }


def changed_tensors(before: Fingerprint, after: Fingerprint) -> list[str]:
    """The names whose tensor was added, removed or changed between two fingerprints, in the model's order."""
    names = [*before, *(name for name in after if name not in before)]
    return [name for name in names if before.get(name) != after.get(name) and not _both_nan(before, after, name)]


def _both_nan(before: Fingerprint, after: Fingerprint, name: str) -> bool:
    """A NaN sum never equals itself; equal shapes, dtypes and hashes with NaN sums are unchanged."""
    if name not in before or name not in after:
        return False
    (shape_a, dtype_a, hash_a, sum_a), (shape_b, dtype_b, hash_b, sum_b) = before[name], after[name]
    return (shape_a, dtype_a, hash_a) == (shape_b, dtype_b, hash_b) and sum_a != sum_a and sum_b != sum_b
