"""Fine-tune the demo in float64 through ``run_finetune`` (the core of ``secateur finetune``).

Run by tests/test_finetune_distributed.py, once alone and once under ``torchrun``: in float64
rounding cannot flip a ReLU gate, so the two runs must agree to far below 1e-5.
Usage: python ddp_float64.py FOLDER OUT BATCH
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.data import Dataset

from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.train.distributed import World
from secateur.core.train.finetune import FinetuneConfig
from secateur.core.workflow.finetune_run import FinetuneRequest, run_finetune


class Float64(Dataset):
    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.inner[index]
        return image.double(), label


def main(folder: str, out: str, batch: int) -> None:
    torch.set_num_threads(1)
    world = World.from_environment()
    world.join(torch.device("cpu"))
    data = load_data(f"imagefolder:{folder}", input_size=32)
    data = replace(data, train=Float64(data.train), calibration=Float64(data.calibration), test=Float64(data.test))
    loaded = load_model(parse_model_spec("demo"))
    loaded.model.double()
    config = FinetuneConfig(epochs=2, lr=0.01, steps_per_epoch=3)
    run_finetune(FinetuneRequest(loaded, data, config, RunSettings(batch_size=batch, seed=3), Path(out)), world)
    world.leave()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
