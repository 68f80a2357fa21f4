"""Layer-wise Relevance Propagation through captum, with per-layer-group rule composites.

The model is canonised first (``lrp_canonize``) so that relevance is
conserved. A ``Composite`` names one rule for each of four layer groups:
the convolutions split in forward order into low-, mid- and high-level
thirds, and the fully connected layers (METHODS.md §5 step 3). Rules:

- ``epsilon``: ``R_i = Σ_j a_i w_ij / (z_j + ε·sign z_j) · R_j`` (captum's ``EpsilonRule``);
- ``gamma``: the ε rule on weights ``w + γ w⁺`` (captum's ``GammaRule``);
- ``zplus``: weights ``w⁺`` (captum's ``Alpha1_Beta0_Rule``);
- ``alphabeta``: ``R_i = Σ_j a_i (α w⁺_ij / z⁺_j − β w⁻_ij / z⁻_j) R_j`` with ``α − β = 1``, a captum
  ``PropagationRule`` of our own. It splits by the sign of the weights, which is the αβ rule exactly
  where the inputs are non-negative (after a ReLU).

Pooling layers, BatchNorm that could not be folded, and residual additions
use the ε rule; ReLU and Dropout pass relevance through. Relevances are
normalised to an initial relevance of 1 on the explained logit (captum
multiplies by the logit; we divide it out).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LRP, LayerLRP
from captum.attr._utils.lrp_rules import Alpha1_Beta0_Rule, EpsilonRule, GammaRule, IdentityRule, PropagationRule
from torch import fx, nn

from secateur.core.common.errors import InputError
from secateur.core.data.loading import DataBundle
from secateur.core.explain.canonize import PASS_THROUGH_ACTIVATIONS, canonize

RULES = ("epsilon", "zplus", "gamma", "alphabeta")
LAYER_GROUPS = ("low", "mid", "high", "fc")
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class AlphaBetaRule(PropagationRule):
    """The αβ rule (α − β = 1) as a captum rule: positive and negative weight contributions kept apart.

    captum propagates ``R_in = x · ∂y/∂x · R_out / y``; the forward hook replaces the layer's output by
    a tensor of the same value whose derivative is ``y · (α w⁺/z⁺ − β w⁻/z⁻)``, so that quotient is
    the αβ rule. Biases go with their sign to ``z⁺`` or ``z⁻``.
    """

    def __init__(self, alpha: float = 2.0, epsilon: float = 1e-6) -> None:
        self.alpha = alpha
        self.beta = alpha - 1.0
        self.STABILITY_FACTOR = epsilon

    def _manipulate_weights(self, module: nn.Module, inputs: object, outputs: object) -> None:
        """The αβ rule changes the propagation, not the weights."""

    def _split(self, module: nn.Module, x: torch.Tensor, positive: bool) -> torch.Tensor:
        weight = module.weight.clamp(min=0) if positive else module.weight.clamp(max=0)
        bias = module.bias
        if bias is not None:
            bias = bias.clamp(min=0) if positive else bias.clamp(max=0)
        if isinstance(module, nn.Linear):
            return F.linear(x, weight, bias)
        return module._conv_forward(x, weight, bias)

    def _stabilised(self, z: torch.Tensor) -> torch.Tensor:
        sign = torch.sign(z)
        sign[sign == 0] = 1
        return z + sign * self.STABILITY_FACTOR

    def forward_hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], outputs: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        positive, negative = self._split(module, x, True), self._split(module, x, False)
        mix = self.alpha * positive / self._stabilised(positive.detach())
        mix = mix - self.beta * negative / self._stabilised(negative.detach())
        value = outputs.detach()
        return super().forward_hook(module, inputs, value + value * (mix - mix.detach()))


@dataclass(frozen=True)
class Composite:
    """Which rule each layer group uses, and the rules' parameters."""

    low: str = "epsilon"
    mid: str = "epsilon"
    high: str = "epsilon"
    fc: str = "epsilon"
    epsilon: float = 1e-6
    gamma: float = 0.25
    alpha: float = 2.0

    def __post_init__(self) -> None:
        for group in LAYER_GROUPS:
            if getattr(self, group) not in RULES:
                raise InputError(f"LRP rule for the {group} layers: {getattr(self, group)!r} is not one of {RULES}")
        if not self.epsilon > 0:
            raise InputError(f"LRP epsilon {self.epsilon}: must be positive")
        if not self.gamma >= 0:
            raise InputError(f"LRP gamma {self.gamma}: must be zero or positive")
        if not self.alpha >= 1:
            raise InputError(f"LRP alpha {self.alpha}: must be at least 1 (beta = alpha - 1)")

    def rule(self, group: str) -> PropagationRule:
        name = getattr(self, group)
        if name == "epsilon":
            return EpsilonRule(self.epsilon)
        if name == "gamma":
            return GammaRule(self.gamma)
        if name == "zplus":
            return Alpha1_Beta0_Rule()
        return AlphaBetaRule(self.alpha, self.epsilon)

    def label(self) -> str:
        return "/".join(getattr(self, group) for group in LAYER_GROUPS)


