from __future__ import annotations

import pytest
import torch

from secateur.core.common.devices import moved_to, resolve_device
from secateur.core.common.errors import InputError


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_missing_cuda_is_refused_not_replaced() -> None:
    with pytest.raises(InputError, match="CUDA is not available"):
        resolve_device("cuda:0")


def test_unknown_device_names_the_accepted_values() -> None:
    with pytest.raises(InputError, match="expected auto, cpu, cuda, cuda:N or mps"):
        resolve_device("gpu")


def test_moved_to_keeps_a_module_already_there_and_moves_one_that_is_not() -> None:
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    weight = module[0].weight
    assert moved_to(module, torch.device("cpu")) is module and module[0].weight is weight
    moved = moved_to(module, torch.device("meta"))
    assert {tensor.device.type for tensor in (*moved.parameters(), *moved.buffers())} == {"meta"}
