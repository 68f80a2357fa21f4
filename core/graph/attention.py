"""Attention heads: scoring them, removing them, and the module that carries fewer heads.

``nn.MultiheadAttention`` ties its number of heads to its embedding width, so
removing heads while keeping the residual stream's width needs another
module: ``HeadPrunedAttention`` computes the same function with separate
query/key/value projections of ``heads × head_dim`` outputs. Replacing a
``nn.MultiheadAttention`` by it with all heads kept is exact; removing a head
drops its rows of the q/k/v projections and its columns of the output
projection.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from secateur.core.common.errors import InputError


class HeadPrunedAttention(nn.Module):
    """Multi-head attention whose heads may be fewer than ``embed_dim / head_dim``.

    Called like ``nn.MultiheadAttention`` (query, key, value, masks,
    ``need_weights``) and returns ``(output, None)``: attention weights are not
    materialised, as with ``need_weights=False``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.batch_first, self.dropout = batch_first, dropout
        where = {"device": device, "dtype": dtype}
        self.q_proj = nn.Linear(embed_dim, inner, bias=bias, **where)
        self.k_proj = nn.Linear(embed_dim, inner, bias=bias, **where)
        self.v_proj = nn.Linear(embed_dim, inner, bias=bias, **where)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **where)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, target, _ = query.shape
        source = key.shape[1]

        def heads(projection: nn.Linear, tensor: torch.Tensor, length: int) -> torch.Tensor:
            return projection(tensor).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        mask = _additive(attn_mask, query.dtype)
        padding = _additive(key_padding_mask, query.dtype)
        if padding is not None:
            padding = padding[:, None, None, :]
            mask = padding if mask is None else mask + padding
        out = F.scaled_dot_product_attention(
            heads(self.q_proj, query, target),
            heads(self.k_proj, key, source),
            heads(self.v_proj, value, source),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )
        out = self.out_proj(out.transpose(1, 2).reshape(batch, target, self.num_heads * self.head_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None

    def product_macs(self, inputs: tuple) -> int:
        """MACs of q·kᵀ and attention·v for one call (the projections are counted as Linear layers)."""
        query, key = inputs[0], inputs[1]
        seq = 1 if self.batch_first else 0
        batch = query.shape[1 - seq] if query.dim() == 3 else 1
        return batch * 2 * query.shape[seq] * key.shape[seq] * self.num_heads * self.head_dim


ATTENTION_TYPES = (nn.MultiheadAttention, HeadPrunedAttention)
HEADS_SUFFIX = ":heads"  # the group of an attention layer's heads is "<layer>:heads"


def is_fused_qkv_attention(module: nn.Module) -> bool:
    """Attention in timm's layout: a ``qkv`` Linear read as (3, heads, head_dim), a ``proj`` Linear, ``num_heads``.

    Recognised by its attributes, so a user's own module written that way
    (and timm's ``Attention``) qualifies; its forward must reshape with
    ``num_heads`` and ``head_dim`` (or ``attn_dim``), which head removal updates.
    """
    return looks_fused_qkv(module) and not _other_head_tensors(module)


def looks_fused_qkv(module: nn.Module) -> bool:
    """A ``qkv`` Linear of 3 × heads × head_dim outputs, a ``proj`` Linear reading heads × head_dim, ``num_heads``."""
    qkv, proj, heads = getattr(module, "qkv", None), getattr(module, "proj", None), getattr(module, "num_heads", None)
    if not isinstance(qkv, nn.Linear) or not isinstance(proj, nn.Linear) or not isinstance(heads, int) or heads < 1:
        return False
    return qkv.out_features % (3 * heads) == 0 and proj.in_features == qkv.out_features // 3


_HEAD_PARTS = {"qkv", "proj", "q_norm", "k_norm", "norm", "gate", "attn_drop", "proj_drop"}


def _other_head_tensors(module: nn.Module) -> bool:
    """Tensors besides the known parts (Swin's relative position bias, its v2 logit scale), which may run per head."""
    own = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
    return own or any(
        name not in _HEAD_PARTS and any(True for _ in child.parameters()) for name, child in module.named_children()
    )


def is_attention(module: nn.Module) -> bool:
    """Whether ``module`` is an attention layer whose heads Secateur can score and remove."""
    return isinstance(module, ATTENTION_TYPES) or is_fused_qkv_attention(module)


def head_internal(modules: Mapping[str, nn.Module], name: str, is_out: bool) -> str | None:
    """The fused-qkv attention whose heads' dimensions this channel dependency cuts (qkv outputs, proj inputs).

    ``modules``: the model's modules by name, the model itself as "".
    """
    parent_name, _, child = name.rpartition(".")
    if child not in ("qkv", "proj", "gate", "norm"):
        return None
    if not looks_fused_qkv(modules[parent_name]):
        return None
    return parent_name if (child == "proj") != is_out else None


def _additive(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """A mask in nn.MultiheadAttention's sense (True or -inf = not attended) as an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def projection_weights(module: nn.Module) -> list[nn.Parameter]:
    """The attention's q, k, v and output projection weights (views for nn.MultiheadAttention's packed one)."""
    if is_fused_qkv_attention(module):
        return [module.qkv.weight, module.proj.weight]
    if isinstance(module, nn.MultiheadAttention):
        if not module._qkv_same_embed_dim:
            raise InputError("attention with separate key/value widths (kdim/vdim) cannot have its heads pruned")
        return [module.in_proj_weight, module.out_proj.weight]
    return [module.q_proj.weight, module.k_proj.weight, module.v_proj.weight, module.out_proj.weight]


def per_head(module: nn.Module, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Split tensors shaped like ``projection_weights(module)`` into (heads, -1) rows: q, k, v rows, out columns."""
    heads = module.num_heads
    if isinstance(module, nn.MultiheadAttention) or is_fused_qkv_attention(module):
        packed, out = tensors
        q, k, v = packed.chunk(3, dim=0)
    else:
        q, k, v, out = tensors
    head_dim = q.shape[0] // heads
    rows = [w.reshape(heads, -1) for w in (q, k, v)]
    columns = out.reshape(out.shape[0], heads, head_dim).transpose(0, 1).reshape(heads, -1)
    return [*rows, columns]


@torch.no_grad()
def prune_heads(module: nn.Module, kept: list[int]) -> HeadPrunedAttention:
    """A ``HeadPrunedAttention`` computing ``module`` with only the ``kept`` heads."""
    if not kept:
        raise InputError("an attention layer must keep at least one head")
    if isinstance(module, nn.MultiheadAttention):
        head_dim = module.embed_dim // module.num_heads
        q, k, v = module.in_proj_weight.chunk(3, dim=0)
        biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
        source = {"q": (q, biases[0]), "k": (k, biases[1]), "v": (v, biases[2])}
        out_weight, out_bias = module.out_proj.weight, module.out_proj.bias
        dropout, batch_first = module.dropout, module.batch_first
    else:
        head_dim = module.head_dim
        source = {
            name: (getattr(module, f"{name}_proj").weight, getattr(module, f"{name}_proj").bias) for name in "qkv"
        }
        out_weight, out_bias = module.out_proj.weight, module.out_proj.bias
        dropout, batch_first = module.dropout, module.batch_first
    index = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in sorted(kept)]).to(out_weight.device)
    # built on the meta device: every tensor is overwritten below, so a random initialisation would be wasted
    bias, where = out_bias is not None, {"device": "meta", "dtype": out_weight.dtype}
    pruned = HeadPrunedAttention(module.embed_dim, len(kept), head_dim, bias, batch_first, float(dropout), **where)
    pruned = pruned.to_empty(device=out_weight.device)
    for name, (weight, bias) in source.items():
        projection = getattr(pruned, f"{name}_proj")
        projection.weight.copy_(weight[index])
        if bias is not None:
            projection.bias.copy_(bias[index])
        elif projection.bias is not None:  # a projection without bias beside an output projection with one
            projection.bias.zero_()
    pruned.out_proj.weight.copy_(out_weight[:, index])
    if out_bias is not None:
        pruned.out_proj.bias.copy_(out_bias)
    return pruned.train(module.training)


