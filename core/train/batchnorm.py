"""BatchNorm recalibration: new running statistics for a pruned model, from data, without training."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: list[torch.Tensor] | Any, device: torch.device, max_batches: int = 50
) -> int:
    """Re-estimate BatchNorm running statistics on data (cumulative average), without training.

    Pruning shifts the statistics that downstream BatchNorm layers expect;
    recomputing them on calibration data often recovers much of the accuracy.
    Returns the number of batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = {m: m.momentum for m in norms}
    for module in norms:
        module.reset_running_stats()
        module.momentum = None
    was_training = model.training
    model.train()
    used = 0
    try:
        for images, *_ in batches:
            if used >= max_batches:
                break
            model(images.to(device))
            used += 1
    finally:
        for module, momentum in saved.items():
            module.momentum = momentum
        model.train(was_training)
    return used
