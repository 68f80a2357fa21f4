"""Finding residual blocks, and which of them can be removed whole.

A block is a module whose own ``forward`` adds its input to a branch computed
from that input. It is *removable* when the shortcut is the identity
(``y = act(x + F(x))``, or a chain of such additions as in a transformer
layer): deleting it leaves a network of the same shapes. A block whose
shortcut goes through a layer (a strided or channel-changing projection) is
reported but not removable.

Each module's own forward is read with ``torch.fx``, treating its children as
opaque calls, so this is a syntactic check on the code, not a second
dependency tracer: channel dependencies stay Torch-Pruning's job.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass

import torch
from torch import fx, nn

_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
_ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.LeakyReLU, nn.Identity, nn.Dropout)
_ACTIVATION_FUNCTIONS = {torch.relu, torch.nn.functional.relu, torch.nn.functional.gelu, torch.nn.functional.silu}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_FUNCTION_MODULES = {
    torch.relu: nn.ReLU,
    torch.nn.functional.relu: nn.ReLU,
    torch.nn.functional.gelu: nn.GELU,
    torch.nn.functional.silu: nn.SiLU,
}


@dataclass
class BlockInfo:
    """A residual block: its module path and whether its shortcut is the identity."""

    name: str
    removable: bool
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "removable": self.removable, "reason": self.reason}


class _ShallowTracer(fx.Tracer):
    """Traces only the root's own forward: every child module stays one call."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return True


def _is_add(node: fx.Node) -> bool:
    if node.op == "call_function" and node.target in _ADD_FUNCTIONS:
        return True
    return node.op == "call_method" and node.target in _ADD_METHODS


def _is_activation(node: fx.Node, root: nn.Module) -> bool:
    if node.op == "call_module":
        return isinstance(root.get_submodule(str(node.target)), _ACTIVATION_MODULES)
    return node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS


def _depends_on(node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` is computed from ``source`` through at least one module call."""
    stack, seen, through_module = [node], set(), False
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.add(current)
        if current is source:
            return through_module
        through_module = through_module or current.op == "call_module"
        stack.extend(arg for arg in current.all_input_nodes)
    return False


def _identity_path(node: fx.Node, source: fx.Node) -> bool:
    """Whether ``node`` is ``source`` plus residual branches only (an identity shortcut chain)."""
    if node is source:
        return True
    if not _is_add(node) or len(node.all_input_nodes) != 2:
        return False
    left, right = node.all_input_nodes
    return (_identity_path(left, source) and _depends_on(right, source)) or (
        _identity_path(right, source) and _depends_on(left, source)
    )


def classify_block(module: nn.Module) -> tuple[bool, str] | None:
    """``(removable, reason)`` when ``module`` is a residual block, else ``None``."""
    if isinstance(module, _CONTAINERS) or not any(True for _ in module.children()):
        return None
    try:
        graph = _ShallowTracer().trace(module)
    except Exception:  # data-dependent control flow: not a block we can reason about
        return None
    inputs = [node for node in graph.nodes if node.op == "placeholder"]
    outputs = [node for node in graph.nodes if node.op == "output"]
    adds = [node for node in graph.nodes if _is_add(node)]
    if len(inputs) != 1 or len(outputs) != 1 or not adds:
        return None
    source = inputs[0]
    result = outputs[0].args[0]
    if not isinstance(result, fx.Node):
        return None
    while _is_activation(result, module) and len(result.all_input_nodes) == 1:
        result = result.all_input_nodes[0]
    if _identity_path(result, source) and result is not source:
        return True, "identity shortcut"
    residual = any(
        len(add.all_input_nodes) == 2 and all(_depends_on(arg, source) or arg is source for arg in add.all_input_nodes)
        for add in adds
    )
    if residual and result in adds:
        return False, "shortcut through a layer (downsampling or channel change)"
    return None


def _trailing_activations(module: nn.Module) -> list[nn.Module]:
    """The activations applied after the block's last addition, first applied first."""
    graph = _ShallowTracer().trace(module)
    result = next(node for node in graph.nodes if node.op == "output").args[0]
    chain: list[nn.Module] = []
    while isinstance(result, fx.Node) and _is_activation(result, module) and len(result.all_input_nodes) == 1:
        if result.op == "call_module":
            chain.append(copy.deepcopy(module.get_submodule(str(result.target))))
        else:
            chain.append(_FUNCTION_MODULES[result.target]())
        result = result.all_input_nodes[0]
    return chain[::-1]


def block_bypass(module: nn.Module) -> nn.Module:
    """What replaces a removable block: its output with the residual branch at zero.

    ``y = act(x + F(x))`` becomes ``act(x)``: exactly the block with its
    branch forced to zero, and the identity when the block ends on the
    addition (a transformer layer) or when ``x`` already passed the same
    activation (ReLU after ReLU). The bypass holds no parameters.
    """
    verdict = classify_block(module)
    if verdict is None or not verdict[0]:
        raise ValueError(f"{type(module).__name__} is not a residual block with an identity shortcut")
    chain = _trailing_activations(module)
    if not chain:
        return nn.Identity()
    return chain[0] if len(chain) == 1 else nn.Sequential(*chain)


def stage_of(block_name: str) -> str:
    """The container a block sits in (``layer2`` for ``layer2.1``): blocks of one stage share it."""
    return block_name.rpartition(".")[0]


def residual_blocks(model: nn.Module) -> list[BlockInfo]:
    """Every residual block of ``model`` in module order, with whether it can be removed."""
    blocks = []
    for name, module in model.named_modules():
        if not name:
            continue
        verdict = classify_block(module)
        if verdict is not None:
            blocks.append(BlockInfo(name, *verdict))
    return blocks
