"""Fine-tuning a pruned model to win back accuracy: one training loop, on one process or many.

Defaults: SGD with Nesterov momentum 0.9, learning rate 0.01 with a cosine
schedule to zero, weight decay 5e-4, batch 128, on the train split; mixed
precision (bfloat16 autocast) on CUDA. After every epoch the model is
validated on the calibration split (never the test split) and the best epoch
is kept. Progress goes through callbacks per step and per epoch;
cancellation is checked every step and leaves the caller's model as it was.

``Trainer`` holds the loop's state (model, optimizer, schedule, epoch) and runs
one epoch at a time; ``finetune`` runs it to the end in memory, and the
``secateur finetune`` command (``secateur.core.workflow.finetune_run``) runs the
same trainer under ``torchrun``, saving and resuming between epochs. The
training order comes from a ``DistributedSampler`` (seeded, ``set_epoch`` every
epoch) in both cases, so K processes with batch B see exactly the batches of
one process with batch K·B.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from secateur.core.common.errors import InputError
from secateur.core.common.progress import SILENT, Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle
from secateur.core.train.distributed import SINGLE, World
from secateur.core.train.evaluate import accuracy_and_loss
from secateur.core.train.interrupt import checked_passes


@dataclass
class FinetuneConfig:
    """Fine-tuning hyperparameters (documented defaults); ``steps_per_epoch`` caps an epoch (None: all)."""

    epochs: int = 1
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    steps_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise InputError(f"--finetune-epochs {self.epochs}: must not be negative")
        if not self.lr > 0:
            raise InputError(f"fine-tuning learning rate {self.lr}: must be positive")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise InputError(f"--steps-per-epoch {self.steps_per_epoch}: must be at least 1")


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


class Trainer:
    """The fine-tuning loop's state, advanced one epoch at a time (on every process of a world)."""

    def __init__(
        self,
        model: nn.Module,
        data: DataBundle,
        config: FinetuneConfig,
        settings: RunSettings,
        world: World = SINGLE,
    ) -> None:
        self.data, self.config, self.settings, self.world = data, config, settings, world
        self.device = settings.device
        torch.manual_seed(settings.seed)
        self.model = copy.deepcopy(model).to(self.device)
        self.sampler = DistributedSampler(
            data.train, num_replicas=world.size, rank=world.rank, shuffle=True, seed=settings.seed
        )
        self.loader = DataLoader(
            data.train, batch_size=settings.batch_size, sampler=self.sampler, num_workers=settings.num_workers
        )
        self.steps_per_epoch = min(len(self.loader), config.steps_per_epoch or len(self.loader))
        self.total_steps = max(1, config.epochs * self.steps_per_epoch)
        self.optimizer = torch.optim.SGD(
            self.model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
        self.schedule = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.total_steps)
        self.network = world.wrap(self.model, self.device)  # what the loop calls: the model or its DDP
        self.epoch, self.step = 0, 0
        self.history: list[EpochRecord] = []
        self.best_accuracy, self.best_epoch = float("-inf"), 0

    def validate(self) -> tuple[float, float]:
        """Accuracy and loss on the calibration split (every process evaluates all of it, so all agree)."""
        batch_size, workers = self.settings.batch_size * 2, self.settings.num_workers
        accuracy, loss, _ = accuracy_and_loss(self.model, self.data, "calibration", self.device, batch_size, workers)
        return accuracy, loss

    def start(self) -> None:
        """Validate the starting model: an epoch must beat it to become the best."""
        self.best_accuracy, _ = self.validate()

    def run_epoch(
        self, progress: Progress = SILENT, on_step: Callable[[int, int, float], None] | None = None
    ) -> EpochRecord:
        """Train one epoch and validate; returns its record (the train loss is the mean over processes)."""
        self.epoch += 1
        self.sampler.set_epoch(self.epoch)
        self.network.train()
        running = 0.0
        for index, (images, labels) in enumerate(self.loader):
            if index == self.steps_per_epoch:
                break
            progress.check()
            # within-step checks only on one process: a rank that stopped mid-backward would hang the others
            check = None if self.world.distributed else progress.check
            loss = train_step(self.network, images, labels, self.optimizer, self.schedule, self.device, check=check)
            self.step += 1
            running += loss
            progress("fine-tune", self.step, self.total_steps)
            if on_step is not None:
                on_step(self.step, self.total_steps, loss)
        train_loss = self.world.mean(running / max(1, self.steps_per_epoch))
        accuracy, val_loss = self.validate()
        record = EpochRecord(self.epoch, train_loss, accuracy, val_loss)
        self.history.append(record)
        return record

    def improved(self, record: EpochRecord) -> bool:
        """Whether ``record`` is the best epoch so far (then it becomes the best)."""
        if record.val_accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = record.val_accuracy, record.epoch
            return True
        return False

    # --- resuming ---------------------------------------------------------------

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """What resuming needs: tensors (weights, optimizer buffers) and JSON-able progress."""
        tensors = {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer.state_dict()
        for index, buffers in optimizer["state"].items():
            for name, value in buffers.items():
                tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous().clone()
        record = {
            "epoch": self.epoch,
            "step": self.step,
            "best_accuracy": self.best_accuracy,
            "best_epoch": self.best_epoch,
            "history": [asdict(r) for r in self.history],
            "optimizer_groups": optimizer["param_groups"],
            "schedule": self.schedule.state_dict(),
            "config": asdict(self.config),
            "seed": self.settings.seed,
            "batch_size": self.settings.batch_size,
            "world_size": self.world.size,
        }
        return tensors, record

    def restore(self, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> None:
        """Continue from ``state()``'s output: the next epoch is the one after ``record['epoch']``."""
        weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        self.model.load_state_dict(weights, strict=True)
        buffers: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                buffers.setdefault(int(index), {})[name] = value.to(self.device)
        self.optimizer.load_state_dict({"state": buffers, "param_groups": record["optimizer_groups"]})
        self.schedule.load_state_dict(record["schedule"])
        self.epoch, self.step = int(record["epoch"]), int(record["step"])
        self.best_accuracy, self.best_epoch = float(record["best_accuracy"]), int(record["best_epoch"])
        self.history = [EpochRecord(**r) for r in record["history"]]


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
    trainer = Trainer(model, data, config, settings)
    trainer.start()
    best_state = copy.deepcopy(trainer.model.state_dict())
    for _ in range(config.epochs):
        record = trainer.run_epoch(progress, on_step)
        if on_epoch is not None:
            on_epoch(record)
        if trainer.improved(record):
            best_state = copy.deepcopy(trainer.model.state_dict())
    trainer.model.load_state_dict(best_state)
    return FinetuneResult(trainer.model.eval(), trainer.best_epoch, trainer.history)


def train_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler | None,
    device: torch.device,
    penalty: Callable[[], torch.Tensor] | None = None,
    check: Callable[[], None] | None = None,
) -> float:
    """One step of cross-entropy training (bfloat16 autocast on CUDA) plus an optional penalty; returns the loss.

    ``check`` (a cancel check that raises) runs throughout the forward and backward passes, so a cancelled step
    stops within a layer and before the optimiser step.
    """
    images, labels = images.to(device), labels.to(device)
    with checked_passes(model, check) if check is not None else nullcontext():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(images), labels)
        loss = loss.float() if penalty is None else loss.float() + penalty()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
    optimizer.step()
    if schedule is not None:
        schedule.step()
    return loss.detach().item()
