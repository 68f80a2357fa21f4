"""PAAM's score network: attention over a layer's filters, one analog score per filter (METHODS.md 4(b) [R]).

For a conv followed by BatchNorm, the rows of ``X`` are the layer's flattened
filters, each standardised; ``A = softmax(X W_Q (X W_K)ᵀ / √h)`` lets every
filter look at the others, and ``u = A X w_V + β₀`` is mapped to a positive
score by ``φ(u) = eᵘ`` (u < 0), ``1 + u`` (u ≥ 0). With ``w_V = 0`` and
``β₀ = 0`` at initialisation every score is exactly 1, so the network starts
unchanged. The score multiplies the BatchNorm's output (before the
activation; a score before BatchNorm would be normalised away), through a
forward hook: the user's model class is never replaced, and the score
networks live beside the model, never inside it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

_STANDARDISE_EPS = 1e-5


def phi(u: torch.Tensor) -> torch.Tensor:
    """``eᵘ`` below zero, ``1 + u`` above: positive, continuous with a continuous slope, never exactly 0."""
    return torch.where(u < 0, torch.exp(u.clamp(max=0.0)), 1.0 + u)  # the clamp only guards exp against overflow


def standardised_filters(weight: torch.Tensor) -> torch.Tensor:
    """``X``: one row per output filter, flattened, with zero mean and unit variance per row."""
    rows = weight.flatten(1)
    mean = rows.mean(dim=1, keepdim=True)
    var = rows.var(dim=1, unbiased=False, keepdim=True)
    return (rows - mean) / torch.sqrt(var + _STANDARDISE_EPS)


class FilterAttention(nn.Module):
    """One layer's score network: ``s = φ(softmax(XW_Q (XW_K)ᵀ/√h) X w_V + β₀)``."""

    def __init__(self, filter_size: int, attention_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(filter_size)  # standardised rows: XW has entries of unit variance
        self.query = nn.Parameter(torch.randn(filter_size, attention_dim, generator=generator) * scale)
        self.key = nn.Parameter(torch.randn(filter_size, attention_dim, generator=generator) * scale)
        self.value = nn.Parameter(torch.zeros(filter_size))  # w_V = 0 and β₀ = 0: every score starts at 1
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        x = standardised_filters(weight)
        logits = (x @ self.query) @ (x @ self.key).T / math.sqrt(self.query.shape[1])
        u = torch.softmax(logits, dim=1) @ (x @ self.value) + self.bias
        return phi(u)


@dataclass(frozen=True)
class GateTarget:
    """A gated dependency group: its producing conv and the BatchNorm whose output the score multiplies."""

    group: str
    conv: str
    norm: str


class Gates:
    """Score networks hooked onto a model's BatchNorms; the scores of the last forward pass are kept.

    Scores are computed once per forward pass (attention is O(F²h)), in
    float32 even under autocast, from the conv's current weights, so the
    regulariser's gradient reaches those weights through the scores.
    """

    def __init__(
        self, model: nn.Module, targets: list[GateTarget], attention_dim: int, generator: torch.Generator
    ) -> None:
        modules = dict(model.named_modules())
        device = next(model.parameters()).device
        self.targets = list(targets)
        self.networks = nn.ModuleDict()
        self.latest: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = []
        for index, target in enumerate(self.targets):
            conv = modules[target.conv]
            network = FilterAttention(conv.weight[0].numel(), attention_dim, generator).to(device)
            self.networks[str(index)] = network
            self._handles.append(modules[target.norm].register_forward_hook(self._hook(target.group, conv, network)))

    def _hook(self, group: str, conv: nn.Module, network: FilterAttention):
        def gate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            with torch.autocast(output.device.type, enabled=False):
                scores = network(conv.weight.float())
            self.latest[group] = scores
            return output * scores.to(output.dtype).view((1, -1) + (1,) * (output.dim() - 2))

        return gate

    def parameters(self) -> list[nn.Parameter]:
        return list(self.networks.parameters())

    def penalty(self) -> torch.Tensor:
        """Mean score over every gated filter of the last forward pass (normalised, so λ transfers)."""
        return torch.cat([self.latest[target.group] for target in self.targets]).mean()

    @torch.no_grad()
    def scores(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Current score of every gated filter, per group, on the CPU (from the weights; no forward pass)."""
        modules = dict(model.named_modules())
        return {
            target.group: network(modules[target.conv].weight.float()).cpu()
            for target, network in zip(self.targets, self.networks.values(), strict=True)
        }

    def remove(self) -> None:
        """Detach every hook: the model is again exactly the user's class, without score networks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.latest.clear()


@torch.no_grad()
def fold_scores(model: nn.Module, targets: list[GateTarget], scores: dict[str, torch.Tensor]) -> None:
    """``γ, β ← s·γ, s·β`` for every gated BatchNorm: exact, since ``s·(γx̂ + β) = (sγ)x̂ + sβ``."""
    modules = dict(model.named_modules())
    for target in targets:
        norm = modules[target.norm]
        factor = scores[target.group].to(norm.weight.device, norm.weight.dtype)
        norm.weight.mul_(factor)
        norm.bias.mul_(factor)
