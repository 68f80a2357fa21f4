"""Fine-tuning a pruned model to win back accuracy.

Defaults: SGD with Nesterov momentum 0.9, learning rate 0.01 with a cosine
schedule to zero, weight decay 5e-4, batch 128, on the train split; mixed
precision (bfloat16 autocast) on CUDA. After every epoch the model is
validated on the calibration split (never the test split) and the best epoch
is kept. Progress goes through callbacks per step and per epoch;
cancellation is checked every step and leaves the caller's model as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.train.evaluate import accuracy_and_loss


@dataclass
class FinetuneConfig:
    """Fine-tuning hyperparameters (documented defaults)."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise InputError(f"--finetune-epochs {self.epochs}: must not be negative")
        if not self.lr > 0:
            raise InputError(f"fine-tuning learning rate {self.lr}: must be positive")


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_accuracy: float
    val_loss: float


@dataclass
class FinetuneResult:
    model: nn.Module
    best_epoch: int
    history: list[EpochRecord] = field(default_factory=list)


def finetune(
    model: nn.Module,
    data: DataBundle,
    config: FinetuneConfig,
    settings: RunSettings,
    progress: Progress = SILENT,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FinetuneResult:
    """Train a copy of ``model`` (batch size, seed and device from ``settings``); returns it at its best epoch."""
    device = settings.device
    work = copy.deepcopy(model).to(device)
    torch.manual_seed(settings.seed)
    optimizer = torch.optim.SGD(
        work.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    loader = data.loader("train", settings.batch_size, True, settings.num_workers, settings.seed)
    total_steps = max(1, config.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    best_accuracy, _ = _validate(work, data, settings)
    best_state, best_epoch = copy.deepcopy(work.state_dict()), 0
    history: list[EpochRecord] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        work.train()
        running = 0.0
        for images, labels in loader:
            progress.check()
            loss = train_step(work, images, labels, optimizer, schedule, device)
            step += 1
            running += loss
            progress("fine-tune", step, total_steps)
            if on_step is not None:
                on_step(step, total_steps, loss)
        accuracy, val_loss = _validate(work, data, settings)
        record = EpochRecord(epoch, running / max(1, len(loader)), accuracy, val_loss)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if accuracy > best_accuracy:
            best_accuracy, best_state, best_epoch = accuracy, copy.deepcopy(work.state_dict()), epoch
    work.load_state_dict(best_state)
    return FinetuneResult(work.eval(), best_epoch, history)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    penalty: Callable[[], torch.Tensor] | None = None,
) -> float:
    """One step of cross-entropy training (bfloat16 autocast on CUDA) plus an optional penalty; returns the loss."""
    images, labels = images.to(device), labels.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = F.cross_entropy(model(images), labels)
    loss = loss.float() if penalty is None else loss.float() + penalty()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss.detach().item()


def _validate(model: nn.Module, data: DataBundle, settings: RunSettings) -> tuple[float, float]:
    batch_size, workers = settings.batch_size * 2, settings.num_workers
    accuracy, loss, _ = accuracy_and_loss(model, data, "calibration", settings.device, batch_size, workers)
    return accuracy, loss
