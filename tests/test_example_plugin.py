"""The example third-party package installs, is found, prunes through the CLI, and passes its own tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "secateur-example-method"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    target = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", "--target"]
    result = subprocess.run([*command, str(target), str(EXAMPLE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}


def test_listed_pruned_with_and_reloaded(installed: dict[str, str], tmp_path: Path) -> None:
    listing = json.loads(run_cli("methods", "--json", env=installed).stdout)
    method = next(m for m in listing["methods"] if m["id"] == "activation")
    assert method["plugin"] == "activation (secateur_example_method)" and listing["failed"] == []
    out = tmp_path / "pruned.safetensors"
    pruned = run_cli(
        "prune", "demo-vgg", "--data", "demo", "--method", "activation", "--param", "batches=2", "--ratio", "0.3",
        "--out", str(out), "--json", "--quiet", "--latency-runs", "2", env=installed,
    )  # fmt: skip
    assert pruned.returncode == 0, pruned.stderr
    report = json.loads(pruned.stdout)
    reloaded = run_cli("eval", str(out), "--data", "demo", "--json", "--quiet", "--latency-runs", "2", env=installed)
    assert reloaded.returncode == 0, reloaded.stderr
    assert json.loads(reloaded.stdout)["accuracy"] == report["after"]["accuracy"]


def test_the_example_passes_its_own_test_suite(installed: dict[str, str]) -> None:
    env = {**os.environ, **installed}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True, text=True, env=env, cwd=EXAMPLE, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
