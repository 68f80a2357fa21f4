"""Running one training loop on several processes (PyTorch DistributedDataParallel under ``torchrun``).

``torchrun --nproc-per-node K`` starts K copies of the same command with ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK`` in their environment; ``World.from_environment`` joins them into one process
group (NCCL on CUDA, gloo on the CPU). Without those variables the world is a single process and
nothing distributed happens, so the same code serves both.

DDP averages gradients across processes; for the result to equal single-process training with the
same global batch, BatchNorm must also see the global batch: CUDA models get PyTorch's
``SyncBatchNorm``, CPU models (which ``SyncBatchNorm`` refuses) get ``GlobalBatchNorm``, which
all-reduces the batch statistics through differentiable collectives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from secateur.core.common.errors import InputError

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


@dataclass(frozen=True)
class World:
    """This process's place among the processes training together."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) prints and writes files."""
        return self.rank == 0

    @staticmethod
    def from_environment() -> World:
        """The world ``torchrun`` describes in the environment (a single process without it)."""
        try:
            size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise InputError("WORLD_SIZE, RANK and LOCAL_RANK must be whole numbers (torchrun sets them)") from None
        return World(rank, size, local_rank)

    def device_for(self, device: torch.device) -> torch.device:
        """Each process of a CUDA run takes the GPU of its local rank."""
        if self.distributed and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def join(self, device: torch.device) -> None:
        """Join the process group (NCCL for CUDA, gloo otherwise); a no-op for a single process."""
        if not self.distributed or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type != "cuda":
            _STATISTICS_GROUP[0] = dist.new_group()

    def leave(self) -> None:
        if self.distributed and dist.is_initialized():
            _STATISTICS_GROUP[0] = None
            dist.destroy_process_group()

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (itself for a single process)."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model as the training loop calls it: itself, or DDP with batch-wide BatchNorm."""
        if not self.distributed:
            return model
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        use_global_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model)


SINGLE = World()
# GlobalBatchNorm's collectives run in a process group of their own, so they never interleave with
# DDP's gradient buckets (which gloo could otherwise pair with them); set while the group exists
_STATISTICS_GROUP: list[dist.ProcessGroup | None] = [None]


class _GlobalSum(torch.autograd.Function):
    """All-reduce (sum) whose gradient is the all-reduced gradient, as the sum's gradient must be."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, group=_STATISTICS_GROUP[0])
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return _GlobalSum.apply(grad)


class GlobalBatchNorm:
    """Mixin for BatchNorm layers whose training statistics cover every process's batch.

    One collective per layer (its gradient is one too, so processes cannot pair them wrongly):
    the sums of ``x - c`` and ``(x - c)²`` with ``c`` the running mean, the same on every
    process, which keeps the variance free of cancellation. Eval mode is plain BatchNorm.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layer: nn.modules.batchnorm._BatchNorm = self  # type: ignore[assignment]
        if not (layer.training and dist.is_initialized()):
            return super().forward(x)  # type: ignore[misc]
        dims = [0, *range(2, x.dim())]
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        values = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        shift = layer.running_mean.detach().float().view(shape) if layer.running_mean is not None else 0.0
        shifted = values - shift
        count = float(values.numel() // values.shape[1]) * dist.get_world_size()
        sums = _GlobalSum.apply(torch.cat([shifted.sum(dims), (shifted * shifted).sum(dims)])) / count
        mean_shifted, square = sums.chunk(2)
        variance = (square - mean_shifted * mean_shifted).clamp_min(0.0)
        out = (shifted - mean_shifted.view(shape)) * torch.rsqrt(variance.view(shape) + layer.eps)
        if layer.affine:
            out = out * layer.weight.view(shape) + layer.bias.view(shape)
        if layer.track_running_stats and layer.running_mean is not None:
            mean = mean_shifted.detach() + shift.view(-1) if isinstance(shift, torch.Tensor) else mean_shifted.detach()
            _update_running(layer, mean, variance.detach(), count)
        return out


def _update_running(layer: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, variance: torch.Tensor, count: float):
    with torch.no_grad():
        layer.num_batches_tracked.add_(1)  # type: ignore[union-attr]
        momentum = layer.momentum if layer.momentum is not None else 1.0 / float(layer.num_batches_tracked)
        unbiased = variance * count / max(count - 1.0, 1.0)
        layer.running_mean.mul_(1 - momentum).add_(mean.to(layer.running_mean.dtype), alpha=momentum)  # type: ignore[union-attr]
        layer.running_var.mul_(1 - momentum).add_(unbiased.to(layer.running_var.dtype), alpha=momentum)  # type: ignore[union-attr]


_GLOBAL_CLASSES = {
    base: type(f"Global{base.__name__}", (GlobalBatchNorm, base), {"__doc__": f"{base.__name__} over every process."})
    for base in _BATCHNORMS
}


def use_global_batchnorm(model: nn.Module) -> int:
    """Make the plain BatchNorm layers of ``model`` compute global statistics, in place; returns how many.

    Only the class changes (parameters, buffers and names stay), so state dicts are unchanged.
    """
    changed = 0
    for module in model.modules():
        if type(module) in _GLOBAL_CLASSES:
            module.__class__ = _GLOBAL_CLASSES[type(module)]
            changed += 1
    return changed