def conv_search_space(base: Composite, rules: tuple[str, ...] = ("epsilon", "zplus", "gamma")) -> list[Composite]:
    """Every composite with one of ``rules`` on each conv group (low, mid, high), the rest as in ``base``."""
    return [
        Composite(low, mid, high, base.fc, base.epsilon, base.gamma, base.alpha)
        for low, mid, high in itertools.product(rules, repeat=3)
    ]


def weighted_layers(model: fx.GraphModule) -> dict[str, nn.Module]:
    """The conv and linear layers of a canonised model, in the order the forward pass calls them."""
    modules = dict(model.named_modules())
    layers = {}
    for node in model.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], _WEIGHTED):
            layers[node.target] = modules[node.target]
    return layers


def layer_groups(model: fx.GraphModule) -> dict[str, str]:
    """Layer name → its rule group: convs split in forward order into thirds, linear layers ``fc``."""
    layers = weighted_layers(model)
    convs = [name for name, module in layers.items() if not isinstance(module, nn.Linear)]
    groups = {name: "fc" for name, module in layers.items() if isinstance(module, nn.Linear)}
    for group, names in zip(("low", "mid", "high"), np.array_split(np.array(convs, dtype=object), 3), strict=True):
        groups.update({str(name): group for name in names})
    return groups


def attach_rules(model: fx.GraphModule, composite: Composite) -> None:
    """Give every rule-bearing module its rule; captum removes them after each call, so call before each."""
    groups = layer_groups(model)
    modules = dict(model.named_modules())
    for node in model.graph.nodes:
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if node.target in groups:
            module.rule = composite.rule(groups[node.target])
        elif isinstance(module, PASS_THROUGH_ACTIVATIONS):
            module.rule = IdentityRule()  # relevance at the input = relevance at the output
        elif not isinstance(module, (nn.ReLU, nn.Dropout, nn.Tanh)):
            module.rule = EpsilonRule(composite.epsilon)


