"""Exporting a (pruned) model: ONNX, TorchScript and torch.export programs.

ONNX and torch.export programs have a dynamic batch axis (named ``batch``), so
one file serves any batch size; they are traced on a batch of two, since
tracing on one would let the exporter specialise the axis to 1. TorchScript
traces carry no shape constraints. Each export writes a temporary file in the
target folder, fsyncs it and renames it into place (with the user's umask), so
a failed export never leaves a half-written file behind.

ONNX stores a model in one protobuf, which cannot exceed 2 GiB; a model with
more than ``ONNX_INLINE_BYTES`` of weights keeps them in ``FILE.data`` beside
``FILE`` (ONNX's external data), which the file names and onnxruntime reads.
"""

from __future__ import annotations

import os
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from secateur.core.common.errors import InputError, WorkError
from secateur.core.common.files import atomic_target, temporary_name

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "pt2": ".pt2"}
TRACE_BATCH = 2
MAX_BATCH = 65536
ONNX_INLINE_BYTES = 1 << 30  # weights beyond this go to FILE.data: a protobuf holds at most 2 GiB


def _dynamic_batch(dynamic: bool) -> tuple[dict[int, object], ...] | None:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},) if dynamic else None


def _onnx(model: nn.Module, example: torch.Tensor, path: str, final: Path, dynamic: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["input"],
            output_names=["logits"],
            dynamic_shapes=_dynamic_batch(dynamic),
            verbose=False,
        )
    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    if weights <= ONNX_INLINE_BYTES:
        program.save(path, external_data=False)
        return
    # The file refers to its weights by name, so both are written under their final names in a private
    # folder beside the target, then moved in: the weights first, each through its own atomic rename.
    data = final.with_name(f"{final.name}.data")
    folder = temporary_name(final)  # named as a temporary file: a killed export's folder goes at the next save
    with atomic_target(data) as data_temporary:
        folder.mkdir()
        try:
            staged = folder / final.name
            program.save(staged, external_data=True)  # writes staged and staged.data
            os.replace(staged.with_name(data.name), data_temporary)
            os.replace(staged, path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _torchscript(model: nn.Module, example: torch.Tensor, path: str, final: Path, dynamic: bool) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example)
    torch.jit.save(traced, path)


def _pt2(model: nn.Module, example: torch.Tensor, path: str, final: Path, dynamic: bool) -> None:
    torch.export.save(torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch(dynamic)), path)


# (model, example, temporary path, final path, dynamic batch)
_WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, str, Path, bool], None]] = {
    "onnx": _onnx,
    "torchscript": _torchscript,
    "pt2": _pt2,
}


def export_model(
    model: nn.Module, input_shape: tuple[int, ...], file_format: str, out: str | Path, dynamic_batch: bool = True
) -> Path:
    """Write ``model`` as ``file_format`` to ``out``, atomically, with a dynamic batch axis unless told not to."""
    if file_format not in _WRITERS:
        raise InputError(f"--format {file_format!r}: expected one of {', '.join(FORMATS)}")
    model = model.eval().cpu()
    example = torch.zeros((TRACE_BATCH if dynamic_batch else 1, *input_shape))
    try:
        with atomic_target(out) as temporary, torch.no_grad():
            _WRITERS[file_format](model, example, temporary, Path(out), dynamic_batch)
    except InputError:
        raise
    except Exception as error:
        hint = " (if the model fixes its batch size, try --static-batch)" if dynamic_batch else ""
        raise WorkError(f"export to {file_format} failed: {type(error).__name__}: {error}{hint}") from None
    return Path(out)
