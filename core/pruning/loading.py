"""Loading any model SPEC, checkpoints included: base architecture, edits replayed, tensors loaded.

A checkpoint's edits can be of a plugin's kind, so rebuilding one needs the
plugin registry; this is why it lives beside pruning, not beside the file
format in ``secateur.core.model``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.model.checkpoint import CheckpointInfo, read_checkpoint_info, read_checkpoint_tensors
from secateur.core.model.specs import LoadedModel, ModelSpec, build_model
from secateur.core.model.weights import load_weights_into
from secateur.core.pruning.edits import replay_edits


def load_model(spec: ModelSpec, with_weights: bool = True) -> LoadedModel:
    """The ready model a SPEC describes, in eval mode: an architecture with its weights, or a checkpoint."""
    if spec.kind != "checkpoint":
        return build_model(spec, with_weights)
    loaded, _ = load_checkpoint_model(str(spec.path))
    loaded.source = spec.text()
    return loaded


def load_checkpoint_model(path: str | Path) -> tuple[LoadedModel, CheckpointInfo]:
    """Rebuild a pruned model: base architecture, edits replayed, tensors loaded strictly."""
    info = read_checkpoint_info(path)
    try:
        model = build_model(replace(info.base, weights=None), with_weights=False).model
        replay_edits(model, info.edits, torch.zeros((1, *info.input_shape)))
        load_weights_into(model, read_checkpoint_tensors(path), f"checkpoint {path}")
    except InputError as error:
        note = info.version_note()
        if not note:
            raise
        raise InputError(f"{error}{note}") from None
    loaded = LoadedModel(model.eval(), info.base, info.input_shape, edits=info.edits)  # type: ignore[arg-type]
    return loaded, info


def load_checkpoint(path: str | Path) -> nn.Module:
    """The pruned model saved at ``path``, in eval mode on the CPU: one import for training scripts."""
    return load_checkpoint_model(path)[0].model
