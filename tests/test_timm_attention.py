"""Attention written in timm's layout (fused ``qkv``, ``proj``, ``num_heads``) in a user's own file.

Heads go whole: q, k and v rows of each removed head in ``qkv``, its columns
of ``proj``, and ``num_heads`` follows; checkpoints replay the edit in a
fresh process with the same outputs.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_group_structure import METHODS, assert_sound, workspace_of

from conftest import ARCHS
from secateur.core.common.errors import InputError
from secateur.core.graph.attention import prune_fused_heads
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry

SPEC = f"{ARCHS / 'user_models.py'}:timm_style_vit"


def _vit() -> torch.nn.Module:
    return load_model(parse_model_spec(SPEC)).model


def test_heads_are_a_group_and_head_dimensions_are_not_cut_one_by_one() -> None:
    workspace = workspace_of(_vit())
    groups = {group.id: group for group in workspace.groups}
    for block in (0, 1):
        heads = groups[f"blocks.{block}.attn:heads"]
        assert heads.kind == "heads" and heads.channels == 4 and heads.prunable
        qkv = groups[f"blocks.{block}.attn.qkv"]
        assert not qkv.prunable and "whole heads" in qkv.locked_because
    assert groups["blocks.1.mlp.2"].prunable  # the residual stream (qkv's inputs, proj's outputs) may still go


@pytest.mark.parametrize("method_id", [m for m in sorted(METHODS) if m not in ("hap", "bn-scale")])
def test_every_method_prunes_the_timm_layout_vit(method_id: str) -> None:
    method = load_registry().method(method_id)
    workspace = workspace_of(_vit())
    try:
        scored = workspace.score(method, METHODS[method_id])
    except InputError as refused:  # PAAM needs conv–BN layers and the CNN LRP rules need CNN operations
        assert method_id in ("pxp", "paam"), refused
        return
    for ratio in (0.3, 0.7):
        options = PlanOptions(raw_scores=method.comparable_scores)
        plan = workspace.plan(scored, Target("ratio", ratio), options, method_id)
        applied = workspace.apply(plan, method, METHODS[method_id], scored)
        assert_sound(workspace, applied.plan, applied.model)
        for block in (0, 1):
            kept = len(applied.plan.groups[f"blocks.{block}.attn:heads"].kept)
            attention = applied.model.blocks[block].attn
            assert attention.num_heads == kept < 4
            assert attention.qkv.out_features == 3 * kept * attention.head_dim


def test_removing_heads_equals_silencing_them() -> None:
    """A head whose value rows are zero adds nothing: removing it must give the same outputs."""
    model = _vit().eval()
    attention = model.blocks[0].attn
    inner = attention.num_heads * attention.head_dim
    with torch.no_grad():
        for head in (1, 3):
            rows = slice(2 * inner + head * attention.head_dim, 2 * inner + (head + 1) * attention.head_dim)
            attention.qkv.weight[rows] = 0.0
            attention.qkv.bias[rows] = 0.0
    example = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(example)
        prune_fused_heads(attention, [0, 2])
        got = model(example)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert attention.num_heads == 2 and attention.proj.in_features == 2 * attention.head_dim


def test_checkpoint_of_a_pruned_timm_layout_vit_reloads_in_a_fresh_process(tmp_path: Path) -> None:
    loaded = load_model(parse_model_spec(SPEC))
    workspace = workspace_of(loaded.model)
    method = load_registry().method("l1")
    plan = workspace.plan(workspace.score(method), Target("ratio", 0.3), PlanOptions(global_ranking=True), "l1")
    applied = workspace.apply(plan, method)
    assert any(edit["kind"] == "prune_heads" for edit in applied.edits)
    path = save_checkpoint(
        tmp_path / "vit.safetensors", applied.model, CheckpointInfo(loaded.spec, (3, 32, 32), list(applied.edits))
    )
    example = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.save({"example": example, "outputs": applied.model(example)}, tmp_path / "expected.pt")
    script = textwrap.dedent(
        f"""
        import torch
        from secateur.core.pruning.loading import load_checkpoint
        model = load_checkpoint({str(path)!r})
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        with torch.no_grad():
            got = model(expected["example"])
        torch.testing.assert_close(got, expected["outputs"], rtol=1e-5, atol=1e-6)
        print("heads", [block.attn.num_heads for block in model.blocks])
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    kept = [len(applied.plan.groups[f"blocks.{b}.attn:heads"].kept) for b in (0, 1)]
    assert result.stdout.strip() == f"heads {kept}"
