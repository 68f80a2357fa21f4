"""The command line around surgery: grouped convs prune, a broken result is named as such, --debug."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import ARCHS, run_cli

MODELS = ARCHS / "user_models.py"


def test_the_grouped_se_model_of_the_report_prunes(tmp_path: Path) -> None:
    """The issue's user model (groups=4 convs with squeeze-excitation) died in surgery with l1 at 0.3."""
    out, report = tmp_path / "p.safetensors", tmp_path / "r.json"
    result = run_cli(
        "prune", f"{MODELS}:grouped_se_net", "--data", "demo", "--method", "l1", "--ratio", "0.3",
        "--out", str(out), "--report", str(report), "--latency-runs", "1", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(report.read_text())["plan"]
    assert any("chosen per block" in note for note in plan["notes"])
    assert out.is_file()


def test_a_model_that_pruning_breaks_exits_1_naming_the_cut_and_keeps_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "p.safetensors"
    out.write_bytes(b"an earlier result")
    args = ("prune", f"{MODELS}:hard_coded_width", "--data", "demo", "--method", "l1", "--ratio", "0.5")
    result = run_cli(*args, "--out", str(out), "--latency-runs", "1", "--quiet")
    assert result.returncode == 1, result.stderr
    assert "pruning with l1 broke the model" in result.stderr and "after cutting conv" in result.stderr
    assert "belong together" not in result.stderr and "Traceback" not in result.stderr
    assert "--debug" in result.stderr
    assert out.read_bytes() == b"an earlier result"
    debug = run_cli(*args, "--out", str(out), "--latency-runs", "1", "--quiet", "--debug")
    assert debug.returncode == 1 and "Traceback (most recent call last)" in debug.stderr
    assert "pruning with l1 broke the model" in debug.stderr
