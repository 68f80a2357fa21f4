"""Secateur's public plugin API (version 2): everything a method plugin may import, in one place.

A plugin imports from here and from nowhere else in Secateur; the built-in
methods do the same (an import-linter contract holds them to it), so they
prove the third-party path. ``ScoreFn``, ``ApplyFn`` and ``EditReplayer`` are
the reference for the functions a ``MethodInfo`` carries; docs/plugins.md is
the guide. ``load_model``, ``parse_model_spec`` and ``load_data`` are here for
a plugin's own tests.
"""

from secateur.core.common.errors import Cancelled, InputError, WorkError
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.explain.canonize import canonize
from secateur.core.explain.lrp import RULES, Composite, channel_relevance, conv_search_space
from secateur.core.graph.attention import ATTENTION_TYPES, HEADS_SUFFIX, HeadPrunedAttention, replace_module
from secateur.core.graph.blocks import BlockInfo, block_bypass, residual_blocks
from secateur.core.graph.groups import GroupInfo
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.contract import Applied, ApplyFn, EditKind, EditReplayer, Scored, ScoreFn
from secateur.core.pruning.criteria import batchnorm_scale_scores, magnitude_scores, random_scores, taylor_scores
from secateur.core.pruning.hookspecs import API_VERSION, hookimpl
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.methods import MethodInfo, ParamSpec
from secateur.core.pruning.plan import (
    MACS_TOLERANCE,
    GroupPlan,
    PlanOptions,
    PruningPlan,
    Target,
    choose_kept,
    decide_channels,
    rank_blocks,
)
from secateur.core.pruning.registry import installed_method
from secateur.core.pruning.scoring import Member, Scores, ScoringContext
from secateur.core.pruning.surgery import apply_plan, block_edit, remove_blocks
from secateur.core.pruning.workspace import Workspace
from secateur.core.testing import check_method
from secateur.core.train.batchnorm import recalibrate_batchnorm
from secateur.core.train.evaluate import accuracy_and_loss, model_macs
from secateur.core.train.finetune import FinetuneConfig, finetune, train_step
from secateur.core.train.interrupt import checked_graph, checked_passes

__all__ = [
    "API_VERSION",
    "ATTENTION_TYPES",
    "HEADS_SUFFIX",
    "MACS_TOLERANCE",
    "RULES",
    "Applied",
    "ApplyFn",
    "BlockInfo",
    "Cancelled",
    "Composite",
    "DataBundle",
    "EditKind",
    "EditReplayer",
    "FinetuneConfig",
    "GroupInfo",
    "GroupPlan",
    "HeadPrunedAttention",
    "InputError",
    "Member",
    "MethodInfo",
    "ParamSpec",
    "PlanOptions",
    "Progress",
    "PruningPlan",
    "RunSettings",
    "ScoreFn",
    "Scored",
    "Scores",
    "ScoringContext",
    "Target",
    "WorkError",
    "Workspace",
    "accuracy_and_loss",
    "apply_plan",
    "batchnorm_scale_scores",
    "block_bypass",
    "block_edit",
    "canonize",
    "channel_relevance",
    "check_method",
    "checked_graph",
    "checked_passes",
    "choose_kept",
    "conv_search_space",
    "decide_channels",
    "finetune",
    "hookimpl",
    "installed_method",
    "load_data",
    "load_model",
    "magnitude_scores",
    "model_macs",
    "parse_model_spec",
    "random_scores",
    "rank_blocks",
    "recalibrate_batchnorm",
    "remove_blocks",
    "replace_module",
    "residual_blocks",
    "taylor_scores",
    "train_step",
]
