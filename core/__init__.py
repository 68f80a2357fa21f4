"""Secateur's headless engine: models, data, the layer tree, evaluation, plugins.

Nothing here imports Qt, ``secateur.app`` or ``secateur.plugins``; the import
contracts in pyproject.toml check it.
"""

from secateur.core.checkpoint import load_checkpoint, save_checkpoint
from secateur.core.data import DataBundle, load_data
from secateur.core.errors import Cancelled, InputError, SecateurError, WorkError
from secateur.core.evaluate import Metrics, evaluate
from secateur.core.layer_tree import LayerTree, build_layer_tree
from secateur.core.models import LoadedModel, ModelSpec, load_model, parse_model_spec

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