def _per_channel(relevance: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """(N, C): a layer's output relevance summed over every position of each channel."""
    if isinstance(module, nn.Linear):
        return relevance.reshape(relevance.shape[0], -1, relevance.shape[-1]).sum(1)
    return relevance.flatten(2).sum(2)


def _normalise(relevance: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Divide captum's logit-scaled relevance by the logit: initial relevance 1 on the explained class."""
    safe = torch.where(logits == 0, torch.ones_like(logits), logits)
    return relevance / safe.reshape((-1,) + (1,) * (relevance.dim() - 1))


def _leaf(images: torch.Tensor) -> torch.Tensor:
    """A copy of the inputs that requires gradients (captum would set it and warn)."""
    return images.detach().clone().requires_grad_(True)


def target_logits(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(images).gather(1, targets.reshape(-1, 1)).flatten()


def channel_relevance(
    model: fx.GraphModule, composite: Composite, images: torch.Tensor, targets: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per conv/linear layer, the (N, C) relevance ``r_{ℓ,c}(x) = Σ_{h,w} R`` at its output, one LRP pass."""
    layers = weighted_layers(model)
    attach_rules(model, composite)
    relevances = LayerLRP(model, list(layers.values())).attribute(
        _leaf(images), target=targets.tolist(), attribute_to_layer_input=False
    )
    logits = target_logits(model, images, targets)
    return {
        name: _per_channel(_normalise(relevance.detach(), logits), module)
        for (name, module), relevance in zip(layers.items(), relevances, strict=True)
    }


def input_relevance(
    model: fx.GraphModule, composite: Composite, images: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Relevance at the input, scaled as captum gives it (summing to the explained logit when conserved)."""
    attach_rules(model, composite)
    return LRP(model).attribute(_leaf(images), target=targets.tolist()).detach()


@contextmanager
def _only_channel(module: nn.Module, channel: int) -> Iterator[None]:
    """Let relevance flow back through one output channel of ``module`` only (values unchanged)."""

    def hook(_module: nn.Module, _inputs: object, output: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros(output.shape[1], device=output.device, dtype=output.dtype)
        mask[channel] = 1
        mask = mask.reshape((1, -1) + (1,) * (output.dim() - 2))
        return output * mask + (output * (1 - mask)).detach()

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def channel_map(
    model: fx.GraphModule, composite: Composite, image: torch.Tensor, target: int, layer: str, channel: int
) -> torch.Tensor:
    """(H, W) relevance over ``image`` of the explained logit that passes through one channel of ``layer``.

    The conditional heatmap of that channel: where in the image the evidence it carries to the class
    comes from, normalised to an initial relevance of 1 and summed over colour channels.
    """
    layers = weighted_layers(model)
    if layer not in layers:
        raise InputError(f"layer {layer!r} is not a conv or linear layer of the model; choose one of {list(layers)}")
    module = layers[layer]
    width = module.out_channels if hasattr(module, "out_channels") else module.out_features
    if not 0 <= channel < width:
        raise InputError(f"channel {channel} of {layer}: the layer has channels 0..{width - 1}")
    images, targets = image.unsqueeze(0), torch.tensor([target], device=image.device)
    with _only_channel(module, channel):
        relevance = input_relevance(model, composite, images, targets)
    return _normalise(relevance, target_logits(model, images, targets))[0].sum(0)


@dataclass
class ChannelExplanation:
    """What the window shows for one channel: the image (H, W, 3 in [0, 1]) and the channel's relevance map."""

    image: np.ndarray
    relevance: np.ndarray
    layer: str
    channel: int
    label: int
    class_name: str


def explain_channel(
    model: nn.Module,
    data: DataBundle,
    index: int,
    layer: str,
    channel: int,
    device: torch.device,
    composite: Composite | None = None,
    split: str = "train",
) -> ChannelExplanation:
    """The relevance map of ``channel`` of ``layer`` over image ``index`` of a split, for its true class."""
    dataset = data.split(split)
    if not 0 <= index < len(dataset):
        raise InputError(f"image {index} of the {split} split: the split has images 0..{len(dataset) - 1}")
    image, label = dataset[index]
    image = image.to(device)
    relevance = channel_map(canonize(model), composite or Composite(), image, int(label), layer, channel)
    shown = image.detach().float().cpu()
    low = shown.amin(dim=(1, 2), keepdim=True)
    high = shown.amax(dim=(1, 2), keepdim=True)
    shown = ((shown - low) / (high - low).clamp(min=1e-12)).permute(1, 2, 0)
    if shown.shape[2] == 1:
        shown = shown.expand(-1, -1, 3)
    return ChannelExplanation(
        shown.numpy(),
        relevance.detach().float().cpu().numpy(),
        layer,
        channel,
        int(label),
        data.class_names[int(label)],
    )
