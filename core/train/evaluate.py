"""Evaluation: accuracy and loss on a split, size and cost, measured latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from secateur.core.common.devices import synchronize
from secateur.core.common.errors import InputError, WorkError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.data.loading import DataBundle
from secateur.core.graph.layer_tree import count_params
from secateur.core.graph.macs import trace_modules

CPU = torch.device("cpu")


@dataclass
class Latency:
    """Wall-clock time of one forward pass of a batch, after warm-up, in milliseconds.

    ``p10``..``p90`` is the spread of the timed runs: on a loaded machine a
    single number can mislead (a pruned model reading slower than the original).
    """

    median: float
    p90: float
    batch_size: int
    device: str
    runs: int
    p10: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Metrics:
    """What ``secateur eval`` reports: accuracy in percent, mean loss, size, cost, latency."""

    accuracy: float
    loss: float
    params: int
    macs: int
    latency: Latency
    split: str
    samples: int

    def to_dict(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "params": self.params,
            "macs": self.macs,
            "latency_ms": self.latency.to_dict(),
            "split": self.split,
            "samples": self.samples,
        }


def _run_model(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    try:
        return model(images)
    except torch.cuda.OutOfMemoryError:
        raise WorkError("CUDA ran out of memory; try a smaller --batch-size or --device cpu") from None
    except (RuntimeError, AssertionError, ValueError) as error:  # torchvision's ViT asserts its image size
        raise InputError(
            f"the model cannot run on this data's inputs of shape {tuple(images.shape[1:])} ({error}); "
            "check that the model and the data SPEC belong together (channels, image size, --input-size)"
        ) from None


@torch.no_grad()
def accuracy_and_loss(
    model: nn.Module,
    data: DataBundle,
    split: str = "test",
    device: torch.device = CPU,
    batch_size: int = 256,
    num_workers: int = 0,
    progress: Progress = SILENT,
) -> tuple[float, float, int]:
    """Top-1 accuracy (percent), mean cross-entropy and sample count over a split."""
    model.eval().to(device)
    loader = data.loader(split, batch_size=batch_size, num_workers=num_workers)
    correct, loss_sum, seen = 0, 0.0, 0
    for step, (images, labels) in enumerate(loader):
        images, labels = images.to(device), labels.to(device)
        logits = _run_model(model, images)
        if logits.dim() != 2 or logits.shape[1] != data.num_classes:
            raise InputError(
                f"the model outputs shape {tuple(logits.shape[1:])} per sample but the data has "
                f"{data.num_classes} classes; give --num-classes {data.num_classes}"
            )
        loss_sum += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        correct += int((logits.argmax(dim=1) == labels).sum())
        seen += len(labels)
        progress(f"evaluate {split}", step + 1, len(loader))
    if seen == 0:
        raise InputError(f"the {split} split of {data.spec} is empty")
    return 100.0 * correct / seen, loss_sum / seen, seen


@torch.no_grad()
def measure_latency(
    model: nn.Module,
    input_shape: tuple[int, ...],
    device: torch.device = CPU,
    batch_size: int = 1,
    warmup: int = 5,
    runs: int = 20,
    progress: Progress = SILENT,
    channels_last: bool = False,
) -> Latency:
    """Median, 10th- and 90th-percentile time of a forward pass, after ``warmup`` untimed passes.

    ``channels_last`` times the model and input in that memory layout (often
    the faster one for convolutions on CPU); the model is converted in place.
    """
    if runs < 1 or warmup < 0:
        raise InputError(
            f"latency needs at least 1 timed run and no negative warm-up (got runs={runs}, warmup={warmup})"
        )
    model.eval().to(device)
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn((batch_size, *input_shape), generator=generator).to(device)
    if channels_last and batch.dim() == 4:
        model.to(memory_format=torch.channels_last)
        batch = batch.contiguous(memory_format=torch.channels_last)
    for _ in range(warmup):
        progress.check()
        _run_model(model, batch)
    synchronize(device)
    times = []
    for run in range(runs):
        started = time.perf_counter()
        _run_model(model, batch)
        synchronize(device)
        times.append((time.perf_counter() - started) * 1000.0)
        progress("latency", run + 1, runs)
    times.sort()
    return Latency(
        round(statistics.median(times), 4),
        round(_percentile(times, 0.9), 4),
        batch_size,
        str(device),
        runs,
        p10=round(_percentile(times, 0.1), 4),
    )


def _percentile(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values."""
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def model_macs(model: nn.Module, input_shape: tuple[int, ...], device: torch.device = CPU) -> int:
    """Per-sample MACs of ``model`` for inputs of ``input_shape``."""
    example = torch.zeros((1, *input_shape), device=device)
    return trace_modules(model.eval().to(device), example)[""].macs


def evaluate(
    model: nn.Module,
    data: DataBundle,
    device: torch.device = CPU,
    split: str = "test",
    batch_size: int = 256,
    num_workers: int = 0,
    latency_batch_size: int = 1,
    latency_runs: int = 20,
    progress: Progress = SILENT,
) -> Metrics:
    """Accuracy, loss, params, MACs and latency of ``model`` on ``data``'s split."""
    accuracy, loss, seen = accuracy_and_loss(model, data, split, device, batch_size, num_workers, progress)
    latency = measure_latency(model, data.input_shape, device, latency_batch_size, runs=latency_runs, progress=progress)
    return Metrics(
        accuracy=round(accuracy, 4),
        loss=loss,
        params=count_params(model),
        macs=model_macs(model, data.input_shape, device),
        latency=latency,
        split=split,
        samples=seen,
    )
