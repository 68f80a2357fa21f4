"""Attention heads: the head-pruned module is exact, and head scores match a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import ARCHS
from secateur.core.graph.attention import HeadPrunedAttention, prune_heads
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import Workspace


@pytest.mark.parametrize("batch_first", [True, False])
def test_all_heads_kept_is_the_same_function(batch_first: bool) -> None:
    attention = nn.MultiheadAttention(32, 4, batch_first=batch_first).eval()
    x = torch.randn(3, 7, 32) if batch_first else torch.randn(7, 3, 32)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[0, -2:] = True
    replacement = prune_heads(attention, [0, 1, 2, 3])
    with torch.no_grad():
        expected = attention(x, x, x, key_padding_mask=padding, need_weights=False)[0]
        assert torch.allclose(replacement(x, x, x, key_padding_mask=padding)[0], expected, atol=1e-6)
    again = prune_heads(replacement, [0, 1, 2, 3])  # a pruned layer prunes again
    with torch.no_grad():
        assert torch.allclose(again(x, x, x, key_padding_mask=padding)[0], expected, atol=1e-6)


def test_removing_a_head_equals_zeroing_its_output_projection_columns() -> None:
    attention = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 32)
    pruned = prune_heads(attention, [0, 2, 3])
    assert isinstance(pruned, HeadPrunedAttention) and pruned.q_proj.out_features == 24
    with torch.no_grad():
        attention.out_proj.weight[:, 8:16] = 0  # head 1's columns
        assert torch.allclose(pruned(x, x, x)[0], attention(x, x, x, need_weights=False)[0], atol=1e-6)


def test_head_scores_by_hand() -> None:
    loaded = load_model(parse_model_spec(f"{ARCHS / 'user_models.py'}:TinyTransformer"))
    workspace = Workspace(loaded.model, loaded.input_shape)
    scores = workspace.score(load_registry().methods["l1"]).scores
    attention = loaded.model.blocks[0].attention
    q, k, v = attention.in_proj_weight.detach().chunk(3)
    out = attention.out_proj.weight.detach()
    rows = [slice(h * 8, (h + 1) * 8) for h in range(4)]
    expected = torch.stack(
        [(q[r].abs().sum() + k[r].abs().sum() + v[r].abs().sum() + out[:, r].abs().sum()) / 4 for r in rows]
    )
    assert torch.allclose(scores.groups["blocks.0.attention:heads"], expected, rtol=1e-5)


def test_pruning_heads_copies_every_tensor_and_draws_no_random_numbers() -> None:
    attention = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    torch.manual_seed(7)
    pruned = prune_heads(attention, [1, 3])
    drawn = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(drawn, torch.rand(1))  # no random initialisation of layers about to be overwritten
    q, k, v = attention.in_proj_weight.detach().chunk(3)
    q_bias = attention.in_proj_bias.detach().chunk(3)[0]
    kept = torch.cat([torch.arange(8, 16), torch.arange(24, 32)])
    assert torch.equal(pruned.q_proj.weight, q[kept]) and torch.equal(pruned.v_proj.weight, v[kept])
    assert torch.equal(pruned.k_proj.weight, k[kept]) and torch.equal(pruned.q_proj.bias, q_bias[kept])
    assert torch.equal(pruned.out_proj.weight, attention.out_proj.weight.detach()[:, kept])
    assert torch.equal(pruned.out_proj.bias, attention.out_proj.bias.detach())
