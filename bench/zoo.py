"""The zoo battery: every torchvision classification architecture (and timm family) × the training-free channel methods.

Each cell (architecture, method, ratio) runs the user's path: score, plan,
apply, a forward pass, predicted = measured params and MACs, the checkpoint
reloaded in a fresh process with equal outputs, and an ONNX export run by
onnxruntime with equal outputs. A cell is ``ok``, ``refused`` (a clear
InputError: which constraint, which module) or ``bug`` (anything else).

Long: run it niced, one torch thread. Cells are appended to ``bench/zoo.jsonl``
as they finish and skipped on the next run (resumable); ``--table`` writes
``bench/zoo.md`` from them::

    nice -n 15 .venv/bin/python bench/zoo.py --archs resnet18,mobilenet_v2   # a subset
    nice -n 15 .venv/bin/python bench/zoo.py                                  # everything left
    .venv/bin/python bench/zoo.py --table

Each architecture runs in its own process (memory returns to the system, a
crash is one architecture's bug, not the battery's end) under ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "zoo.jsonl"
RELOAD_TIMEOUT = 3600  # seconds for one method's checkpoints to reload in a fresh process (vit_h_14: 1.8 GB each)
TABLE = HERE / "zoo.md"
METHODS = ("random", "l1", "l2", "bn-scale", "taylor", "intra-fusion", "pxp")
RATIOS = (0.3, 0.7)
SIZES = (32, 64, 96, 128, 160, 224, 299)
CLASSES = 10
# method parameters that keep a cell short (the same code paths, fewer batches)
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "taylor": {"batches": 1},
    "intra-fusion": {"batches": 1},
    "pxp": {"samples_per_class": 1},
}


# one small member of each family first, so a partial run covers every kind of structure
FIRST = (
    "resnet18", "resnext50_32x4d", "regnet_x_400mf", "regnet_y_400mf", "mobilenet_v2", "mobilenet_v3_small",
    "mnasnet0_5", "efficientnet_b0", "efficientnet_v2_s", "shufflenet_v2_x0_5", "squeezenet1_1", "densenet121",
    "googlenet", "inception_v3", "alexnet", "vgg11_bn", "convnext_tiny", "swin_t", "swin_v2_t", "maxvit_t",
    "vit_b_32", "wide_resnet50_2",
)  # fmt: skip


# one small member of each timm family (``--timm``), named as the model SPEC is: ``timm:NAME``
TIMM_FAMILIES = tuple(
    f"timm:{name}"
    for name in (
        "resnet18", "efficientnet_b0", "mobilenetv3_small_100", "convnext_atto", "regnetx_002", "ghostnet_100",
        "rexnet_100", "vit_tiny_patch16_224", "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224",
        "mixer_s16_224", "poolformer_s12", "resnest14d", "dla34", "mobilevit_xxs", "repvgg_a0", "cspresnet50",
        "levit_128s", "densenet121", "hrnet_w18_small",
    )
)  # fmt: skip


def architectures(timm: bool = False) -> list[str]:
    """torchvision's classification architectures (``list_models``), family representatives first; timm's too."""
    import torchvision

    names = sorted(torchvision.models.list_models(module=torchvision.models))
    ordered = [name for name in FIRST if name in names] + [name for name in names if name not in FIRST]
    return ordered + list(TIMM_FAMILIES) if timm else ordered


def _spec(name: str) -> str:
    """The model SPEC of a battery architecture: ``timm:NAME`` as given, a bare name is torchvision's."""
    return name if name.startswith("timm:") else f"torchvision:{name}"


def smallest_input(name: str) -> int:
    """The smallest square input (of ``SIZES``) the architecture runs on."""
    from secateur.core.model.specs import parse_model_spec
    from secateur.core.pruning.loading import load_model

    for size in SIZES:
        try:
            model = load_model(parse_model_spec(_spec(name), CLASSES, None, size)).model.eval()
            with torch.no_grad():
                model(torch.zeros(1, 3, size, size))
        except Exception:
            continue
        return size
    raise RuntimeError(f"{name}: runs on none of the input sizes {SIZES}")


