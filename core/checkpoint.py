"""Pruned checkpoints: one .safetensors file that rebuilds the pruned model without pickle.

The file's metadata holds, as JSON, the base model SPEC and every structural
edit (replayed in order on the base architecture), plus the method, its
parameters and the metrics before and after. Loading builds the base
architecture, replays the edits, and loads the tensors strictly. Saving goes
through a temporary file and a rename, so a failure never leaves a
half-written file in place of a good one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from secateur.core.errors import InputError
from secateur.core.files import atomic_target
from secateur.core.models import LoadedModel, ModelSpec, load_model
from secateur.core.surgery import replay_edits
from secateur.core.weights import load_weights_into

FORMAT = "secateur-checkpoint"
VERSION = 1


@dataclass
class CheckpointInfo:
    """What a checkpoint records besides its tensors."""

    base: ModelSpec
    input_shape: tuple[int, ...]
    edits: list[dict[str, Any]]
    extra: dict[str, Any] = field(default_factory=dict)  # method, params, seed, metrics, ...

    def to_json(self) -> str:
        return json.dumps(
            {
                "base": self.base.to_dict(),
                "input_shape": list(self.input_shape),
                "edits": self.edits,
                **self.extra,
            }
        )


def save_checkpoint(path: str | Path, model: nn.Module, info: CheckpointInfo) -> Path:
    """Write ``model``'s tensors and ``info`` atomically to ``path`` (a .safetensors file)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise InputError(f"--out {path}: a checkpoint is a .safetensors file; name it something.safetensors")
    tensors = {name: value.detach().cpu().contiguous().clone() for name, value in model.state_dict().items()}
    metadata = {"format": FORMAT, "version": str(VERSION), "secateur": info.to_json()}
    with atomic_target(path) as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return path


def read_checkpoint_info(path: str | Path) -> CheckpointInfo:
    """The metadata of a Secateur checkpoint, refusing files that are not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path}: no such file")
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(
            f"checkpoint {path}: not a readable .safetensors file (truncated or bad header: {error})"
        ) from None
    if metadata.get("format") != FORMAT:
        raise InputError(
            f"checkpoint {path}: a .safetensors file without Secateur's metadata; "
            "to load plain weights into an architecture use --weights FILE with its SPEC"
        )
    if metadata.get("version") != str(VERSION):
        raise InputError(
            f"checkpoint {path}: format version {metadata.get('version')} is not supported (expected {VERSION})"
        )
    try:
        record = json.loads(metadata["secateur"])
        base = ModelSpec(**record.pop("base"))
        input_shape = tuple(int(v) for v in record.pop("input_shape"))
        edits = list(record.pop("edits"))
    except (KeyError, TypeError, ValueError) as error:
        raise InputError(f"checkpoint {path}: its metadata is damaged ({error})") from None
    return CheckpointInfo(base, input_shape, edits, record)


def load_checkpoint_model(path: str | Path) -> tuple[LoadedModel, CheckpointInfo]:
    """Rebuild a pruned model: base architecture, edits replayed, tensors loaded strictly."""
    from safetensors.torch import load_file

    info = read_checkpoint_info(path)
    base = load_model(replace(info.base, weights=None), with_weights=False)
    model = base.model
    example = torch.zeros((1, *info.input_shape))
    replay_edits(model, info.edits, example)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"checkpoint {path}: its tensors cannot be read ({error})") from None
    load_weights_into(model, tensors, f"checkpoint {path}")
    loaded = LoadedModel(model.eval(), info.base, info.input_shape, edits=info.edits)  # type: ignore[arg-type]
    return loaded, info


def load_checkpoint(path: str | Path) -> nn.Module:
    """The pruned model saved at ``path``, in eval mode on the CPU: one import for training scripts."""
    return load_checkpoint_model(path)[0].model
