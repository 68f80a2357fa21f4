"""Replaying edit records: the core's own kinds, and those that installed methods declare.

A checkpoint stores the structural edits that turned the base model into the
pruned one. The core's kinds (channels, blocks, heads) replay directly; any
other kind is looked up among the installed plugins' declarations, and a kind
that no installed method declares is refused naming the method and package
that wrote it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from secateur.core.common.errors import InputError
from secateur.core.pruning.contract import EditReplayer
from secateur.core.pruning.registry import installed_registry
from secateur.core.pruning.surgery import CORE_EDITS


def _replayer(edit: dict[str, Any]) -> EditReplayer:
    kind = edit.get("kind")
    if kind in CORE_EDITS:
        return CORE_EDITS[kind]
    declared = installed_registry().edit_kind(str(kind))
    if declared is not None:
        return declared[0].replay
    provider = edit.get("provider") or {}
    if provider:
        who = f"method {provider.get('method')} from package {provider.get('package')} {provider.get('version', '')}"
        raise InputError(f"edit kind {kind!r} was written by {who.strip()}, which is not installed; install it")
    raise InputError(f"edit kind {kind!r} is unknown to this Secateur and to its installed plugins")


def replay_edits(model: nn.Module, edits: list[dict[str, Any]], example: torch.Tensor) -> None:
    """Re-apply recorded edits to ``model`` in place, in order; every kind is resolved before the first runs."""
    replayers = [_replayer(edit) for edit in edits]
    for replay, edit in zip(replayers, edits, strict=True):
        replay(model, edit, example)
