"""Pruned checkpoints: one .safetensors file that rebuilds the pruned model without pickle.

The file's metadata holds, as JSON, the base model SPEC and every structural
edit (replayed in order on the base architecture), plus the method, its
parameters and the metrics before and after. This module reads and writes
the file; ``secateur.core.pruning.loading`` rebuilds the model from it. Saving goes
through a temporary file and a rename, so a failure never leaves a
half-written file in place of a good one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.common.files import atomic_target
from secateur.core.model.specs import ModelSpec
from secateur.core.model.timm_models import timm_version

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
        record = {"base": self.base.to_dict(), "input_shape": list(self.input_shape), "edits": self.edits, **self.extra}
        libraries = library_versions(self.base)
        if libraries:
            record["libraries"] = libraries
        return json.dumps(record)

    def version_note(self) -> str:
        """Why a rebuild may not fit: the base was built by another timm version than the installed one."""
        recorded = (self.extra.get("libraries") or {}).get("timm")
        installed = timm_version()
        if self.base.kind != "timm" or recorded is None or recorded == installed:
            return ""
        return f" (the checkpoint was made with timm {recorded}; this machine has timm {installed or 'not installed'})"


def library_versions(base: ModelSpec) -> dict[str, str]:
    """The versions of the libraries whose code defines the base architecture (timm), for the metadata."""
    version = timm_version() if base.kind == "timm" else None
    return {"timm": version} if version else {}


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


def read_checkpoint_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors, on the CPU."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"checkpoint {path}: its tensors cannot be read ({error})") from None
