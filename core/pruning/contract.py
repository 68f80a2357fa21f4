"""The method contract of plugin API 2: what ``score`` and ``apply`` receive and return.

``ScoreFn``, ``ApplyFn`` and ``EditReplayer`` are the shapes of the callables a
``MethodInfo`` carries; the host checks a plugin's functions against them when
it loads the plugin (a mismatch is reported like any load failure). Their
docstrings are the reference a plugin author reads.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

if TYPE_CHECKING:
    from secateur.core.pruning.plan import PruningPlan
    from secateur.core.pruning.scoring import Scores, ScoringContext


class ScoreFn(Protocol):
    """A method's scoring: ``score(context, params)``.

    :param context: the ``ScoringContext``: the model (read only: the host
        compares it bit for bit with the user's model afterwards, and fails the
        method if it changed; change ``context.copy_model()`` instead), the prunable groups and the
        residual blocks, the data loaders, the device, the seed, a progress
        reporter and a cancellation check.
    :param params: every declared ``ParamSpec`` by name, validated and typed
        (``choice`` values arrive as ``str``).
    :returns: a generator that yields partial ``Scores`` (one group or block at
        a time, detached, on the CPU) and may ``return`` an opaque state object:
        whatever the method learned while scoring and needs again in ``apply``
        (trained score networks, Hessian traces). The host keeps it beside the
        scores as ``Scored(scores, state)``. A plain function returning one
        ``Scores`` is accepted too (its state is ``None``).
    """

    def __call__(self, context: ScoringContext, params: Mapping[str, Any]) -> Generator[Scores, None, Any] | Scores: ...


class ApplyFn(Protocol):
    """A method's own apply step: ``apply(context, plan, params, scored)``.

    :param context: a fresh ``ScoringContext`` over the same model.
    :param plan: the ``PruningPlan`` the host made from the scores; frozen,
        never to be mutated.
    :param params: the same validated parameters ``score`` received.
    :param scored: the ``Scored`` of the scoring run this plan came from: its
        ``scores`` and the ``state`` the score generator returned.
    :returns: an ``Applied``: the pruned model (a new module; ``context.model``
        stays as it was), the JSON-able edit records that rebuild it from the
        base model (each ``kind`` declared in the method's ``edit_kinds`` or one
        of the core's: ``prune_channels``, ``remove_blocks``, ``prune_heads``),
        the effective plan (the given one, or a new one when the method changed
        what is removed) and notes for the report.
    """

    def __call__(
        self, context: ScoringContext, plan: PruningPlan, params: Mapping[str, Any], scored: Scored
    ) -> Applied: ...


class EditReplayer(Protocol):
    """Replays one edit record on a model, in place: ``replay(model, edit, example)``.

    :param model: the model being rebuilt (the base model, earlier edits already replayed).
    :param edit: the JSON-able record ``apply`` wrote.
    :param example: a zero input batch of one, on the model's device, for tracing.
    """

    def __call__(self, model: nn.Module, edit: dict[str, Any], example: torch.Tensor) -> None: ...


@dataclass(frozen=True)
class EditKind:
    """An edit kind a method writes and can replay when a checkpoint loads."""

    kind: str
    replay: EditReplayer = field(compare=False, repr=False)


@dataclass(frozen=True)
class Scored:
    """A scoring run's result: the scores and the state the method returned with them."""

    scores: Scores
    state: Any = None


@dataclass(frozen=True)
class Applied:
    """What apply produced: the pruned model, its edit records, the effective plan and notes."""

    model: nn.Module
    edits: tuple[dict[str, Any], ...]
    plan: PruningPlan
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "edits", tuple(self.edits))
        object.__setattr__(self, "notes", tuple(self.notes))
