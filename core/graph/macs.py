"""Counting multiply-accumulates (MACs) and output shapes per module, in one forward pass.

Only layers that multiply-accumulate are counted: convolutions, linear layers
and attention (its projections and its two matrix products), per input
sample. Element-wise work (BatchNorm, activations, pooling) is not counted,
which is the convention of fvcore and of published MACs figures
(torchvision's resnet50 at 224×224: 4.1 G).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class ModuleRecord:
    """What one forward pass saw of one module: its first output shape and its MACs."""

    output_shape: tuple[int, ...] | None = None
    macs: int = 0  # this module and its descendants
    own_macs: int = 0  # this module's own work (its children's not included)
    calls: int = 0
    order: int = -1  # position of the first call in the forward pass


def _first_tensor(value: object) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for item in value:
            found = _first_tensor(item)
            if found is not None:
                return found
    if isinstance(value, dict):
        for item in value.values():
            found = _first_tensor(item)
            if found is not None:
                return found
    return None


def module_macs(module: nn.Module, inputs: tuple, output: object) -> int:
    """MACs of one call of a leaf module, for the whole batch it was given."""
    out = _first_tensor(output)
    if out is None:
        return 0
    if isinstance(module, nn.modules.conv._ConvNd):
        kernel = math.prod(module.kernel_size)
        if module.transposed:
            source = _first_tensor(inputs)
            return 0 if source is None else source.numel() * (module.out_channels // module.groups) * kernel
        return out.numel() * (module.in_channels // module.groups) * kernel
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.Bilinear):
        return out.numel() * module.in1_features * module.in2_features
    if isinstance(module, nn.MultiheadAttention):
        return _attention_macs(module, inputs)
    return 0


def _attention_macs(module: nn.MultiheadAttention, inputs: tuple) -> int:
    query, key = inputs[0], inputs[1] if len(inputs) > 1 else inputs[0]
    batch_dim, seq_dim = (0, 1) if module.batch_first else (1, 0)
    batched = query.dim() == 3
    batch = query.shape[batch_dim] if batched else 1
    target_len = query.shape[seq_dim] if batched else query.shape[0]
    source_len = key.shape[seq_dim] if batched else key.shape[0]
    embed = module.embed_dim
    projections = target_len * embed * embed + source_len * embed * (module.kdim + module.vdim)
    products = 2 * target_len * source_len * embed
    out_projection = target_len * embed * embed
    return batch * (projections + products + out_projection)


@contextmanager
def recording_modules(model: nn.Module) -> Iterator[dict[str, ModuleRecord]]:
    """Record what every named module sees during the forward passes made inside the block.

    Lets a caller count MACs during a forward pass it makes anyway (Torch-Pruning's
    graph tracing), instead of running the model once more; call
    ``finish_records`` after the block.
    """
    records = {name: ModuleRecord() for name, _ in model.named_modules()}
    handles = []
    call_count = [0]

    def make_hook(name: str, leaf: bool):
        def hook(module: nn.Module, inputs: tuple, output: object) -> None:
            record = records[name]
            record.calls += 1
            if record.order < 0:
                record.order = call_count[0]
                call_count[0] += 1
            if record.output_shape is None:
                tensor = _first_tensor(output)
                record.output_shape = None if tensor is None else tuple(tensor.shape)
            if leaf:
                record.own_macs += module_macs(module, inputs, output)
            elif hasattr(module, "product_macs"):  # attention that counts its matrix products itself
                record.own_macs += module.product_macs(inputs)

        return hook

    for name, module in model.named_modules():
        is_leaf = not any(True for _ in module.children()) or isinstance(module, nn.MultiheadAttention)
        handles.append(module.register_forward_hook(make_hook(name, is_leaf)))
    try:
        yield records
    finally:
        for handle in handles:
            handle.remove()


def finish_records(model: nn.Module, records: dict[str, ModuleRecord], batch: int) -> dict[str, ModuleRecord]:
    """Per-sample MACs, with each container's MACs the sum of its own and its children's."""
    for record in records.values():
        record.own_macs //= batch
    _add_up_containers(model, records)
    return records


def trace_modules(model: nn.Module, example: torch.Tensor) -> dict[str, ModuleRecord]:
    """Output shape (batch dimension included) and per-sample MACs of every named module.

    A module called more than once (a shared ReLU, a weight-tied layer) adds
    up its MACs; its shape is that of its first call. Containers get the sum of
    their descendants' MACs.
    """
    with recording_modules(model) as records, torch.no_grad():
        model(example)
    return finish_records(model, records, example.shape[0])


def _add_up_containers(model: nn.Module, records: dict[str, ModuleRecord]) -> None:
    """Set each module's MACs to its own plus its children's (deepest first)."""
    names = [name for name, _ in model.named_modules()]
    for name in sorted(names, key=lambda n: n.count(".") if n else -1, reverse=True):
        module = model.get_submodule(name) if name else model
        children = [f"{name}.{child}" if name else child for child, _ in module.named_children()]
        records[name].macs = records[name].own_macs + sum(records[c].macs for c in children if c in records)
