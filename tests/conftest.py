"""Shared fixtures: everything seeded, nothing downloaded, no display needed."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from torch import nn

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


def scored_window(qtbot, window, model: str = "demo-vgg", method: str = "l1", timeout_ms: int = 600_000) -> None:
    """Open ``model`` on the demo data in the window and score it with ``method`` at a 0.3 channel ratio."""
    with qtbot.waitSignal(window.job_done, timeout=timeout_ms):
        window.open(model, "demo")
    window.panel.picker.setCurrentText(method)
    window.panel.target_value.setValue(0.3)
    with qtbot.waitSignal(window.job_done, timeout=timeout_ms):
        window.run_method()
    window.draw_now()


@dataclass
class MacsClock:
    """What the stand-in latency clock saw: each candidate's reduction, each timed round's batch size."""

    reductions: list[float] = field(default_factory=list)
    round_batches: list[int] = field(default_factory=list)


@pytest.fixture
def macs_clock(monkeypatch: pytest.MonkeyPatch) -> MacsClock:
    """Replace latency timing by MACs (1 ms per MMAC): deterministic, whatever the machine's load.

    Like the real clock it runs round by round and calls ``check`` (the cancel check) before each round;
    each round takes 10 ms, so a Cancel can land in the middle of a candidate.
    """
    from secateur.core.pruning import latency
    from secateur.core.train.evaluate import model_macs

    clock = MacsClock()

    def timed(reference, candidate, batch, rounds=15, warmup=3, check=lambda: None):
        for _ in range(rounds):
            check()
            clock.round_batches.append(batch.shape[0])
            time.sleep(0.01)
        shape = tuple(batch.shape[1:])
        before, after = model_macs(reference, shape) / 1e6, model_macs(candidate, shape) / 1e6
        pair = latency.TimedPair((before,) * rounds, (after,) * rounds)
        clock.reductions.append(pair.reduction)
        return pair

    monkeypatch.setattr(latency, "time_interleaved", timed)
    return clock


MODEL_MS = 10.0


def staircase(module: nn.Module, batch: torch.Tensor) -> float:
    """A clock whose layers cost by channel counts rounded up to 16 (as a GPU's tiles would)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        per_group = module.in_channels // module.groups
        return 1e-3 * math.ceil(module.out_channels / 16) * math.ceil(per_group / 16) * batch.shape[-1]
    if isinstance(module, nn.Linear):
        return 1e-3 * math.ceil(module.out_features / 16) * math.ceil(module.in_features / 16)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return 1e-4 * math.ceil(module.num_features / 16)
    return MODEL_MS
