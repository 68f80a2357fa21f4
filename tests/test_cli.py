"""The command line through a subprocess: the JSON contract, exit codes, messages, progress."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import ARCHS, run_cli
from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.loading import load_model


def test_inspect_json_contract() -> None:
    result = run_cli("inspect", "demo", "--json", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)
    assert {"model", "params", "macs", "input_shape", "layers", "groups", "blocks"} <= set(tree)
    model = load_model(parse_model_spec("demo")).model
    assert tree["params"] == sum(p.numel() for p in model.parameters())
    assert tree["input_shape"] == [3, 32, 32]
    for layer in tree["layers"]:
        assert {"name", "type", "params", "macs", "in_channels", "out_channels", "group"} <= set(layer)
    for group in tree["groups"]:
        assert {"id", "channels", "layers", "prunable"} <= set(group)
    assert {"name": "layer2.0", "removable": False} in [
        {k: b[k] for k in ("name", "removable")} for b in tree["blocks"]
    ]
    conv = next(layer for layer in tree["layers"] if layer["name"] == "layer3.1.conv2")
    assert conv["macs"] == 128 * 8 * 8 * 128 * 9 and conv["params"] == 128 * 128 * 9


def test_inspect_text_is_a_readable_table() -> None:
    result = run_cli("inspect", f"{ARCHS / 'user_models.py'}:TinyTransformer")
    assert result.returncode == 0, result.stderr
    assert "residual blocks: 2, removable: 2" in result.stdout
    assert "MultiheadAttention" in result.stdout and "locked: the classifier's outputs" in result.stdout


def test_eval_json_contract_and_accuracy_against_a_direct_computation() -> None:
    result = run_cli("eval", "demo", "--data", "demo", "--json", "--latency-runs", "5", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert {"accuracy", "loss", "params", "macs", "latency_ms"} <= set(metrics)
    assert {"median", "p90", "batch_size", "device"} <= set(metrics["latency_ms"])
    assert metrics["latency_ms"]["device"] == "cpu" and metrics["latency_ms"]["batch_size"] == 1
    assert 0 < metrics["latency_ms"]["p10"] <= metrics["latency_ms"]["median"] <= metrics["latency_ms"]["p90"]
    model = load_model(parse_model_spec("demo")).model
    images, labels = zip(*[load_data("demo").test[i] for i in range(2000)], strict=True)
    with torch.no_grad():
        logits = model(torch.stack(images))
    labels_t = torch.tensor(labels)
    assert metrics["accuracy"] == pytest.approx(100.0 * float((logits.argmax(1) == labels_t).float().mean()), abs=1e-3)
    assert metrics["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, labels_t)), rel=1e-4)
    assert 85.0 <= metrics["accuracy"] <= 93.0  # the demo is hard enough for methods to differ


def test_progress_goes_to_stderr_and_quiet_silences_it() -> None:
    loud = run_cli("eval", "demo-vgg", "--data", "demo", "--latency-runs", "2")
    assert loud.returncode == 0 and "evaluate test:" in loud.stderr and "accuracy" in loud.stdout
    quiet = run_cli("eval", "demo-vgg", "--data", "demo", "--latency-runs", "2", "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("inspect", "torchvision:resnet19"), "did you mean resnet18"),
        (
            ("inspect", "torchvision:resnet18", "--weights", "/no/such/file.pt"),
            "--weights /no/such/file.pt: no such file",
        ),
        (("inspect", "demo", "--device", "tpu"), "--device 'tpu' is not a device"),
        (("eval", "demo", "--data", "imagenet"), "data SPEC 'imagenet' is not recognised"),
        (("eval", "demo", "--data", "demo", "--batch-size", "0"), "--batch-size: 0 must be at least 1"),
        (("eval", "demo"), "the following arguments are required: --data"),
        (("eval", "torchvision:resnet18", "--data", "demo"), "give --num-classes 10"),
        (
            ("eval", "torchvision:vit_b_16", "--num-classes", "10", "--input-size", "224", "--data", "demo"),
            "cannot run on this data's inputs of shape (3, 32, 32) (Wrong image height! Expected 224 but got 32!)",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_refused_pickle_through_the_cli(tmp_path: Path) -> None:
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    result = run_cli("inspect", "torchvision:resnet18", "--weights", str(tmp_path / "model.pt"))
    assert result.returncode == 2 and "refused" in result.stderr and "Traceback" not in result.stderr


def test_no_arguments_prints_help() -> None:
    result = run_cli()
    assert result.returncode == 0 and "inspect" in result.stdout and "methods" in result.stdout
