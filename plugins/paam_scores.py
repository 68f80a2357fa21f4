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


def group_filters(weights: list[torch.Tensor]) -> torch.Tensor:
    """``X`` of a group: each channel's standardised filters in every producer, side by side.

    One producer for internal channels; for a residual-coupled group scored
    as one (``residual = shared``), every layer that writes its channels.
    """
    return torch.cat([standardised_filters(weight) for weight in weights], dim=1)


class FilterAttention(nn.Module):
    """One group's score network: ``s = φ(softmax(XW_Q (XW_K)ᵀ/√h) X w_V + β₀)``."""

    def __init__(self, filter_size: int, attention_dim: int, generator: torch.Generator) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(filter_size)  # standardised rows: XW has entries of unit variance
        self.query = nn.Parameter(torch.randn(filter_size, attention_dim, generator=generator) * scale)
        self.key = nn.Parameter(torch.randn(filter_size, attention_dim, generator=generator) * scale)
        self.value = nn.Parameter(torch.zeros(filter_size))  # w_V = 0 and β₀ = 0: every score starts at 1
        self.bias = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores of the filters whose standardised rows are ``x`` (F × d)."""
        logits = (x @ self.query) @ (x @ self.key).T / math.sqrt(self.query.shape[1])
        u = torch.softmax(logits, dim=1) @ (x @ self.value) + self.bias
        return phi(u)


@dataclass(frozen=True)
class GateTarget:
    """A gated dependency group: (producer, BatchNorm) layer names; the score multiplies each BatchNorm's output."""

    group: str
    pairs: tuple[tuple[str, str], ...]


class Gates:
    """Score networks hooked onto a model's BatchNorms; the scores of the last forward pass are kept.

    Scores are computed once per forward pass (attention is O(F²h)), by a
    pre-hook on the model, in float32 even under autocast, from the
    producers' current weights, so the regulariser's gradient reaches those
    weights through the scores; the BatchNorm hooks only multiply.
    """

    def __init__(
        self, model: nn.Module, targets: list[GateTarget], attention_dim: int, generator: torch.Generator
    ) -> None:
        modules = dict(model.named_modules())
        device = next(model.parameters()).device
        self.targets = list(targets)
        self.networks = nn.ModuleDict()
        self._producers = [[modules[conv] for conv, _ in target.pairs] for target in self.targets]
        self.latest: dict[str, torch.Tensor] = {}
        self._handles: list[RemovableHandle] = [model.register_forward_pre_hook(self._score_all)]
        for index, target in enumerate(self.targets):
            size = sum(conv.weight[0].numel() for conv in self._producers[index])
            self.networks[str(index)] = FilterAttention(size, attention_dim, generator).to(device)
            for _, norm in target.pairs:
                self._handles.append(modules[norm].register_forward_hook(self._gate(target.group)))

    def _current(self) -> dict[str, torch.Tensor]:
        with torch.autocast(next(self.networks.parameters()).device.type, enabled=False):
            return {
                target.group: network(group_filters([conv.weight.float() for conv in producers]))
                for target, network, producers in zip(
                    self.targets, self.networks.values(), self._producers, strict=True
                )
            }

    def _score_all(self, module: nn.Module, inputs: tuple) -> None:
        self.latest = self._current()

    def _gate(self, group: str):
        def gate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            scores = self.latest[group].to(output.dtype)
            return output * scores.view((1, -1) + (1,) * (output.dim() - 2))

        return gate

    def parameters(self) -> list[nn.Parameter]:
        return list(self.networks.parameters())

    def penalty(self) -> torch.Tensor:
        """Mean score over every gated filter of the last forward pass (normalised, so λ transfers)."""
        return torch.cat([self.latest[target.group] for target in self.targets]).mean()

    @torch.no_grad()
    def scores(self) -> dict[str, torch.Tensor]:
        """Current score of every gated filter, per group, on the CPU (from the weights; no forward pass)."""
        return {group: values.cpu() for group, values in self._current().items()}

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
        for _, name in target.pairs:
            norm = modules[name]
            factor = scores[target.group].to(norm.weight.device, norm.weight.dtype)
            norm.weight.mul_(factor)
            norm.bias.mul_(factor)
