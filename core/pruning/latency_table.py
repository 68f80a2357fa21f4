"""A per-device latency table: how the layers of each prunable group speed up as the group narrows.

Approach: each group's member layers (convolutions, linear layers, BatchNorm) are rebuilt
standalone at a handful of widths and timed in isolation on inputs of the shapes seen in a traced
forward pass, the widths interleaved round-robin and the median kept. Whole-model timings at
per-group widths were the alternative; one group is a few percent of a model's time, below the
spread of whole-model timings on a loaded machine, whereas its own layers time in microseconds
and repeat cheaply (``bench/latency_table.py`` shows the prediction error).

A pruned model's latency is predicted per layer, separably: a layer whose inputs belong to one
group and outputs to another runs at ``t · ρ_in(w_in) · ρ_out(w_out)``, each ``ρ`` the layer's
measured time at that width over its time at full width (linearly interpolated between measured
widths). The timed layers add up to only part of the model's measured latency (on resnet18, about
half: activations, additions, pooling and the memory traffic between layers are not timed). How much
of the untimed rest shrinks with them is measured, not assumed: the whole model is also timed with
every timed group cut to half its width (interleaved with the unpruned model), and the model's
measured change over the timed layers' change is the factor every prediction scales the layers'
change by. On convolutional models it is close to the model's time over the timed layers' (the rest
shrinks with them; resnet50, 2 CPU threads: 1.07 against 1.13); on vit_b_16, whose attention (heads,
not timed) stays whole when only the MLP groups narrow, it is 1.15 against 1.93, and assuming the rest
shrank had predicted 0.40 less latency for a plan that measured 0.22.

Tables are cached as JSON (never pickle) under ``$SECATEUR_CACHE_DIR``, else
``$XDG_CACHE_HOME/secateur/latency`` (``~/.cache/...``), keyed by the architecture, input shape,
device, batch size and torch version; a cached table makes planning instant.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
import os
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch_pruning as tp
from torch import nn

from secateur.core.common.devices import synchronize
from secateur.core.common.files import write_json_atomic
from secateur.core.common.progress import SILENT, Progress
from secateur.core.graph.groups import GroupInfo
from secateur.core.pruning.latency import Timer, one_call, time_interleaved
from secateur.core.pruning.plan import GroupPlan, PruningPlan, Target
from secateur.core.pruning.surgery import apply_plan

FORMAT = "secateur-latency-table"
VERSION = 2  # 2: the whole-model fit (``fitted``)
FIT_RATIO = 0.5  # every timed group cut to this fraction of its width for the whole-model fit
FIT_ROUNDS = 15  # interleaved runs of the whole and the cut model for the fit
STEP_TOLERANCE = 0.03  # a width "steps down" when it is this much faster than every wider one
MAX_WIDTHS = 16


class TableError(ValueError):
    """A cached file that is not a latency table for this key."""


@dataclass(frozen=True)
class GroupLatency:
    """Milliseconds of each timed member layer of one group at each measured width (ascending)."""

    total: int
    widths: tuple[int, ...]
    layers: Mapping[str, tuple[float, ...]]

    def ms(self, width: int) -> float:
        """The group's layers together at ``width`` (interpolated)."""
        return sum(self.ratio(name, width) * times[-1] for name, times in self.layers.items())

    def ratio(self, layer: str, width: int) -> float:
        """A member layer's time at ``width`` over its time at full width (linear between measured widths)."""
        times = self.layers[layer]
        points = (0, *self.widths)
        values = (0.0, *times)
        index = min(max(bisect.bisect_left(points, width), 1), len(points) - 1)
        low, high = points[index - 1], points[index]
        share = (width - low) / (high - low)
        value = values[index - 1] + share * (values[index] - values[index - 1])
        return value / times[-1] if times[-1] > 0 else 1.0

    def step_downs(self, tolerance: float = STEP_TOLERANCE) -> tuple[int, ...]:
        """The widths (ascending, full width included) where the measured latency steps down.

        Walking down from full width, a width counts when it is faster than
        every wider one by more than ``tolerance``: keeping any width between two
        of these costs the same as the wider one.
        """
        chosen = [self.total]
        level = self.ms(self.total)
        for width in reversed(self.widths[:-1]):
            value = self.ms(width)
            if value < level * (1.0 - tolerance):
                chosen.append(width)
                level = value
        return tuple(sorted(chosen))


