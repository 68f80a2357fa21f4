"""The ``secateur`` command line: inspect, eval, prune, score, export, finetune, compare and methods.

Results go to stdout (text, or JSON with ``--json``), progress to stderr.
Exit codes: 0 success, 1 the work failed, 2 bad usage or bad input, 130
cancelled. A mistake of the user's prints one clear message, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from secateur.app.report import format_eval, format_finetune, format_layer_tree, format_methods, format_prune
from secateur.core.common.devices import DEVICE_CHOICES, resolve_device
from secateur.core.common.errors import Cancelled, InputError, SecateurError, first_line
from secateur.core.common.files import write_json_atomic
from secateur.core.common.progress import Progress
from secateur.core.common.settings import RunSettings
from secateur.core.data.loading import DATA_FORMS, load_data
from secateur.core.model.export import export_model
from secateur.core.model.specs import SPEC_FORMS, LoadedModel, parse_model_spec
from secateur.core.pruning.loading import load_model
from secateur.core.pruning.params import parse_param_assignments
from secateur.core.pruning.plan import PlanOptions, Target
from secateur.core.pruning.registry import load_registry
from secateur.core.pruning.workspace import tree_of
from secateur.core.train.evaluate import evaluate
from secateur.core.train.finetune import FinetuneConfig
from secateur.core.workflow.compare import (
    CellResult,
    CompareRequest,
    Comparison,
    missed_target,
    parse_targets,
    split_method_params,
)
from secateur.core.workflow.pipeline import PruneRequest, run_prune, run_score


class _Parser(argparse.ArgumentParser):
    """argparse that names the command in its errors and exits with 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be at least {minimum}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help=f"where to run: {DEVICE_CHOICES} (default auto)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--seed", type=_non_negative_int, default=0, help="seed of every random choice (default 0)")
    _debug(parser)


