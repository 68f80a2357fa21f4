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

from secateur.core.data import DataBundle
from secateur.core.errors import InputError
from secateur.core.evaluate import accuracy_and_loss
from secateur.core.progress import SILENT, Progress


@dataclass
class FinetuneConfig:
    """Fine-tuning hyperparameters (documented defaults)."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    num_workers: int = 0
    seed: int = 0

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
    device: torch.device,
    progress: Progress = SILENT,
    on_step: Callable[[int, int, float], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> FinetuneResult:
    """Train a copy of ``model``; returns the copy at its best validation epoch."""
    work = copy.deepcopy(model).to(device)
    torch.manual_seed(config.seed)
    optimizer = torch.optim.SGD(
        work.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
    )
    loader = data.loader("train", config.batch_size, shuffle=True, num_workers=config.num_workers, seed=config.seed)
    total_steps = max(1, config.epochs * len(loader))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    autocast = device.type == "cuda"
    best_accuracy, _ = _validate(work, data, device, config)
    best_state, best_epoch = copy.deepcopy(work.state_dict()), 0
    history: list[EpochRecord] = []
    step = 0
    for epoch in range(1, config.epochs + 1):
        work.train()
        running = 0.0
        for images, labels in loader:
            progress.check()
            images, labels = images.to(device), labels.to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(work(images), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            running += loss.detach().item()
            progress("fine-tune", step, total_steps)
            if on_step is not None:
                on_step(step, total_steps, loss.detach().item())
        accuracy, val_loss = _validate(work, data, device, config)
        record = EpochRecord(epoch, running / max(1, len(loader)), accuracy, val_loss)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if accuracy > best_accuracy:
            best_accuracy, best_state, best_epoch = accuracy, copy.deepcopy(work.state_dict()), epoch
    work.load_state_dict(best_state)
    return FinetuneResult(work.eval(), best_epoch, history)


def _validate(model: nn.Module, data: DataBundle, device: torch.device, config: FinetuneConfig) -> tuple[float, float]:
    accuracy, loss, _ = accuracy_and_loss(model, data, "calibration", device, config.batch_size * 2, config.num_workers)
    return accuracy, loss