def replace_module(model: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put ``replacement`` at the dotted path ``name`` inside ``model``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, replacement)


@torch.no_grad()
def prune_fused_heads(module: nn.Module, kept: list[int]) -> None:
    """Keep only the ``kept`` heads of a fused-qkv (timm-layout) attention, in place.

    Drops each removed head's rows of q, k and v in ``qkv`` (laid out as
    3 × heads × head_dim), its columns of ``proj`` and its slice of an optional
    ``gate`` Linear or ``norm`` over the heads; ``num_heads`` (and ``attn_dim``
    when present) follow, ``head_dim`` and the scale stay.
    """
    heads = module.num_heads
    if not kept or not all(0 <= h < heads for h in kept):
        raise InputError(f"an attention layer keeps between 1 and {heads} heads, given {sorted(kept)}")
    head_dim = module.qkv.out_features // (3 * heads)
    inner = heads * head_dim
    per_head = torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in sorted(kept)])
    rows = torch.cat([part * inner + per_head for part in range(3)]).to(module.qkv.weight.device)
    _keep_rows(module.qkv, rows)
    _keep_columns(module.proj, per_head.to(module.proj.weight.device))
    gate, norm = getattr(module, "gate", None), getattr(module, "norm", None)
    if isinstance(gate, nn.Linear) and gate.out_features == inner:
        _keep_rows(gate, per_head.to(gate.weight.device))
    if isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (inner,):
        for attribute in ("weight", "bias"):
            if getattr(norm, attribute) is not None:
                setattr(norm, attribute, nn.Parameter(getattr(norm, attribute)[per_head.to(norm.weight.device)]))
        norm.normalized_shape = (len(per_head),)
    module.num_heads = len(kept)
    if hasattr(module, "head_dim"):
        module.head_dim = head_dim
    if hasattr(module, "attn_dim"):
        module.attn_dim = len(kept) * head_dim


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight[rows].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias[rows].clone())
    linear.out_features = len(rows)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight[:, columns].clone())
    linear.in_features = len(columns)


def head_scaled(module: nn.Module) -> list[tuple[nn.Module, bool]]:
    """The modules whose tensors and MACs shrink with an attention's kept heads, each with whether its bias stays.

    An output projection keeps its bias (its outputs are the residual stream);
    everything else on the heads' side loses the removed heads' share.
    """
    if is_fused_qkv_attention(module):
        inner = module.proj.in_features
        scaled = [(module.qkv, False), (module.proj, True)]
        gate, norm = getattr(module, "gate", None), getattr(module, "norm", None)
        if isinstance(gate, nn.Linear) and gate.out_features == inner:
            scaled.append((gate, False))
        if isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) == (inner,):
            scaled.append((norm, False))
        return scaled
    return [(module, False), *((child, name == "out_proj") for name, child in module.named_children())]


def head_edit_replay(model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None:
    """Replay a ``prune_heads`` edit: each named attention keeps the listed heads."""
    modules = dict(model.named_modules())
    for name, kept in edit["layers"].items():
        module = modules.get(name)
        if module is not None and is_fused_qkv_attention(module):
            prune_fused_heads(module, list(kept))
        elif isinstance(module, ATTENTION_TYPES):
            replace_module(model, name, prune_heads(module, list(kept)))
        else:
            raise InputError(f"edit prune_heads names {name!r}, which is not an attention layer of the model")
