"""Canonise a model so that captum's LRP conserves relevance on it (METHODS.md §5, pitfalls).

captum propagates relevance only through leaf modules that carry a rule and
through the autograd graph between them. On real architectures that breaks:
an unfolded BatchNorm absorbs relevance like a bias, a functional residual
``+`` copies the full relevance into both branches, a ReLU module called twice
(torchvision's BasicBlock and Bottleneck) raises, and an ``nn.Flatten`` or
``nn.Identity`` module has no rule at all. ``canonize`` rebuilds a deep copy
with ``torch.fx``: BatchNorm folded into the preceding conv or linear layer,
every residual addition an ``Addition_Module`` (ε rule: ``R_k = x_k/(x_1+x_2)·R``),
one non-in-place ReLU module per call, flatten functional, identities
removed. Other elementwise activation modules (ReLU6, SiLU, GELU, Hardswish,
...) pass relevance through unchanged. Anything else it cannot propagate
through is refused, naming the module (path and type) or the operation.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable

import torch
import torch.nn.functional as F
from captum.attr._core.lrp import SUPPORTED_LAYERS_WITH_RULES, SUPPORTED_NON_LINEAR_LAYERS
from captum.attr._utils.custom_modules import Addition_Module
from torch import fx, nn
from torch.fx.experimental.optimization import fuse

from secateur.core.common.errors import InputError

_ADDITIONS: set[Callable[..., object]] = {operator.add, operator.iadd, torch.add}
_RELUS: set[Callable[..., object]] = {F.relu, torch.relu, torch.relu_}
# Functions and methods relevance flows through by autograd unchanged: they only move or sum values.
_PASS_FUNCTIONS: set[Callable[..., object]] = {
    torch.flatten,
    torch.reshape,
    torch.cat,
    torch.mean,
    operator.getitem,
    F.adaptive_avg_pool2d,
    F.avg_pool2d,
    F.max_pool2d,
    F.dropout,
}
_PASS_METHODS = {"view", "reshape", "flatten", "size", "mean", "contiguous", "permute", "transpose", "squeeze"}
_PASS_METHODS |= {"unsqueeze", "dim"}
# Elementwise activations other than ReLU: relevance passes through them unchanged, as through a ReLU
# (METHODS.md §5: "activations pass relevance through"; AttnLRP does the same for GELU). captum knows only
# ReLU, Dropout and Tanh, so these get captum's IdentityRule (``lrp.attach_rules``).
PASS_THROUGH_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish,
)  # fmt: skip
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (
    *SUPPORTED_LAYERS_WITH_RULES,
    *SUPPORTED_NON_LINEAR_LAYERS,
    *PASS_THROUGH_ACTIVATIONS,
)


def _refuse(what: str) -> InputError:
    supported = ", ".join(sorted(cls.__name__ for cls in SUPPORTED_MODULES))
    return InputError(
        f"pxp: LRP cannot propagate relevance through {what}; supported modules are {supported}, "
        "plus residual additions, ReLU calls, flatten/reshape/concatenation and pooling functions"
    )


def trace(model: nn.Module) -> fx.GraphModule:
    """A symbolic trace of ``model`` (a deep copy), or a clear refusal when it cannot be traced."""
    try:
        return fx.symbolic_trace(copy.deepcopy(model).eval())
    except Exception as error:  # fx raises many types for data-dependent control flow
        raise InputError(
            f"pxp: the model cannot be traced by torch.fx, which LRP canonisation needs ({error})"
        ) from None


def _new_module(graph_module: fx.GraphModule, stem: str, module: nn.Module, taken: set[str]) -> str:
    index = 0
    while f"lrp_{stem}_{index}" in taken:
        index += 1
    name = f"lrp_{stem}_{index}"
    taken.add(name)
    graph_module.add_submodule(name, module)
    return name


def _calls(node: fx.Node, functions: set[Callable[..., object]], methods: set[str]) -> bool:
    """Whether ``node`` calls one of ``functions`` or one of the tensor ``methods``."""
    if node.op == "call_function":
        return node.target in functions
    return node.op == "call_method" and node.target in methods


def _is_tensor_addition(node: fx.Node) -> bool:
    if not _calls(node, _ADDITIONS, {"add", "add_"}):
        return False
    return len(node.args) == 2 and all(isinstance(arg, fx.Node) for arg in node.args) and not node.kwargs


def _rewrite(graph_module: fx.GraphModule) -> None:
    """Additions → Addition_Module, ReLU → one module per call, Flatten → function, Identity → removed."""
    modules = dict(graph_module.named_modules())
    taken = set(modules)
    called: set[str] = set()
    graph = graph_module.graph
    for node in list(graph.nodes):
        if _is_tensor_addition(node):
            name = _new_module(graph_module, "add", Addition_Module(), taken)
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.call_module(name, tuple(node.args)))
            graph.erase_node(node)
        elif _calls(node, _RELUS, {"relu", "relu_"}):
            name = _new_module(graph_module, "relu", nn.ReLU(), taken)
            with graph.inserting_before(node):
                node.replace_all_uses_with(graph.call_module(name, (node.args[0],)))
            graph.erase_node(node)
        elif node.op == "call_module":
            module = modules[node.target]
            if isinstance(module, nn.Identity):
                node.replace_all_uses_with(node.args[0])
                graph.erase_node(node)
            elif isinstance(module, nn.Flatten):
                with graph.inserting_before(node):
                    flat = graph.call_function(torch.flatten, (node.args[0], module.start_dim, module.end_dim))
                node.replace_all_uses_with(flat)
                graph.erase_node(node)
            elif node.target in called and not any(True for _ in module.parameters()):
                node.target = _new_module(graph_module, "copy", copy.deepcopy(module), taken)
            elif node.target in called:
                raise _refuse(f"module {node.target!r} ({type(module).__name__}), which is called more than once")
            else:
                called.add(node.target)
            if isinstance(module, (nn.ReLU, *PASS_THROUGH_ACTIVATIONS)) and hasattr(module, "inplace"):
                module.inplace = False  # captum hooks the activation's input and output: both must survive
    graph.lint()


def check_supported(graph_module: fx.GraphModule) -> None:
    """Refuse, naming it, the first module or operation that captum's LRP cannot propagate through."""
    modules = dict(graph_module.named_modules())
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            module = modules[node.target]
            if type(module) not in SUPPORTED_MODULES:
                raise _refuse(f"module {node.target!r} ({type(module).__name__})")
        elif node.op == "call_function" and node.target not in _PASS_FUNCTIONS:
            raise _refuse(f"the operation {getattr(node.target, '__name__', node.target)!r} (node {node.name})")
        elif node.op == "call_method" and node.target not in _PASS_METHODS:
            raise _refuse(f"the tensor method {node.target!r} (node {node.name})")


def canonize(model: nn.Module) -> fx.GraphModule:
    """A deep copy of ``model`` in eval mode on which captum's LRP conserves relevance (see the module doc)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            raise InputError(
                f"pxp: module {name!r} is attention (MultiheadAttention); transformer support is provided by "
                "the ViT relevance (attention heads and MLP neurons), not by the CNN canonisation"
            )
    graph_module = trace(model)
    graph_module = fuse(graph_module, inplace=True, no_trace=True)
    _rewrite(graph_module)
    graph_module = fx.GraphModule(graph_module, graph_module.graph)  # drops modules no node calls any more
    check_supported(graph_module)
    for parameter in graph_module.parameters():
        parameter.requires_grad_(False)
    return graph_module.eval()


@torch.no_grad()
def zero_biases(model: nn.Module) -> None:
    """Set every bias to zero: with ε → 0 the ε rule then conserves relevance exactly (a check, not a method step)."""
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias.zero_()