def _debug(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _model_options(parser: argparse.ArgumentParser, optional: bool = False) -> None:
    parser.add_argument("model", metavar="SPEC", nargs="?" if optional else None, help=f"the model: {SPEC_FORMS}")
    parser.add_argument("--num-classes", type=_positive_int, help="classes of a torchvision or file model's head")
    parser.add_argument("--weights", metavar="FILE", help="a state dict to load: .safetensors, .pt or .pth")
    parser.add_argument(
        "--input-size", metavar="S|CxHxW", help="input side in pixels (224) or channels×height×width (1x28x28)"
    )


def _method_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="SPEC", help=f"the data: {DATA_FORMS}")
    parser.add_argument("--method", required=True, metavar="ID", help="a method id from `secateur methods`")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a method parameter")
    parser.add_argument("--batch-size", type=_positive_int, default=128, help="batch size (128)")
    parser.add_argument("--num-workers", type=_non_negative_int, default=0, help="data loader workers (0)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="secateur", description="Structured pruning workbench for PyTorch models.")
    parser.add_argument("--version", action="version", version=f"secateur {_version()}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="the layer tree: params, MACs, channels, groups, blocks")
    _model_options(inspect, optional=True)
    _common(inspect)
    inspect.add_argument("--list-architectures", action="store_true", help="list torchvision's architectures and exit")

    evaluate_cmd = commands.add_parser("eval", help="accuracy, loss, params, MACs and latency on a data set")
    _model_options(evaluate_cmd)
    evaluate_cmd.add_argument("--data", required=True, metavar="SPEC", help=f"the data: {DATA_FORMS}")
    evaluate_cmd.add_argument("--split", default="test", choices=("test", "calibration", "train"))
    evaluate_cmd.add_argument("--batch-size", type=_positive_int, default=256, help="evaluation batch size (256)")
    evaluate_cmd.add_argument("--num-workers", type=_non_negative_int, default=0, help="data loader workers (0)")
    evaluate_cmd.add_argument(
        "--latency-batch-size", type=_positive_int, default=1, help="batch of the latency runs (1)"
    )
    evaluate_cmd.add_argument("--latency-runs", type=_positive_int, default=20, help="timed runs after warm-up (20)")
    _common(evaluate_cmd)

    prune = commands.add_parser("prune", help="score, plan, apply, evaluate, fine-tune and save a pruned checkpoint")
    _model_options(prune)
    _method_options(prune)
    target = prune.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=float, help="fraction of the prunable channels to remove, in (0, 1)")
    target.add_argument("--macs-reduction", type=float, help="fraction of the MACs to remove, in (0, 1)")
    target.add_argument("--blocks", type=_positive_int, help="residual blocks to remove (block methods)")
    target.add_argument(
        "--latency-reduction", type=float, help="fraction of the measured latency to remove, in (0, 1) (timed: slower)"
    )
    prune.add_argument("--global-ranking", action="store_true", help="rank channels across layers, not per layer")
    prune.add_argument(
        "--latency-table",
        action="store_true",
        help="time each group's layers at a few widths (cached per device) and keep channel counts where latency "
        "steps down; with --latency-reduction, plan by the table (HALP knapsack), timed and corrected to ±3 points",
    )
    prune.add_argument("--max-layer-ratio", type=float, default=0.9, help="at most this fraction of a layer goes (0.9)")
    prune.add_argument("--min-channels", type=_positive_int, default=1, help="keep at least this many channels (1)")
    prune.add_argument("--round-to", type=_positive_int, default=1, help="keep a multiple of this many channels (1)")
    prune.add_argument(
        "--min-stage-blocks", type=_positive_int, default=2, help="block methods: a stage keeps this many blocks (2)"
    )
    prune.add_argument("--lock", action="append", default=[], metavar="LAYER", help="never prune this layer's group")
    prune.add_argument(
        "--override", action="append", default=[], metavar="LAYER=RATIO", help="prune this layer's group at RATIO"
    )
    prune.add_argument("--recalibrate-bn", action="store_true", help="re-estimate BatchNorm statistics after apply")
    prune.add_argument("--finetune-epochs", type=_non_negative_int, default=0, help="epochs of fine-tuning (0)")
    prune.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning learning rate (0.01)")
    prune.add_argument("--out", required=True, metavar="FILE", help="the pruned checkpoint (.safetensors)")
    prune.add_argument("--report", metavar="FILE", help="write the JSON report here too")
    prune.add_argument("--latency-runs", type=_positive_int, default=20, help="timed runs per evaluation (20)")
    prune.add_argument(
        "--latency-batch-size", type=_positive_int, default=1, help="batch of latency targets and measurements (1)"
    )
    _common(prune)

    score = commands.add_parser("score", help="per-group per-channel (or per-block) importance as JSON")
    _model_options(score)
    _method_options(score)
    score.add_argument("--out", required=True, metavar="FILE", help="where to write the scores (.json)")
    _common(score)

    export = commands.add_parser("export", help="write a model as ONNX, TorchScript or a torch.export program")
    _model_options(export)
    export.add_argument("--format", required=True, choices=("onnx", "torchscript", "pt2"))
    export.add_argument("--out", required=True, metavar="FILE")
    export.add_argument(
        "--static-batch", action="store_true", help="fix the batch axis to 1 (ONNX and pt2 have a dynamic one)"
    )
    _common(export)

    _add_finetune_command(commands)
    _add_compare(commands)

    methods = commands.add_parser("methods", help="installed pruning methods, their parameters, failed plugins")
    methods.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    methods.add_argument("--quiet", action="store_true", help="no progress on stderr")
    methods.add_argument("--device", default="auto", help=f"accepted for symmetry: {DEVICE_CHOICES}")
    _debug(methods)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("secateur")
    except PackageNotFoundError:
        return "unknown"


def _stderr_progress(quiet: bool) -> Progress:
    """A bar on a terminal, else a plain line per stage and at most one a second."""
    if quiet:
        return Progress()
    interactive = sys.stderr.isatty()
    last = {"stage": "", "time": 0.0}

    def report(stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if interactive:
            width = 30
            filled = int(width * done / max(total, 1))
            sys.stderr.write(f"\r{stage:<20} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            if finished:
                sys.stderr.write("\n")
            sys.stderr.flush()
            return
        if stage != last["stage"] or finished or now - last["time"] >= 1.0:
            sys.stderr.write(f"{stage}: {done}/{total}\n")
            last.update(stage=stage, time=now)

    return Progress(report=report)


def _load(args: argparse.Namespace) -> LoadedModel:
    spec = parse_model_spec(args.model, args.num_classes, args.weights, args.input_size)
    return load_model(spec)


def _inspect(args: argparse.Namespace) -> int:
    if args.list_architectures:
        from secateur.core.model.specs import torchvision_architectures

        names = torchvision_architectures()
        print(json.dumps({"architectures": names}) if args.json else "\n".join(names))
        return 0
    if args.model is None:
        raise InputError("inspect needs a model SPEC (or --list-architectures)")
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    loaded = _load(args)
    tree = tree_of(loaded, device)
    print(json.dumps(tree.to_dict(), indent=2) if args.json else format_layer_tree(tree))
    return 0


def _eval(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    loaded = _load(args)
    data = load_data(args.data, input_size=loaded.input_shape[1])
    metrics = evaluate(
        loaded.model,
        data,
        device=device,
        split=args.split,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        latency_batch_size=args.latency_batch_size,
        latency_runs=args.latency_runs,
        progress=_stderr_progress(args.quiet),
    )
    result = {"model": loaded.spec.text(), "data": data.spec, **metrics.to_dict()}
    print(json.dumps(result, indent=2) if args.json else format_eval(result))
    return 0


def _methods(args: argparse.Namespace) -> int:
    registry = load_registry()
    result = {
        "methods": [method.to_dict() for method in registry.methods.values()],
        "failed": [failure.to_dict() for failure in registry.failed],
    }
    print(json.dumps(result, indent=2) if args.json else format_methods(result))
    return 0


def _overrides(items: list[str]) -> dict[str, float]:
    overrides = {}
    for name, value in parse_param_assignments(items).items():
        try:
            overrides[name] = float(value)
        except ValueError:
            raise InputError(f"--override {name}={value}: the ratio must be a number in [0, 1)") from None
    return overrides


def _prune(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.data is None:
        raise InputError("prune needs --data SPEC (to evaluate, and for methods that look at data)")
    method = load_registry().method(args.method)
    if args.latency_table and args.blocks is not None:
        raise InputError("--latency-table: works with channel targets (--ratio, --macs-reduction, --latency-reduction)")
    loaded = _load(args)
    if args.ratio is not None:
        target = Target("ratio", args.ratio)
    elif args.blocks is not None:
        target = Target("blocks", args.blocks)
    elif args.latency_reduction is not None:
        target = Target("latency", args.latency_reduction)
    else:
        target = Target("macs", args.macs_reduction)
    request = PruneRequest(
        loaded=loaded,
        data=load_data(args.data, input_size=loaded.input_shape[1]),
        method=method,
        params=parse_param_assignments(args.param),
        target=target,
        out=Path(args.out),
        options=PlanOptions(
            global_ranking=args.global_ranking,
            latency_table=args.latency_table,
            max_layer_ratio=args.max_layer_ratio,
            min_channels=args.min_channels,
            round_to=args.round_to,
            locked=tuple(args.lock),
            overrides=_overrides(args.override),
            min_stage_blocks=args.min_stage_blocks,
            raw_scores=method.comparable_scores,
            latency_batch_size=args.latency_batch_size,
            latency_rounds=max(3, args.latency_runs),
        ),
        finetune=FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr),
        recalibrate_bn=args.recalibrate_bn,
        settings=_settings(args, device),
        latency_runs=args.latency_runs,
    )
    if args.report and not Path(args.report).parent.is_dir():
        _missing_folder("--report", args.report)
    report = run_prune(request, _stderr_progress(args.quiet))
    if args.report:
        write_json_atomic(args.report, report, "--report")
    print(json.dumps(report, indent=2) if args.json else format_prune(report))
    return 0


def _settings(args: argparse.Namespace, device: torch.device) -> RunSettings:
    """The run settings of a command that takes --seed, --batch-size and --num-workers."""
    return RunSettings(device=device, seed=args.seed, batch_size=args.batch_size, num_workers=args.num_workers)


def _missing_folder(argument: str, path: str) -> None:
    raise InputError(f"{argument} {path}: the folder {Path(path).parent} does not exist")


def _score(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    method = load_registry().method(args.method)
    loaded = _load(args)
    data = load_data(args.data, input_size=loaded.input_shape[1]) if args.data else None
    if not Path(args.out).parent.is_dir():
        _missing_folder("--out", args.out)
    params = parse_param_assignments(args.param)
    _, document = run_score(loaded, data, method, params, _settings(args, device), _stderr_progress(args.quiet))
    write_json_atomic(args.out, document)
    summary = {
        "method": method.id,
        "out": args.out,
        "groups": len(document["groups"]),
        "blocks": len(document["blocks"]),
    }
    print(
        json.dumps(summary)
        if args.json
        else f"wrote {summary['groups']} group and {summary['blocks']} block scores to {args.out}"
    )
    return 0


def _export(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    loaded = _load(args)
    path = export_model(loaded.model, loaded.input_shape, args.format, args.out, not args.static_batch)
    print(json.dumps({"format": args.format, "out": str(path)}) if args.json else f"wrote {args.format} to {path}")
    return 0


def _add_finetune_command(commands: argparse._SubParsersAction) -> None:
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a model, saving and resumable after every epoch; runs unchanged under torchrun",
        description=(
            "Fine-tune (SGD, Nesterov momentum, cosine schedule) and keep the best epoch on the calibration split. "
            "Under `torchrun --nproc-per-node K` every process trains on its shard with --batch-size images "
            "(global batch = K × --batch-size); only rank 0 prints and writes."
        ),
    )
    _model_options(finetune)
    finetune.add_argument("--data", required=True, metavar="SPEC", help=f"the data: {DATA_FORMS}")
    finetune.add_argument("--epochs", required=True, type=_positive_int, help="epochs to train")
    finetune.add_argument("--out", required=True, metavar="FILE", help="the checkpoint (.safetensors), every epoch")
    finetune.add_argument("--lr", type=float, default=0.01, help="peak learning rate of the cosine schedule (0.01)")
    finetune.add_argument("--momentum", type=float, default=0.9, help="Nesterov momentum (0.9)")
    finetune.add_argument("--weight-decay", type=float, default=5e-4, help="weight decay (5e-4)")
    finetune.add_argument("--batch-size", type=_positive_int, default=128, help="batch size per process (128)")
    finetune.add_argument("--num-workers", type=_non_negative_int, default=0, help="data loader workers (0)")
    finetune.add_argument("--steps-per-epoch", type=_positive_int, help="cap an epoch at this many steps")
    finetune.add_argument("--resume", action="store_true", help="continue after the last finished epoch of --out")
    finetune.add_argument(
        "--print-torchrun",
        type=_positive_int,
        metavar="K",
        help="print the torchrun command for K processes per node (same global batch) and exit",
    )
    _common(finetune)


def _finetune(args: argparse.Namespace) -> int:
    from secateur.core.model.checkpoint import read_checkpoint_info
    from secateur.core.train.distributed import World
    from secateur.core.workflow.finetune_run import FinetuneRequest, run_finetune, torchrun_command, torchrun_text

    world = World.from_environment()
    config = FinetuneConfig(args.epochs, args.lr, args.momentum, args.weight_decay, args.steps_per_epoch)
    spec = parse_model_spec(args.model, args.num_classes, args.weights, args.input_size)
    if args.print_torchrun:  # for the cluster: its devices, not this machine's, decide
        settings = _settings(args, torch.device("cpu"))
        words = torchrun_command(spec, args.data, args.out, config, settings, args.print_torchrun, device=args.device)
        print(json.dumps({"command": words}) if args.json else torchrun_text(words))
        return 0
    device = resolve_device(args.device)
    world.join(world.device_for(device))
    try:
        torch.manual_seed(args.seed)
        loaded = load_model(spec)
        extra = read_checkpoint_info(spec.path).extra if spec.kind == "checkpoint" else {}
        request = FinetuneRequest(
            loaded=loaded,
            data=load_data(args.data, input_size=loaded.input_shape[1]),
            config=config,
            settings=_settings(args, device),
            out=Path(args.out),
            resume=args.resume,
            extra={k: v for k, v in extra.items() if k not in ("finetune", "libraries")},
        )
        progress = _stderr_progress(args.quiet or not world.is_main)
        report = run_finetune(request, world, progress)
    finally:
        world.leave()
    if world.is_main:
        print(json.dumps(report, indent=2) if args.json else format_finetune(report))
    return 0


def _add_compare(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="every method at every target: compare.json, Pareto plots and report.html; resumes"
    )
    _model_options(compare)
    compare.add_argument("--data", required=True, metavar="SPEC", help=f"the data: {DATA_FORMS}")
    compare.add_argument("--methods", required=True, metavar="A,B,...", help="method ids from `secateur methods`")
    compare.add_argument(
        "--targets", required=True, metavar="KIND:V,V,...", help="targets, e.g. macs:0.3,0.5,0.7 or ratio:0.2,0.4"
    )
    compare.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE", help="a method parameter")
    compare.add_argument("--finetune-epochs", type=_non_negative_int, default=0, help="epochs of fine-tuning (0)")
    compare.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning learning rate (0.01)")
    compare.add_argument("--recalibrate-bn", action="store_true", help="re-estimate BatchNorm statistics after apply")
    compare.add_argument(
        "--min-stage-blocks", type=_positive_int, default=2, help="block methods: a stage keeps this many blocks (2)"
    )
    compare.add_argument(
        "--latency-batches", default="1,32", metavar="B,B", help="batch sizes of the latency runs (1,32)"
    )
    compare.add_argument("--latency-runs", type=_positive_int, default=20, help="timed runs per batch size (20)")
    compare.add_argument("--batch-size", type=_positive_int, default=128, help="batch size (128)")
    compare.add_argument("--num-workers", type=_non_negative_int, default=0, help="data loader workers (0)")
    compare.add_argument("--out", required=True, metavar="DIR", help="the folder for compare.json, plots and report")
    _common(compare)


def _compare(args: argparse.Namespace) -> int:
    from secateur.core.workflow.compare_report import write_report  # matplotlib: loaded only when needed

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    method_ids = [item.strip() for item in args.methods.split(",") if item.strip()]
    registry = load_registry()
    methods = [registry.method(method_id) for method_id in method_ids]
    targets = parse_targets(args.targets)
    params = split_method_params(parse_param_assignments(args.param), method_ids)
    try:
        batches = tuple(int(item) for item in args.latency_batches.split(","))
    except ValueError:
        raise InputError(f"--latency-batches {args.latency_batches}: expected whole numbers, e.g. 1,32") from None
    if not batches or min(batches) < 1:
        raise InputError(f"--latency-batches {args.latency_batches}: batch sizes must be at least 1")
    loaded = _load(args)
    comparison = Comparison(
        CompareRequest(
            loaded=loaded,
            data=load_data(args.data, input_size=loaded.input_shape[1]),
            methods=methods,
            targets=targets,
            out=Path(args.out),
            params=params,
            finetune=FinetuneConfig(epochs=args.finetune_epochs, lr=args.finetune_lr),
            recalibrate_bn=args.recalibrate_bn,
            settings=_settings(args, device),
            latency_batches=batches,
            latency_runs=args.latency_runs,
            min_stage_blocks=args.min_stage_blocks,
        )
    )
    quiet = args.quiet
    if comparison.dropped and not quiet:
        print(f"compare: {comparison.dropped} earlier cells had other settings; recomputing", file=sys.stderr)
    reused = 0
    try:
        for cell in comparison.cells(_stderr_progress(quiet)):
            reused += cell.reused
            if not quiet:
                print(_cell_line(cell), file=sys.stderr)
    except (KeyboardInterrupt, Cancelled):
        if comparison.document["cells"]:  # the finished cells get their report too
            write_report(comparison.document, Path(args.out))
        raise
    document = comparison.document
    written = write_report(document, Path(args.out))
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(_format_compare(document, reused, written))
    return 0


def _format_compare(document: dict, reused: int, written: list[Path]) -> str:
    """The comparison's table as aligned text, what was reused and where the files are."""
    from secateur.core.workflow.compare_report import table_header, table_rows

    header, rows = table_header(document), table_rows(document)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    baseline = document["baseline"]
    lines.insert(0, f"unpruned: {baseline['accuracy']:.2f}% test accuracy, {baseline['macs'] / 1e6:.1f} M MACs")
    lines.append(f"{len(rows)} cells ({reused} reused from an earlier run); wrote {', '.join(str(p) for p in written)}")
    return "\n".join(lines)


def _cell_line(cell: CellResult) -> str:
    """``compare: cell 3/6 l1 macs:0.5 done in 12 s, about 40 s left``."""
    record = cell.record
    how = "reused" if cell.reused else f"done in {record['seconds']:.0f} s"
    left = f", about {_duration(cell.seconds_left)} left" if cell.seconds_left else ""
    target = f"{record['target']['kind']}:{record['target']['value']:g}"
    missed = f" ({missed_target(record)})" if missed_target(record) else ""
    return f"compare: cell {cell.index}/{cell.total} {record['method']} {target} {how}{missed}{left}"


def _duration(seconds: float) -> str:
    """``95`` → ``1 min 35 s``: a time left that reads at a glance."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


_COMMANDS = {
    "inspect": _inspect,
    "eval": _eval,
    "prune": _prune,
    "score": _score,
    "export": _export,
    "methods": _methods,
    "finetune": _finetune,
    "compare": _compare,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by ``python -m``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return _COMMANDS[args.command](args)
    except Cancelled as error:
        print(f"secateur {args.command}: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # stdout closed early, as by `| head`: not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's final flush
        return 0
    except KeyboardInterrupt:
        print(f"secateur {args.command}: interrupted", file=sys.stderr)
        return 130
    except SecateurError as error:
        _traceback(args, error)
        print(f"secateur {args.command}: error: {error}", file=sys.stderr)
        return error.exit_code
    except Exception as error:  # a bug: one line naming it, the traceback only with --debug
        _traceback(args, error)
        first = first_line(error)
        hint = "" if getattr(args, "debug", False) else " (rerun with --debug for the traceback)"
        print(f"secateur {args.command}: internal error: {type(error).__name__}: {first}{hint}", file=sys.stderr)
        return 1


def _traceback(args: argparse.Namespace, error: BaseException) -> None:
    """With --debug, the full traceback (causes included) on stderr."""
    if getattr(args, "debug", False):
        traceback.print_exception(error, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