@dataclass(frozen=True)
class LatencyTable:
    """The whole model's measured latency and its groups' layer timings, for one key."""

    key: Mapping[str, object]
    base_ms: float
    groups: Mapping[str, GroupLatency]
    fitted: float | None = None  # the model's measured change per ms of its timed layers' change (whole-model fit)

    def layer_ms(self) -> dict[str, float]:
        """Each timed layer's full-width time (the mean over the groups that time it)."""
        seen: dict[str, list[float]] = {}
        for group in self.groups.values():
            for name, times in group.layers.items():
                seen.setdefault(name, []).append(times[-1])
        return {name: statistics.fmean(values) for name, values in seen.items()}

    def calibration(self) -> float:
        """How many ms the model's latency changes per ms its timed layers change.

        The whole-model fit when it was measured; else the model's latency over
        its timed layers' (the untimed rest assumed to shrink with them).
        """
        if self.fitted is not None:
            return self.fitted
        timed = sum(self.layer_ms().values())
        return self.base_ms / timed if timed > 0 else 1.0

    def layers_change(self, widths: Mapping[str, int]) -> float:
        """How many ms the timed layers change (negative: faster) with each named group at its width."""
        scale = {name: 1.0 for name in self.layer_ms()}
        for group_id, width in widths.items():
            group = self.groups.get(group_id)
            if group is None or width >= group.total:
                continue
            for name in group.layers:
                scale[name] *= group.ratio(name, width)
        return sum(full * (scale[name] - 1.0) for name, full in self.layer_ms().items())

    def predict(self, widths: Mapping[str, int]) -> float:
        """Predicted latency (ms) with each named group at its width; groups not named stay whole."""
        return self.base_ms + self.calibration() * self.layers_change(widths)

    def fit_widths(self) -> dict[str, int]:
        """The widths of the whole-model fit: each group at the measured width nearest ``FIT_RATIO`` of its own."""
        return {
            gid: min(group.widths, key=lambda width: abs(width - FIT_RATIO * group.total))
            for gid, group in self.groups.items()
        }

    def snap_widths(self) -> dict[str, tuple[int, ...]]:
        return {group_id: group.step_downs() for group_id, group in self.groups.items()}

    def to_json(self) -> dict[str, object]:
        groups = {
            gid: {"total": g.total, "widths": list(g.widths), "layers_ms": {k: list(v) for k, v in g.layers.items()}}
            for gid, g in self.groups.items()
        }
        return {
            "format": FORMAT,
            "version": VERSION,
            "key": dict(self.key),
            "base_ms": self.base_ms,
            "fitted": self.fitted,
            "groups": groups,
        }

    @classmethod
    def from_json(cls, document: object, key: Mapping[str, object]) -> LatencyTable:
        """Read a table, refusing one of another format or key (``TableError`` says what differs)."""
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise TableError("not a Secateur latency table")
        if document.get("version") != VERSION:
            raise TableError(f"table format version {document.get('version')!r}, this Secateur reads {VERSION}")
        if document.get("key") != dict(key):
            stored = document.get("key") if isinstance(document.get("key"), dict) else {}
            differ = sorted(name for name in key if stored.get(name) != key[name])
            raise TableError(f"made for another {', '.join(differ) or 'key'}")
        try:
            groups = {}
            for gid, entry in document["groups"].items():
                widths = tuple(int(w) for w in entry["widths"])
                layers = {name: tuple(float(t) for t in times) for name, times in entry["layers_ms"].items()}
                if widths != tuple(sorted(set(widths))) or widths[-1] != int(entry["total"]):
                    raise TableError(f"group {gid}: widths must ascend to the group's width")
                if any(len(times) != len(widths) or min(times) < 0 for times in layers.values()):
                    raise TableError(f"group {gid}: one non-negative time per width expected")
                groups[gid] = GroupLatency(int(entry["total"]), widths, layers)
            fitted = document["fitted"]
            if fitted is not None and not float(fitted) > 0:
                raise TableError(f"the whole-model fit must be positive, not {fitted!r}")
            return cls(dict(key), float(document["base_ms"]), groups, None if fitted is None else float(fitted))
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
            if isinstance(error, TableError):
                raise
            raise TableError(f"malformed ({type(error).__name__}: {error})") from None


# --- the key and the cache ------------------------------------------------------


def fingerprint(model: nn.Module) -> str:
    """A hash of the module structure: every module's name, type and settings, every tensor's shape."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, module in model.named_modules():
        digest.update(f"{name}|{type(module).__qualname__}|{module.extra_repr()}\n".encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
    return digest.hexdigest()[:24]


def device_name(device: torch.device) -> str:
    """The device as timings depend on it: the GPU's name, or the CPU and its thread count."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"{device.type}:{torch.get_num_threads()} threads"


