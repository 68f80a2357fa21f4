"""Exporting a (pruned) model: ONNX, TorchScript and torch.export programs.

Each export writes to a temporary file in the target folder and renames it
into place, so a failed export never leaves a half-written file behind.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from secateur.core.common.errors import InputError, WorkError
from secateur.core.common.files import atomic_target

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}


def _onnx(model: nn.Module, example: torch.Tensor, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (example,), dynamo=True, input_names=["input"], output_names=["logits"], verbose=False
        )
    program.save(path)


def _torchscript(model: nn.Module, example: torch.Tensor, path: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, path)


def _pt2(model: nn.Module, example: torch.Tensor, path: str) -> None:
    torch.export.save(torch.export.export(model, (example,)), path)


_WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, str], None]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "pt2": _pt2,
}


def export_model(model: nn.Module, input_shape: tuple[int, ...], file_format: str, out: str | Path) -> Path:
    """Write ``model`` (traced on a batch of one) as ``file_format`` to ``out``, atomically."""
    if file_format not in _WRITERS:
        raise InputError(f"--format {file_format!r}: expected one of {', '.join(FORMATS)}")
    model = model.eval().cpu()
    example = torch.zeros((1, *input_shape))
    try:
        with atomic_target(out) as temporary, torch.no_grad():
            _WRITERS[file_format](model, example, temporary)
    except InputError:
        raise
    except Exception as error:
        raise WorkError(f"export to {file_format} failed: {type(error).__name__}: {error}") from None
    return Path(out)
