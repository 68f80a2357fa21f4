"""prune, score and export through the command line: reports, files, and refused input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli


def test_prune_with_finetuning_writes_report_and_checkpoint(tmp_path: Path) -> None:
    out, report_path = tmp_path / "p.safetensors", tmp_path / "r.json"
    result = run_cli(
        "prune", "demo-vgg", "--data", "demo", "--method", "l1", "--ratio", "0.5", "--finetune-epochs", "1",
        "--out", str(out), "--report", str(report_path), "--latency-runs", "3", "--quiet", "--json",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    assert report == json.loads(result.stdout)
    for key in ("method", "params", "seed", "target", "device", "seconds", "before", "after", "after_finetune", "plan"):
        assert key in report
    assert report["checkpoint"] == str(out) and out.is_file()
    assert report["target"] == {"kind": "ratio", "value": 0.5}
    assert set(report["plan"]) >= {"groups", "blocks_removed"}
    assert all(set(g) == {"kept", "total"} for g in report["plan"]["groups"].values())
    assert report["after"]["params"] == report["plan"]["predicted_params"] < report["before"]["params"]
    assert report["after_finetune"]["accuracy"] > report["after"]["accuracy"]
    evaluated = run_cli("eval", str(out), "--data", "demo", "--json", "--latency-runs", "2", "--quiet")
    assert json.loads(evaluated.stdout)["accuracy"] == report["after_finetune"]["accuracy"]


def test_score_and_export(tmp_path: Path) -> None:
    result = run_cli("score", "demo", "--method", "l2", "--out", str(tmp_path / "s.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["method"] == "l2" and len(scores["groups"]["layer2.0.conv1"]) == 64
    exported = run_cli("export", "demo-vgg", "--format", "onnx", "--out", str(tmp_path / "m.onnx"), "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["format"] == "onnx" and (tmp_path / "m.onnx").stat().st_size > 100_000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--method", "l1", "--ratio", "1.0"), "--ratio 1.0: must be strictly between 0 and 1"),
        (("--method", "l1", "--ratio", "0"), "--ratio 0.0: must be strictly between 0 and 1"),
        (("--method", "magic", "--ratio", "0.3"), "no such method; installed: bn-scale, "),
        (("--method", "taylor", "--param", "batches=0", "--ratio", "0.3"), "parameter batches='0' is out of range"),
        (("--method", "l1", "--param", "depth=2", "--ratio", "0.3"), "unknown parameter 'depth'"),
        (("--method", "l1", "--macs-reduction", "0.9", "--max-layer-ratio", "0.3"), "--macs-reduction 0.9: cannot be"),
        (("--method", "l1", "--ratio", "0.3", "--lock", "nowhere"), "locked layer 'nowhere'"),
    ],
)
def test_bad_prune_input_exits_2_and_writes_nothing(tmp_path: Path, extra: tuple[str, ...], message: str) -> None:
    out, report = tmp_path / "p.safetensors", tmp_path / "r.json"
    result = run_cli(
        "prune", "demo-vgg", "--data", "demo", *extra, "--out", str(out), "--report", str(report), "--quiet"
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_prune_removes_blocks_with_a_block_method(tmp_path: Path) -> None:
    out, report_path = tmp_path / "shallow.safetensors", tmp_path / "r.json"
    result = run_cli(
        "prune", "demo", "--data", "demo", "--method", "cka-layer", "--param", "samples=64",
        "--param", "finetune_epochs=0", "--blocks", "2", "--out", str(out), "--report", str(report_path),
        "--latency-runs", "2", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    removed = report["plan"]["blocks_removed"]
    assert report["target"] == {"kind": "blocks", "value": 2} and len(removed) == 2
    assert f"plan: blocks removed: {', '.join(removed)}" in result.stdout
    assert report["after"]["params"] < report["before"]["params"]
    refused = run_cli("prune", "demo", "--data", "demo", "--method", "l1", "--blocks", "2", "--out", str(out))
    assert refused.returncode == 2 and "--blocks: method l1 scores channels, not residual blocks" in refused.stderr