def table_key(
    model: nn.Module, input_shape: tuple[int, ...], device: torch.device, batch_size: int
) -> dict[str, object]:
    return {
        "architecture": type(model).__qualname__,
        "fingerprint": fingerprint(model),
        "input_shape": list(input_shape),
        "device": device_name(device),
        "batch_size": int(batch_size),
        "torch": torch.__version__,
    }


def cache_dir() -> Path:
    """``$SECATEUR_CACHE_DIR``, else ``$XDG_CACHE_HOME/secateur/latency`` (default ``~/.cache``)."""
    if os.environ.get("SECATEUR_CACHE_DIR"):
        return Path(os.environ["SECATEUR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "secateur" / "latency"


def cache_path(key: Mapping[str, object], folder: Path | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]
    return (folder or cache_dir()) / f"{key['architecture']}-{digest}.json"


def load_cached(path: Path, key: Mapping[str, object]) -> tuple[LatencyTable | None, str]:
    """The cached table at ``path`` and "", or None and why it was not used ("" when there is none)."""
    if not path.is_file():
        return None, ""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return LatencyTable.from_json(document, key), ""
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TableError) as error:
        return None, f"the cached latency table {path} was not used ({error}); rebuilt"


# --- building -------------------------------------------------------------------


@torch.no_grad()
def wall_clock(module: nn.Module, batch: torch.Tensor) -> float:
    """Milliseconds of one call: the fastest of three back-to-back calls.

    A layer runs in microseconds; on a loaded machine one call in a few loses
    a scheduler slice (milliseconds), which the fastest of three skips. The
    table then takes the median of these samples over interleaved rounds.
    """
    synchronize(batch.device)  # work queued before does not count
    return min(one_call(module, batch) for _ in range(3))


def candidate_widths(group: GroupInfo) -> tuple[int, ...]:
    """At most 16 widths: multiples of a power of two (at least 8, and of the group's blocks), and the full width."""
    total = group.channels
    step = 8
    while total / step > MAX_WIDTHS:
        step *= 2
    if group.blocks is not None:
        step = math.lcm(step, group.blocks.count)
    if total <= step:
        return tuple(range(1, total + 1)) if total <= MAX_WIDTHS and group.blocks is None else (total,)
    return (*range(step, total, step), total)


def _input_shapes(model: nn.Module, batch: torch.Tensor) -> dict[nn.Module, tuple[int, ...]]:
    """The shape of the first input of every module in one forward pass."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        if module not in shapes and args and isinstance(args[0], torch.Tensor):
            shapes[module] = tuple(args[0].shape)

    handles = [module.register_forward_pre_hook(record) for module in model.modules()]
    try:
        with torch.no_grad():
            model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def resized(module: nn.Module, shape: tuple[int, ...], width: int, out: bool, into: bool) -> tuple[nn.Module, tuple]:
    """A fresh copy of a layer with its outputs (``out``) and/or inputs (``into``) at ``width``, and its input shape.

    Raises ``ValueError`` for a layer this table does not time.
    """
    dims = list(shape)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        depthwise = module.groups == module.in_channels == module.out_channels
        groups = width if depthwise else module.groups
        in_c = width if into or depthwise else module.in_channels
        out_c = width if out or depthwise else module.out_channels
        kind = type(module)
        copy = kind(
            in_c,
            out_c,
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            groups,
            module.bias is not None,
            module.padding_mode,
        )
        dims[1] = in_c
    elif isinstance(module, nn.Linear):
        in_f = width if into else module.in_features
        copy = nn.Linear(in_f, width if out else module.out_features, module.bias is not None)
        dims[-1] = in_f
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        copy = type(module)(width)
        dims[1] = width
    else:
        raise ValueError(f"{type(module).__name__} is not timed")
    return copy.eval(), tuple(dims)


def _members(group: GroupInfo, graph: tp.DependencyGraph, names: dict[nn.Module, str]) -> dict[str, tuple]:
    """Each member layer of a group with whether its outputs and/or inputs are the group's channels."""
    roles: dict[str, tuple[nn.Module, bool, bool]] = {}
    for item in group.handle or []:
        module = item.dep.target.module
        if module not in names:
            continue
        out = graph.is_out_channel_pruning_fn(item.dep.handler)
        _, was_out, was_in = roles.get(names[module], (module, False, False))
        roles[names[module]] = (module, was_out or out, was_in or not out)
    return roles


def _time_widths(
    module: nn.Module,
    shape: tuple[int, ...],
    widths: tuple[int, ...],
    out: bool,
    into: bool,
    device: torch.device,
    rounds: int,
    timer: Timer,
) -> tuple[float, ...] | None:
    """Median time of the layer at each width, the widths taken round-robin; None if it is not timed."""
    try:
        built = [resized(module, shape, width, out, into) for width in widths]
    except ValueError:
        return None
    layers = [layer.to(device) for layer, _ in built]
    inputs = [torch.randn(dims, device=device) for _, dims in built]
    for layer, batch in zip(layers, inputs, strict=True):
        timer(layer, batch)  # warm-up
    samples: list[list[float]] = [[] for _ in widths]
    for round_index in range(rounds):
        order = range(len(widths)) if round_index % 2 == 0 else reversed(range(len(widths)))
        for index in order:
            samples[index].append(timer(layers[index], inputs[index]))
    return tuple(statistics.median(values) for values in samples)


def build_table(
    model: nn.Module,
    graph: tp.DependencyGraph,
    groups: list[GroupInfo],
    batch: torch.Tensor,
    key: Mapping[str, object],
    progress: Progress = SILENT,
    rounds: int = 7,
    timer: Timer = wall_clock,
) -> LatencyTable:
    """Time every prunable channel group's layers at its candidate widths, and the whole model.

    Heads groups and layers of other types are not timed (a plan keeps them
    as the method decides, without snapping). Cancelling raises ``Cancelled``
    between groups; nothing is written.
    """
    model.eval()
    names = {module: name for name, module in model.named_modules()}
    shapes = _input_shapes(model, batch)
    timed = [g for g in groups if g.prunable and g.kind == "channels" and g.handle is not None]
    table: dict[str, GroupLatency] = {}
    for done, group in enumerate(timed):
        progress("latency table: timing layers", done, len(timed) + 1)
        widths = candidate_widths(group)
        if len(widths) < 2:
            continue
        layers = {}
        for name, (module, out, into) in _members(group, graph, names).items():
            if module in shapes:
                times = _time_widths(module, shapes[module], widths, out, into, batch.device, rounds, timer)
                if times is not None:
                    layers[name] = times
        if layers:
            table[group.id] = GroupLatency(group.channels, widths, layers)
    progress("latency table: timing the model", len(timed), len(timed) + 1)
    with torch.no_grad():
        timer(model, batch)
        base = statistics.median(timer(model, batch) for _ in range(max(rounds, 9)))
    unfitted = LatencyTable(dict(key), base, table)
    fitted = fit_whole_model(model, unfitted, batch, max(rounds, FIT_ROUNDS), timer) if table else None
    progress("latency table: timing the model", len(timed) + 1, len(timed) + 1)
    return replace(unfitted, fitted=fitted)


def fit_whole_model(
    model: nn.Module, table: LatencyTable, batch: torch.Tensor, rounds: int, timer: Timer
) -> float | None:
    """The model's measured change over its timed layers' predicted change, every timed group at ``fit_widths``.

    The cut model (its first channels kept: which ones does not change the
    time) is timed interleaved with the whole one, medians compared. None when
    the cut changes nothing measurable (the model's time is then not explained
    by these layers; the table falls back to the untimed rest shrinking with them).
    """
    widths = table.fit_widths()
    layers_change = table.layers_change(widths)
    if layers_change >= 0:
        return None
    groups = {gid: GroupPlan(range(width), table.groups[gid].total) for gid, width in widths.items()}
    cut, _ = apply_plan(model, PruningPlan("latency-table fit", Target("ratio", FIT_RATIO), groups), batch[:1])
    pair = time_interleaved(model, cut, batch, rounds, warmup=1, timer=timer)
    change = statistics.median(pair.candidate) - statistics.median(pair.reference)
    return change / layers_change if change < 0 else None


def load_or_build(
    model: nn.Module,
    graph: tp.DependencyGraph,
    groups: list[GroupInfo],
    batch: torch.Tensor,
    key: Mapping[str, object],
    progress: Progress = SILENT,
    folder: Path | None = None,
    timer: Timer = wall_clock,
) -> tuple[LatencyTable, str]:
    """The cached table for ``key``, or a freshly built one saved to the cache; a note says which."""
    path = cache_path(key, folder)
    table, problem = load_cached(path, key)
    if table is not None:
        return table, f"latency table: read from {path}"
    started = time.monotonic()
    table = build_table(model, graph, groups, batch, key, progress, timer=timer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, table.to_json(), "latency table cache")
    built = f"latency table: built in {time.monotonic() - started:.1f} s, cached in {path}"
    return table, f"{problem}. {built}" if problem else built
