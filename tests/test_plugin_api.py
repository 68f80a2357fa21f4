"""Plugin API 2 as a third party meets it: ids, versions, signatures, the guarded model, state kept for apply."""

from __future__ import annotations

import ast
import json
import os
from dataclasses import replace
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from secateur.core import api
from secateur.core.common.errors import InputError
from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.workflow.session import Session
from secateur.plugins import hap, paam

FAKE = Path(__file__).parent / "fake_plugins"
PLUGINS = Path(__file__).parent.parent / "plugins"


def _installed(tmp_path: Path, name: str, entry_points: str) -> dict[str, str]:
    """An environment in which a distribution ``name`` with these entry points is installed."""
    dist = tmp_path / f"{name.replace('-', '_')}-2.5.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 2.5\n")
    (dist / "entry_points.txt").write_text(f"[secateur]\n{entry_points}\n")
    return {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(FAKE), os.environ.get("PYTHONPATH", "")])}


def test_a_third_party_l1_does_not_replace_the_builtin(tmp_path: Path) -> None:
    env = _installed(tmp_path, "secateur-impostor", "l1 = impostor_l1_plugin")
    listing = json.loads(run_cli("methods", "--json", env=env).stdout)
    l1 = next(m for m in listing["methods"] if m["id"] == "l1")
    assert (l1["title"], l1["package"]) == ("L1 magnitude", "secateur")
    failure = next(f for f in listing["failed"] if f["plugin"].startswith("l1 (impostor_l1_plugin)"))
    assert (
        "secateur-impostor 2.5" in failure["error"]
        and "already provided by l1 (secateur.plugins.l1)" in failure["error"]
    )
    assert "secateur " in failure["error"]  # both packages named
    out = tmp_path / "pruned.safetensors"
    result = run_cli(
        "prune", "demo-vgg", "--data", "demo", "--method", "l1", "--ratio", "0.3", "--out", str(out),
        "--report", str(tmp_path / "report.json"), "--latency-runs", "1", "--quiet", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["method"] == "l1" and report["package"] == "secateur" and report["version"]


def test_a_model_mutating_scorer_fails_prune_and_nothing_is_written(tmp_path: Path) -> None:
    env = _installed(tmp_path, "secateur-mutator", "fake-mutator = mutating_plugin")
    out = tmp_path / "pruned.safetensors"
    result = run_cli(
        "prune", "demo-vgg", "--data", "demo", "--method", "fake-mutator", "--ratio", "0.3", "--out", str(out), env=env
    )
    assert result.returncode == 1, result.stderr
    assert "method fake-mutator (secateur-mutator 2.5) changed the model it was given to score" in result.stderr
    assert "features.0.weight" in result.stderr and not out.exists() and list(tmp_path.glob("*.safetensors")) == []


def test_check_method_catches_a_scorer_that_changes_its_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FAKE))
    registry = load_registry([EntryPoint("fake-mutator", "mutating_plugin", "secateur")])
    with pytest.raises(AssertionError, match=r"fake-mutator .* changed the model it was given to score"):
        api.check_method(registry.methods["fake-mutator"], model="demo-vgg")


def test_a_failed_plugins_id_gives_its_load_error(tmp_path: Path) -> None:
    env = _installed(tmp_path, "secateur-broken", "fake-broken = broken_plugin")
    result = run_cli(
        "prune",
        "demo",
        "--data",
        "demo",
        "--method",
        "fake-broken",
        "--ratio",
        "0.3",
        "--out",
        "x.safetensors",
        env=env,
    )
    assert result.returncode == 2
    assert (
        "'fake-broken': fake-broken (broken_plugin) failed to load: ImportError: fake_plugins.broken_plugin"
        in result.stderr
    )
    assert "no such method" not in result.stderr


