"""Plugin discovery: each plugin isolated, every failure reported with its reason."""

from __future__ import annotations

import json
import os
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from conftest import run_cli
from secateur.core.pruning.methods import MethodInfo, ParamSpec
from secateur.core.pruning.registry import load_registry

FAKE = Path(__file__).parent / "fake_plugins"


def _entry_points(*modules: str) -> list[EntryPoint]:
    return [EntryPoint(name=module, value=module, group="secateur") for module in modules]


@pytest.fixture
def fake_plugins_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FAKE))


@pytest.mark.usefixtures("fake_plugins_on_path")
def test_good_plugin_is_listed_and_failures_are_isolated() -> None:
    registry = load_registry(
        _entry_points("good_plugin", "broken_plugin", "old_api_plugin", "wrong_type_plugin", "duplicate_plugin")
    )
    assert list(registry.methods) == ["fake-good"]
    assert registry.methods["fake-good"].plugin == "good_plugin (good_plugin)"
    reasons = {failure.plugin.split()[0]: failure.error for failure in registry.failed}
    assert "ImportError: fake_plugins.broken_plugin needs a package" in reasons["broken_plugin"]
    assert "Traceback" in reasons["broken_plugin"]
    assert "written for Secateur plugin API version 1" in reasons["old_api_plugin"]
    assert "returned dict, expected MethodInfo" in reasons["wrong_type_plugin"]
    duplicate = "method id 'fake-good' of duplicate_plugin (duplicate_plugin) is already provided by good_plugin"
    assert duplicate in reasons["duplicate_plugin"]


def test_declarations_are_checked() -> None:
    with pytest.raises(ValueError, match="granularity 'layer' is not one of"):
        MethodInfo(id="x", title="x", description="x", granularity="layer")
    with pytest.raises(ValueError, match="a choice parameter needs its choices"):
        ParamSpec("mode", "choice", "a", "help")


def test_cli_methods_lists_installed_plugins_and_failures(tmp_path: Path) -> None:
    """A dist-info folder on the path is how an installed distribution's entry points are found."""
    dist = tmp_path / "secateur_fake-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: secateur-fake\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[secateur]\nfake-good = good_plugin\nfake-broken = broken_plugin\n")
    env_path = os.pathsep.join([str(tmp_path), str(FAKE), os.environ.get("PYTHONPATH", "")])
    result = run_cli("methods", "--json", env={"PYTHONPATH": env_path})
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    method = next(m for m in listing["methods"] if m["id"] == "fake-good")
    assert set(method) >= {"id", "title", "granularity", "needs", "params"}
    assert method["params"] == [
        {
            "name": "strength",
            "type": "float",
            "default": 0.5,
            "help": "how hard to prune",
            "min": 0.0,
            "max": 1.0,
            "choices": None,
        }
    ]
    failed = {f["plugin"]: f["error"] for f in listing["failed"]}
    assert "needs a package that is not installed" in failed["fake-broken (broken_plugin)"]
    text = run_cli("methods", env={"PYTHONPATH": env_path}).stdout
    assert "fake-good: A fake method [channel]" in text and "plugin fake-broken (broken_plugin) failed to load" in text
