"""Layers of timm models that Torch-Pruning cannot keep consistent, and why they are locked.

timm's attention (``Attention`` in vision transformers and its relatives) computes its heads
from one ``qkv`` projection reshaped to ``(3, heads, head_dim)``: removing channels of that
projection, or of the embedding it reads, breaks the reshape unless whole heads go. Secateur
prunes whole heads of the plain fused-qkv layout (``secateur.core.graph.attention``); timm
attention variants it does not recognise (extra per-head tensors, other projections) keep the
groups that touch them locked, and the plan names them.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from secateur.core.graph.attention import is_attention


def is_timm_attention(module: nn.Module) -> bool:
    """A timm attention layer that Secateur cannot prune by heads: timm's code, a head count, q/k/v projections."""
    if is_attention(module) or not type(module).__module__.startswith("timm."):
        return False
    return hasattr(module, "num_heads") and any(hasattr(module, name) for name in ("qkv", "q", "q_proj"))


def timm_attention_lock(modules: Mapping[str, nn.Module], name: str | None) -> str:
    """Why the group holding layer ``name`` is locked, if ``name`` is (in) a timm attention layer; else ''.

    ``modules``: the model's modules by name.
    """
    if not name:
        return ""
    for candidate in (name, name.rpartition(".")[0]):
        if candidate and is_timm_attention(modules[candidate]):
            return (
                f"timm attention {candidate}: its q/k/v channels go by whole heads, and this variant of "
                "timm's layout is not one Secateur prunes by heads; locked"
            )
    return ""