@pytest.mark.usefixtures("fake_plugins_on_path")
@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("old_api_plugin", "written for Secateur plugin API version 1, this Secateur provides version 2: "
         "see 'Migrating from API 1' in docs/plugins.md"),
        ("unversioned_plugin", "declares no plugin API version: implement secateur_api_version() returning 2"),
        ("old_signature_plugin", "method fake-old-apply: apply(context, plan, params) cannot be called as "
         "apply(context, plan, params, scored)"),
    ],
)  # fmt: skip
def test_plugins_for_another_api_are_refused_with_the_way_forward(module: str, message: str) -> None:
    registry = load_registry([EntryPoint(module, module, "secateur")])
    assert not registry.methods
    (failure,) = registry.failed
    assert message in failure.error
    with pytest.raises(InputError, match=f"{module} .*failed to load"):
        registry.method(module)


@pytest.fixture
def fake_plugins_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FAKE))


def _scored_then_rebuilt(method_id: str, params: dict) -> Session:
    """A session on demo-vgg scored with a method, then moved to another device, with a 30% plan."""
    session = Session.open("demo-vgg", "demo")
    session.score(load_registry().method(method_id), params)
    old = session.workspace()
    session.settings = replace(session.settings, device=torch.device("cpu", 0))  # what the device selector does
    assert session.workspace() is not old  # the session prepared a new working copy
    session.make_plan(Target("ratio", 0.3), PlanOptions(), method_id)
    return session


def test_hap_apply_after_a_device_change_uses_the_scored_sensitivities(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = hap.layer_sensitivities
    monkeypatch.setattr(hap, "layer_sensitivities", lambda *a: calls.append(1) or original(*a))
    params = {"probes": 1, "batches": 1, "implant_ratio": 0.5}
    session = _scored_then_rebuilt("hap", params)
    session.apply(load_registry().method("hap"), params)
    assert calls == [1]  # scored once; apply read the traces from the state
    assert [edit["kind"] for edit in session.loaded.edits] == ["prune_channels", "hap_implants"]


def test_paam_apply_works_after_the_session_rebuilds_its_copy() -> None:
    params = {"epochs": 1, "max_steps": 1, "threshold": 0.0}
    session = _scored_then_rebuilt("paam", params)
    before = sum(p.numel() for p in session.model.parameters())
    session.apply(load_registry().method("paam"), params)
    assert sum(p.numel() for p in session.model.parameters()) < before


def test_no_plugin_keeps_module_level_state() -> None:
    """No module of plugins/ binds a mutable container or a cache at module level."""
    mutable = (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp)
    offenders = []
    for path in sorted(PLUGINS.glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            value = getattr(node, "value", None)
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and value is not None:
                called = (
                    value.func.attr if isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) else ""
                )
                named = value.func.id if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) else ""
                if isinstance(value, mutable) or {called, named} & {
                    "OrderedDict",
                    "WeakKeyDictionary",
                    "dict",
                    "defaultdict",
                }:
                    offenders.append(f"{path.name}:{node.lineno}")
            decorators = getattr(node, "decorator_list", [])
            if any("cache" in ast.unparse(d) for d in decorators):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_a_checkpoint_edit_of_a_missing_plugin_names_it(tmp_path: Path) -> None:
    loaded = load_model(parse_model_spec("demo-vgg"))
    edit = {"kind": "rescale", "provider": {"method": "rescaler", "package": "secateur-rescale", "version": "0.3"}}
    path = save_checkpoint(tmp_path / "m.safetensors", loaded.model, CheckpointInfo(loaded.spec, (3, 32, 32), [edit]))
    with pytest.raises(
        InputError, match=r"edit kind 'rescale' was written by method rescaler from package secateur-rescale 0.3"
    ):
        load_checkpoint(path)


def test_the_public_api_exports_what_it_lists() -> None:
    assert api.API_VERSION == 2
    assert all(hasattr(api, name) for name in api.__all__)
    assert {"hookimpl", "MethodInfo", "ParamSpec", "Scores", "ScoringContext", "Scored", "Applied", "EditKind",
            "check_method", "ScoreFn", "ApplyFn"} <= set(api.__all__)  # fmt: skip
    assert paam.secateur_api_version() == api.API_VERSION
