"""The settings every job runs under: device, seed, batch size and data-loader workers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class RunSettings:
    """Where and how a job runs; one object instead of four loose arguments."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    batch_size: int = 128
    num_workers: int = 0


class UsesSettings:
    """Read access to a ``settings: RunSettings`` attribute's fields, for the objects that carry one."""

    settings: RunSettings

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def seed(self) -> int:
        return self.settings.seed

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    @property
    def num_workers(self) -> int:
        return self.settings.num_workers
