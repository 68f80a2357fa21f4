"""Secateur's headless engine: models, data, the layer tree, evaluation, plugins.

Nothing here imports Qt, ``secateur.app`` or ``secateur.plugins``; the import
contracts in pyproject.toml check it.
"""

from secateur.core.common.errors import Cancelled, InputError, SecateurError, WorkError
from secateur.core.data.loading import DataBundle, load_data
from secateur.core.graph.layer_tree import LayerTree
from secateur.core.model.checkpoint import save_checkpoint
from secateur.core.model.specs import LoadedModel, ModelSpec, parse_model_spec
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.workspace import build_layer_tree
from secateur.core.train.evaluate import Metrics, evaluate

__all__ = [
    "Cancelled",
    "DataBundle",
    "InputError",
    "LayerTree",
    "LoadedModel",
    "Metrics",
    "ModelSpec",
    "SecateurError",
    "WorkError",
    "build_layer_tree",
    "evaluate",
    "load_checkpoint",
    "load_data",
    "load_model",
    "parse_model_spec",
    "save_checkpoint",
]
