"""Shared fixtures: everything seeded, nothing downloaded, no display needed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # one thread per worker, inherited by the CLI runs it starts: two workers already fill two cores
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ARCHS = Path(__file__).parent / "archs"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``secateur ARGS`` in a fresh interpreter, as a user's shell would."""
    command = [sys.executable, "-m", "secateur.app.cli", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env, check=False)


@pytest.fixture
def window(qtbot, tmp_path: Path):
    """The main window at 1280×800 with its own settings file, and one plugin that failed to load."""
    from PySide6.QtCore import QSettings

    from secateur.app.window import MainWindow
    from secateur.core.pruning.registry import FailedPlugin, load_registry

    settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
    registry = load_registry()
    registry.failed.append(FailedPlugin("broken (secateur_broken)", "Traceback ...\nImportError: no module named x"))
    window = MainWindow(registry, settings)
    window.confirm_unsaved = False  # closing at teardown must not wait on a question (tests turn it back on)
    qtbot.addWidget(window)
    window.resize(1280, 800)
    window.show()
    return window