def synthetic_data(size: int, images: int = 16) -> Any:
    """A labelled, seeded random image set at the model's input size (taylor and pxp need labels)."""
    from secateur.core.data.arrays import ArrayDataset
    from secateur.core.data.loading import DataBundle

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, 3, size, size), dtype=np.uint8)
    labels = np.arange(images) % CLASSES
    dataset = ArrayDataset(pixels, labels, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    names = [str(index) for index in range(CLASSES)]
    return DataBundle("synthetic", dataset, dataset, dataset, names, (3, size, size))


@dataclass
class Cell:
    arch: str
    method: str
    ratio: float
    status: str  # ok, refused, bug
    reason: str = ""
    seconds: float = 0.0
    params: tuple[int, int] = (0, 0)  # before, after

    def key(self) -> tuple[str, str, float]:
        return (self.arch, self.method, self.ratio)


def _measure(model: torch.nn.Module, example: torch.Tensor) -> tuple[int, int]:
    from secateur.core.graph.macs import trace_modules

    return sum(p.numel() for p in model.parameters()), trace_modules(model, example)[""].macs


def _onnx_check(model: torch.nn.Module, input_shape: tuple[int, ...], example: torch.Tensor, folder: Path) -> str:
    """'' when the ONNX export runs in onnxruntime with the model's outputs, else what went wrong."""
    import onnxruntime

    from secateur.core.model.export import export_model

    path = export_model(model, input_shape, "onnx", folder / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    example = example[:1]  # the export is traced on a batch of one (its batch axis is not dynamic yet)
    (got,) = session.run(None, {session.get_inputs()[0].name: example.numpy()})
    with torch.no_grad():
        expected = model(example).numpy()
    if not np.allclose(got, expected, rtol=1e-3, atol=1e-4):
        return f"onnxruntime output differs by {float(np.abs(got - expected).max()):.3g}"
    return ""


def run_architecture(
    name: str, methods: tuple[str, ...], ratios: tuple[float, ...], done: set, folder: Path
) -> Iterator[Cell]:
    """Every (method, ratio) cell of one architecture not in ``done``, its files in ``folder``; reloads per method."""
    from secateur.core.common.errors import InputError
    from secateur.core.common.settings import RunSettings
    from secateur.core.model.checkpoint import CheckpointInfo, save_checkpoint
    from secateur.core.model.specs import parse_model_spec
    from secateur.core.pruning.loading import load_model
    from secateur.core.pruning.plan import PlanOptions, Target
    from secateur.core.pruning.registry import load_registry
    from secateur.core.pruning.workspace import Workspace

    size = smallest_input(name)
    spec = parse_model_spec(_spec(name), CLASSES, None, size)
    torch.manual_seed(0)
    loaded = load_model(spec)
    data = synthetic_data(size)
    workspace = Workspace(loaded.model, loaded.input_shape, data, RunSettings(batch_size=8))
    example = torch.randn(2, *loaded.input_shape, generator=torch.Generator().manual_seed(1))
    before = _measure(loaded.model, example[:1])
    registry = load_registry()
    pending: list[tuple[Cell, Path]] = []
    for method_id in methods:
        todo = [ratio for ratio in ratios if (name, method_id, ratio) not in done]
        if not todo:
            continue
        method = registry.method(method_id)
        params = FAST_PARAMS.get(method_id, {})
        started = time.perf_counter()
        try:
            scored = workspace.score(method, params)
        except InputError as error:
            for ratio in todo:
                yield Cell(name, method_id, ratio, "refused", f"scoring: {error}", time.perf_counter() - started)
            continue
        except Exception as error:
            for ratio in todo:
                yield Cell(name, method_id, ratio, "bug", f"scoring: {_short(error)}", time.perf_counter() - started)
            continue
        score_seconds = time.perf_counter() - started
        for ratio in todo:
            cell = Cell(name, method_id, ratio, "ok", seconds=score_seconds)
            started = time.perf_counter()
            checkpoint = folder / f"{method_id}-{ratio}.safetensors"
            try:
                options = PlanOptions(raw_scores=method.comparable_scores)
                plan = workspace.plan(scored, Target("ratio", ratio), options, method_id)
                applied = workspace.apply(plan, method, params, scored)
                model = applied.model.eval()
                with torch.no_grad():
                    outputs = model(example)
                if not torch.isfinite(outputs).all():
                    raise AssertionError("the pruned model's outputs are not finite")
                actual = _measure(model, example[:1])
                cell.params = (before[0], actual[0])
                expected = (applied.plan.predicted_params, applied.plan.predicted_macs)
                if actual != expected:
                    raise AssertionError(f"predicted params/MACs {expected} but the pruned model has {actual}")
                info = CheckpointInfo(spec, loaded.input_shape, list(applied.edits))
                save_checkpoint(checkpoint, model, info)
                torch.save(outputs, checkpoint.with_suffix(".out"))
                problem = _onnx_check(model, loaded.input_shape, example, folder)
                if problem:
                    raise AssertionError(problem)
                pending.append((cell, checkpoint))
            except InputError as error:
                cell.status, cell.reason = "refused", str(error)
            except Exception as error:
                cell.status, cell.reason = "bug", _short(error)
            cell.seconds += time.perf_counter() - started
            if cell.status != "ok":
                yield cell
        yield from _reloaded(folder, example, pending)  # per method, so a timeout loses one method at most
        for _, checkpoint in pending:  # a large architecture's checkpoints would otherwise fill the disk
            checkpoint.unlink()
            checkpoint.with_suffix(".out").unlink()
        pending = []


def _reloaded(folder: Path, example: torch.Tensor, pending: list[tuple[Cell, Path]]) -> Iterator[Cell]:
    """The pending cells, each a bug if its checkpoint does not reload with the same outputs."""
    torch.save(example, folder / "example.pt")
    started = time.perf_counter()
    problems = _reload_in_fresh_process(folder, [checkpoint for _, checkpoint in pending])
    for cell, checkpoint in pending:
        problem = problems.get(checkpoint.name, "the reload process did not report it")
        if problem:
            cell.status, cell.reason = "bug", f"reload: {problem}"
        cell.seconds += (time.perf_counter() - started) / len(pending)
        yield cell


def _reload_in_fresh_process(folder: Path, checkpoints: list[Path]) -> dict[str, str]:
    """Load each checkpoint in a new interpreter and compare its outputs; name -> '' or the problem."""
    if not checkpoints:
        return {}
    command = [sys.executable, str(Path(__file__)), "--reload", str(folder), *[c.name for c in checkpoints]]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=RELOAD_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {c.name: f"the reload process took over {RELOAD_TIMEOUT} s" for c in checkpoints}
    if result.returncode != 0:
        return {c.name: f"reload process failed: {result.stderr.strip().splitlines()[-1:]}" for c in checkpoints}
    return json.loads(result.stdout.strip().splitlines()[-1])


def reload_and_compare(folder: Path, names: list[str]) -> dict[str, str]:
    """Run in the fresh process: every checkpoint's outputs against the ones saved beside it."""
    from secateur.core.pruning.loading import load_checkpoint

    example = torch.load(folder / "example.pt")
    problems = {}
    for name in names:
        path = folder / name
        try:
            model = load_checkpoint(path)
            with torch.no_grad():
                got = model(example)
            expected = torch.load(path.with_suffix(".out"))
            problems[name] = (
                "" if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else "outputs differ after reload"
            )
        except Exception as error:
            problems[name] = _short(error)
    return problems


def _short(error: BaseException) -> str:
    """The error's type and first line, with the innermost frame of the project or Torch-Pruning."""
    frames = [
        f
        for f in traceback.extract_tb(error.__traceback__)
        if "secateur" in f.filename or "torch_pruning" in f.filename
    ]
    where = f" [{Path(frames[-1].filename).name}:{frames[-1].lineno}]" if frames else ""
    lines = str(error).strip().splitlines()
    # a WorkError's first line names the method and stage; its cause is the last line of the traceback
    text = " / ".join(dict.fromkeys([lines[0], lines[-1]])) if lines else ""
    return f"{type(error).__name__}: {text[:300]}{where}"


# --- the driver ------------------------------------------------------------------


def load_results() -> dict[tuple[str, str, float], dict[str, Any]]:
    results = {}
    if RESULTS.exists():
        for line in RESULTS.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                results[(record["arch"], record["method"], record["ratio"])] = record
    return results


def run_one(name: str, methods: tuple[str, ...], ratios: tuple[float, ...], folder: Path) -> None:
    """Child process: run one architecture and append its cells to the results as they finish."""
    torch.set_num_threads(1)
    done = set(load_results())
    try:
        for cell in run_architecture(name, methods, ratios, done, folder):
            _append(cell)
            done.add(cell.key())  # a later failure must not overwrite a cell that finished
    except Exception as error:
        for method in methods:
            for ratio in ratios:
                if (name, method, ratio) not in done:
                    _append(Cell(name, method, ratio, "bug", f"setup: {_short(error)}"))


def _append(cell: Cell) -> None:
    with RESULTS.open("a") as handle:
        handle.write(json.dumps({**cell.__dict__, "seconds": round(cell.seconds, 2)}) + "\n")


def run_all(names: list[str], methods: tuple[str, ...], ratios: tuple[float, ...], timeout: int) -> None:
    for name in names:
        results = load_results()
        if all((name, m, r) in results for m in methods for r in ratios):
            continue
        started = time.perf_counter()
        command = [sys.executable, str(Path(__file__)), "--one", name, "--methods", ",".join(methods)]
        command += ["--ratios", ",".join(map(str, ratios))]
        try:
            # the parent owns the files' folder: a child killed at its timeout cannot remove it
            with tempfile.TemporaryDirectory(prefix=f"zoo-{name}-") as folder:
                command += ["--folder", folder]
                subprocess.run(command, timeout=timeout, check=False, env={**os.environ, "OMP_NUM_THREADS": "1"})
        except subprocess.TimeoutExpired:
            results = load_results()
            for method in methods:
                for ratio in ratios:
                    if (name, method, ratio) not in results:
                        _append(Cell(name, method, ratio, "timeout", f"architecture over {timeout}s"))
        print(f"{name}: {time.perf_counter() - started:.0f}s", flush=True)


def _mark(cell: dict[str, Any], mark: dict[str, str]) -> str:
    """A cell's mark in the table; an ok cell whose parameter count did not move says so."""
    before, after = cell["params"]
    return "ok (none cut)" if cell["status"] == "ok" and before == after else mark[cell["status"]]


def write_table(path: Path = TABLE) -> str:
    """The markdown table of every recorded cell, with counts and the time the cells took."""
    results = load_results()
    archs = sorted({arch for arch, _, _ in results})
    counts = Counter(record["status"] for record in results.values())
    seconds = sum(record["seconds"] for record in results.values())
    mark = {"ok": "ok", "refused": "refused", "bug": "**BUG**", "timeout": "timeout"}
    lines = [
        "# Zoo battery: torchvision classification architectures (and timm families) × training-free channel methods",
        "",
        "Written by `bench/zoo.py --table` from `bench/zoo.jsonl`. Each cell: score, plan, apply, forward,",
        "predicted = measured params and MACs, checkpoint reloaded in a fresh process with equal outputs,",
        "ONNX export run in onnxruntime with equal outputs. Ratios 0.3 / 0.7, weights=None, num_classes=10,",
        "the smallest square input of 32…299 each architecture accepts; one torch thread, niced, on a shared",
        "2-core machine. `ok (none cut)`: the cell ran clean but the method scored no group, so nothing was",
        "removed (bn-scale on a model without BatchNorm).",
        "",
        f"Cells: {len(results)} over {len(archs)} architectures; "
        + ", ".join(f"{status} {count}" for status, count in sorted(counts.items()))
        + f"; cell time {seconds / 60:.1f} min.",
        "",
        "| architecture | " + " | ".join(METHODS) + " |",
        "| --- | " + " | ".join("---" for _ in METHODS) + " |",
    ]
    for arch in archs:
        row = []
        for method in METHODS:
            cells = [results[(arch, method, r)] for r in RATIOS if (arch, method, r) in results]
            row.append("/".join(_mark(cell, mark) for cell in cells))
        lines.append(f"| {arch} | " + " | ".join(row) + " |")
    reasons = [(key, r) for key, r in sorted(results.items()) if r["status"] != "ok"]
    if reasons:
        lines += ["", "## Cells that are not ok", ""]
        lines += [f"- {a} / {m} / {ratio}: {r['status']}: {r['reason']}" for (a, m, ratio), r in reasons]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archs", help="comma-separated architectures (default: all)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--ratios", default=",".join(map(str, RATIOS)))
    parser.add_argument("--timm", action="store_true", help="also timm's family representatives (TIMM_FAMILIES)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per architecture")
    parser.add_argument("--table", action="store_true", help="only write bench/zoo.md from the results")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--reload", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    methods = tuple(args.methods.split(","))
    ratios = tuple(float(r) for r in args.ratios.split(","))
    if args.reload:
        torch.set_num_threads(1)
        print(json.dumps(reload_and_compare(Path(args.reload[0]), args.reload[1:])))
    elif args.one:
        run_one(args.one, methods, ratios, Path(args.folder))
    elif args.table:
        print(write_table())
    else:
        run_all(args.archs.split(",") if args.archs else architectures(args.timm), methods, ratios, args.timeout)
        print(write_table())


if __name__ == "__main__":
    main()
