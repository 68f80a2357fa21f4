"""Layers of timm models that Torch-Pruning cannot keep consistent, and why they are locked.

timm's attention (``Attention`` in vision transformers and its relatives) computes its heads
from one ``qkv`` projection reshaped to ``(3, heads, head_dim)``: removing channels of that
projection, or of the embedding it reads, breaks the reshape unless whole heads go, which
Secateur does not yet do for timm's layout. Such groups are locked, and the plan names them.
"""

from __future__ import annotations

from torch import nn

from secateur.core.graph.attention import ATTENTION_TYPES


def is_timm_attention(module: nn.Module) -> bool:
    """A timm attention layer: timm's code, with a head count and q/k/v projections."""
    if isinstance(module, ATTENTION_TYPES) or not type(module).__module__.startswith("timm."):
        return False
    return hasattr(module, "num_heads") and any(hasattr(module, name) for name in ("qkv", "q", "q_proj"))


def timm_attention_lock(model: nn.Module, name: str | None) -> str:
    """Why the group holding layer ``name`` is locked, if ``name`` is (in) a timm attention layer; else ''."""
    if not name:
        return ""
    for candidate in (name, name.rpartition(".")[0]):
        if candidate and is_timm_attention(model.get_submodule(candidate)):
            return (
                f"timm attention {candidate}: its q/k/v channels go by whole heads, which Torch-Pruning "
                "cannot keep consistent in timm's layout; locked"
            )
    return ""
