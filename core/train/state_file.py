"""The resume state of a fine-tuning run: a safetensors file beside its checkpoint, never a pickle.

``pruned.safetensors`` (the checkpoint, best epoch so far) gets ``pruned.state.safetensors``: the
last finished epoch's weights and optimizer buffers as tensors, and as JSON metadata the epoch,
step, learning-rate schedule, optimizer settings, history and the model it belongs to. It is
written (atomically) before the checkpoint at the end of every epoch, so whenever a run dies
the state names the last finished epoch and everything needed to continue from it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from secateur.core.common.errors import InputError
from secateur.core.common.files import atomic_target

STATE_FORMAT = "secateur-finetune-state"
STATE_VERSION = "1"


def state_path(checkpoint: str | Path) -> Path:
    """``run.safetensors`` → ``run.state.safetensors``, beside it."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"{checkpoint.stem}.state.safetensors")


def save_state(path: str | Path, tensors: dict[str, torch.Tensor], record: dict[str, Any]) -> Path:
    """Write a resume state atomically (fsynced, renamed into place)."""
    metadata = {"format": STATE_FORMAT, "version": STATE_VERSION, "state": json.dumps(record)}
    with atomic_target(path, "--out") as temporary:
        save_file(tensors, temporary, metadata=metadata)
    return Path(path)


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A resume state's tensors and record, refusing a file that is not one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(
            f"--resume: no state file {path}; it is written beside --out after every finished epoch "
            "(run without --resume to start afresh)"
        )
    try:
        with safe_open(str(path), "pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise InputError(f"--resume: {path} is not a readable .safetensors file ({error})") from None
    if metadata.get("format") != STATE_FORMAT or metadata.get("version") != STATE_VERSION:
        raise InputError(f"--resume: {path} is not a Secateur fine-tuning state (version {STATE_VERSION})")
    try:
        record = json.loads(metadata["state"])
    except (KeyError, ValueError) as error:
        raise InputError(f"--resume: the metadata of {path} is damaged ({error})") from None
    return tensors, record
