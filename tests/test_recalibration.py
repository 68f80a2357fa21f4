"""BatchNorm recalibration re-estimates running statistics from data, without training."""

from __future__ import annotations

import torch
from torch import nn

from secateur.core.train.batchnorm import recalibrate_batchnorm


def test_running_statistics_become_the_data_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    batches = [(torch.randn(8, 3, 10, 10) * 2 + 1, torch.zeros(8)) for _ in range(3)]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = recalibrate_batchnorm(model, batches, torch.device("cpu"))
    with torch.no_grad():
        features = torch.cat([model[0](images) for images, _ in batches])
    per_batch_var = torch.stack([model[0](images).var(dim=(0, 2, 3), unbiased=True) for images, _ in batches]).detach()
    assert used == 3 and not model.training
    assert torch.allclose(model[1].running_mean, features.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(model[1].running_var, per_batch_var.mean(0), atol=1e-4)  # cumulative average of batches
    assert model[1].momentum == 0.1  # restored
    assert all(torch.equal(model.state_dict()[k], v) for k, v in weights.items())
