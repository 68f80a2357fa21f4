"""The conformance kit: ``check_method`` proves a method plugin honours Secateur's contract.

Call it from a plugin's own pytest suite::

    from secateur.core.api import check_method

    def test_conforms():
        check_method("my-method")  # an installed id, or a MethodInfo

It runs the method on the embedded demo and checks, failing with a message
that says what broke: the parameter declarations (defaults valid, bad values
refused); that scoring streams partial ``Scores`` covering every group (or
block) it scores, never touches the model, stops on cancellation and repeats
exactly under a seed; and that the pruned result saves to a checkpoint that a
fresh Python process loads back with the same outputs.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from secateur.core.common.errors import Cancelled, InputError, WorkError
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import load_data
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.contract import Scored
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.methods import MethodInfo, ParamSpec
from secateur.core.pruning.params import validate_params
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry, verify_signatures
from secateur.core.pruning.scoring import Scores
from secateur.core.pruning.workspace import Workspace


@dataclass
class ConformanceReport:
    """What ``check_method`` ran, for a plugin author's eyes."""

    method: str
    partial_results: int
    scored_groups: int
    scored_blocks: int
    params_before: int = 0
    params_after: int = 0
    checks: list[str] = field(default_factory=list)


def state_hash(model: torch.nn.Module) -> str:
    """SHA-256 of every tensor of the model's state dict: equal hashes, bit-identical models."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _bad_value(spec: ParamSpec) -> Any | None:
    """A value the declaration must refuse, or None when every value of its type is allowed."""
    if spec.choices:
        return "not-one-of-the-choices"
    if spec.type == "bool":
        return "maybe"
    if spec.max is not None:
        return spec.max + 1
    if spec.min is not None:
        return spec.min - 1
    if spec.type in ("int", "float"):
        return "not-a-number"
    return None


def check_params(method: MethodInfo) -> list[str]:
    """Defaults pass the shared validation, and a value outside each declaration is refused."""
    checks = []
    names = [spec.name for spec in method.params]
    assert len(names) == len(set(names)), f"method {method.id}: parameter names repeat: {names}"
    defaults = validate_params(method.params, {}, method.id)
    for spec in method.params:
        assert spec.help.strip(), f"method {method.id}: parameter {spec.name} has no help text"
        try:
            validate_params(method.params, {spec.name: defaults[spec.name]}, method.id)
        except InputError as error:
            raise AssertionError(
                f"method {method.id}: the default of parameter {spec.name} is refused: {error}"
            ) from None
        bad = _bad_value(spec)
        if bad is None:
            continue
        try:
            validate_params(method.params, {spec.name: bad}, method.id)
        except InputError as error:
            assert spec.name in str(error), f"the refusal of {spec.name}={bad!r} does not name it: {error}"
        else:
            raise AssertionError(f"method {method.id}: parameter {spec.name} accepted the bad value {bad!r}")
        checks.append(f"parameter {spec.name}: default valid, {bad!r} refused")
    return checks


def _score(
    workspace: Workspace, method: MethodInfo, params: dict[str, Any], progress: Progress | None = None
) -> tuple[Scored, list[Scores]]:
    """Score through the host, as ``secateur prune`` does: a method that changes its model fails here."""
    partials: list[Scores] = []
    try:
        scored = workspace.score(method, params, progress or Progress(), on_partial=partials.append)
    except WorkError as error:
        raise AssertionError(str(error)) from None
    return scored, partials


def check_method(
    method: MethodInfo | str,
    params: dict[str, Any] | None = None,
    model: str = "demo",
    data: str = "demo",
    ratio: float = 0.3,
    seed: int = 0,
) -> ConformanceReport:
    """Run every conformance check on ``method`` (an installed id, or a ``MethodInfo``)."""
    if isinstance(method, str):
        registry = load_registry()
        try:
            method = registry.method(method)
        except InputError as error:
            raise AssertionError(str(error)) from None
    else:
        verify_signatures(method, method.plugin or method.id)
    params = dict(params or {})
    checks = check_params(method)
    loaded = load_model(parse_model_spec(model))
    bundle = load_data(data, input_size=loaded.input_shape[1])
    before = state_hash(loaded.model)
    settings = RunSettings(seed=seed, batch_size=100)
    workspace = Workspace(loaded.model, loaded.input_shape, bundle, settings)

    scored, partials = _score(workspace, method, params)
    scores = scored.scores
    assert partials, f"method {method.id}: scoring published no partial result"
    assert scores.groups or scores.blocks, f"method {method.id}: scoring returned no scores at all"
    published = Scores()
    for partial in partials:
        published.update(partial)
    assert set(published.groups) == set(scores.groups) and set(published.blocks) == set(scores.blocks)
    assert state_hash(loaded.model) == before, f"method {method.id}: scoring changed the model it was given"
    checks.append(f"scoring streamed {len(partials)} partial results and left the model unchanged")

    again = _score(Workspace(loaded.model, loaded.input_shape, bundle, settings), method, params)[0].scores
    for group, values in scores.groups.items():
        assert torch.equal(values, again.groups[group]), f"method {method.id}: group {group} differs under seed {seed}"
    assert scores.blocks == again.blocks, f"method {method.id}: block scores differ under seed {seed}"
    checks.append(f"scores repeat exactly under seed {seed}")

    calls = {"count": 0}

    def cancel_soon(stage: str, done: int, total: int) -> None:
        calls["count"] += 1

    try:
        _score(workspace, method, params, Progress(report=cancel_soon, cancelled=lambda: calls["count"] >= 1))
    except Cancelled:
        pass
    else:
        raise AssertionError(f"method {method.id}: scoring ignored cancellation (report progress, let the host stop)")
    assert state_hash(loaded.model) == before, f"method {method.id}: cancelling changed the model"
    checks.append("cancellation stops scoring and leaves the model unchanged")

    report = ConformanceReport(method.id, len(partials), len(scores.groups), len(scores.blocks), checks=checks)
    if method.granularity == "channel" or method.apply is not None:
        plan = workspace.plan(scores, Target("ratio", ratio), method=method.id)
        frozen = plan.to_dict()
        applied = workspace.apply(plan, method, params, scored)
        assert plan.to_dict() == frozen, f"method {method.id}: apply changed the plan it was given"
        assert state_hash(loaded.model) == before, f"method {method.id}: apply changed the user's model"
        report.params_before = workspace.params
        report.params_after = sum(p.numel() for p in applied.model.parameters())
        info = CheckpointInfo(loaded.spec, loaded.input_shape, [*loaded.edits, *applied.edits])
        _check_round_trip(method.id, applied.model, info)
        checks.append(f"pruned at ratio {ratio}: the checkpoint reloads in a fresh process with equal outputs")
    return report


_RELOAD = """
import sys, torch
from secateur.core import load_checkpoint
with torch.no_grad():
    torch.save(load_checkpoint(sys.argv[1])(torch.load(sys.argv[2])), sys.argv[3])
"""


def _check_round_trip(method_id: str, pruned: torch.nn.Module, info: CheckpointInfo) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path, example_path, output_path = (Path(folder) / n for n in ("m.safetensors", "x.pt", "y.pt"))
        save_checkpoint(path, pruned, info)
        example = torch.randn((2, *info.input_shape), generator=torch.Generator().manual_seed(0))
        torch.save(example, example_path)
        result = subprocess.run(
            [sys.executable, "-c", _RELOAD, str(path), str(example_path), str(output_path)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"method {method_id}: its checkpoint does not reload:\n{result.stderr}"
        with torch.no_grad():
            expected = pruned.cpu().eval()(example)
        difference = (torch.load(output_path) - expected).abs().max().item()
        assert difference <= 1e-5, f"method {method_id}: the reloaded model's outputs differ by {difference}"
