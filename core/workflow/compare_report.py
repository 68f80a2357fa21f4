"""A comparison's figures and report: Pareto plots (PNG and SVG) and one self-contained HTML page.

The plots show each cell's final accuracy (fine-tuned, else recalibrated,
else right after pruning) against its MACs and against its measured batch-1
latency, one marker series per method, the unpruned model as a star and the
Pareto front over all methods as a dashed line. The HTML page embeds the SVGs
and the table inline, so it opens anywhere with no network.
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from secateur.core.common.files import atomic_target
from secateur.core.workflow.compare import final_accuracy, missed_target, target_label

PLOTS = {"macs": "pareto_macs", "latency": "pareto_latency"}
REPORT_FILE = "report.html"
_MARKERS = "osD^v<>phX*"


def _macs(entry: dict[str, Any]) -> float:
    return entry["macs"] / 1e6


def _latency(entry: dict[str, Any]) -> float:
    return float(min(entry["latency_ms"].items(), key=lambda item: int(item[0]))[1]["median"])


def _latency_batch(document: dict[str, Any]) -> str:
    return str(min(int(batch) for batch in document["baseline"]["latency_ms"]))


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by increasing cost."""
    front: list[tuple[float, float]] = []
    for cost, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or accuracy > front[-1][1]:
            front.append((cost, accuracy))
    return front


def series_label(document: dict[str, Any], cell: dict[str, Any]) -> str:
    """The cell's method, with the parameters that tell its runs apart where a method ran with several sets."""
    sets = [c.get("method_params", {}) for c in document["cells"] if c["method"] == cell["method"]]
    differing = sorted({key for one in sets for key in one if any(one.get(key) != other.get(key) for other in sets)})
    if not differing:
        return cell["method"]
    own = cell.get("method_params", {})
    return f"{cell['method']} ({', '.join(f'{key}={own.get(key)}' for key in differing)})"


def _stage(document: dict[str, Any]) -> str:
    settings = document["settings"]
    epochs = settings["finetune"]["epochs"]
    if epochs:
        return f"after {epochs} epoch{'s' if epochs > 1 else ''} of fine-tuning"
    return "after BatchNorm recalibration" if settings["recalibrate_bn"] else "right after pruning"


def pareto_figure(document: dict[str, Any], axis: str) -> Figure:
    """Accuracy against MACs (``axis="macs"``) or batch-1 latency (``"latency"``)."""
    cost: Callable[[dict[str, Any]], float] = _macs if axis == "macs" else _latency
    label = "MACs per image (M)" if axis == "macs" else f"latency, batch {_latency_batch(document)} (ms, median)"
    figure = Figure(figsize=(7.0, 4.6), layout="constrained")
    ax = figure.add_subplot()
    labels = {id(cell): series_label(document, cell) for cell in document["cells"]}
    points = []
    for index, series in enumerate(dict.fromkeys(labels.values())):
        cells = sorted((c for c in document["cells"] if labels[id(c)] == series), key=cost)
        xs, ys = [cost(c) for c in cells], [final_accuracy(c) for c in cells]
        points += list(zip(xs, ys, strict=True))
        ax.plot(xs, ys, marker=_MARKERS[index % len(_MARKERS)], linewidth=1, label=series)
    baseline = document["baseline"]
    ax.plot([cost(baseline)], [baseline["accuracy"]], marker="*", markersize=14, color="black", linestyle="")
    ax.annotate(
        "unpruned", (cost(baseline), baseline["accuracy"]), textcoords="offset points", xytext=(-8, 6), ha="right"
    )
    front = pareto_front([*points, (cost(baseline), baseline["accuracy"])])
    if front:
        ax.step(
            *zip(*front, strict=True), where="post", color="grey", linestyle="--", linewidth=1, label="Pareto front"
        )
    ax.set_xlabel(label)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{document['model']} on {document['data']}: accuracy {_stage(document)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="best")
    return figure


def _save(figure: Figure, path: Path, fmt: str) -> None:
    with atomic_target(path) as temporary:
        figure.savefig(temporary, format=fmt, dpi=120 if fmt == "png" else None)


def _svg_text(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML declaration and DOCTYPE to inline it


def table_rows(document: dict[str, Any]) -> list[list[str]]:
    """The report's table as text cells: one row per cell, in the document's order."""
    batches = sorted(document["baseline"]["latency_ms"], key=int)
    rows = []
    for cell in document["cells"]:
        accuracy = cell["accuracy"]
        row = [
            series_label(document, cell),
            target_label(cell["target"]),
            f"{cell['reduction']['macs'] * 100:.1f}%" + (" (target missed)" if missed_target(cell) else ""),
            f"{cell['params'] / 1e6:.3f} M",
            f"{cell['macs'] / 1e6:.1f} M",
            *(
                "" if accuracy.get(stage) is None else f"{accuracy[stage]:.2f}"
                for stage in ("pruned", "recalibrated", "finetuned")
            ),
        ]
        for batch in batches:
            latency = cell["latency_ms"][batch]
            row.append(f"{latency['median']:.2f} [{latency['p10']:.2f}–{latency['p90']:.2f}]")
        row.append(f"{cell['timing']['score']:.1f} / {cell['timing'].get('finetune', 0.0):.1f}")
        rows.append(row)
    return rows


def table_header(document: dict[str, Any]) -> list[str]:
    """The report table's column names."""
    batches = sorted(document["baseline"]["latency_ms"], key=int)
    return [
        "method", "target", "MACs removed", "params", "MACs", "acc pruned", "acc recal.", "acc fine-tuned",
        *(f"latency b{batch} ms median [p10–p90]" for batch in batches), "score / fine-tune s",
    ]  # fmt: skip


def _html(document: dict[str, Any], svgs: dict[str, str]) -> str:
    baseline = document["baseline"]
    settings = document["settings"]
    header = "".join(f"<th>{html.escape(h)}</th>" for h in table_header(document))
    body = "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(value)}</td>" for value in row) + "</tr>" for row in table_rows(document)
    )
    machine = ", ".join(f"{key} {value}" for key, value in document["machine"].items() if value is not None)
    finetune = settings["finetune"]
    versions = {cell["method"]: f"{cell['package']} {cell['version']}" for cell in document["cells"]}
    methods = ", ".join(f"{method} ({provider})" for method, provider in versions.items())
    facts = [
        ("model", document["model"]),
        ("data", document["data"]),
        ("unpruned", f"{baseline['accuracy']:.2f}% test accuracy, {baseline['params'] / 1e6:.3f} M params, "
                     f"{baseline['macs'] / 1e6:.1f} M MACs"),
        ("settings", f"seed {document['seed']}, device {settings['device']}, batch {settings['batch_size']}, "
                     f"BatchNorm recalibration {'on' if settings['recalibrate_bn'] else 'off'}, "
                     f"fine-tuning {finetune['epochs']} epoch(s) at lr {finetune['lr']}, "
                     f"latency {settings['latency_runs']} runs per batch size"),
        ("methods", methods),
        ("machine", machine),
    ]  # fmt: skip
    listing = "\n".join(f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in facts)
    figures = "\n".join(f"<figure>{svg}</figure>" for svg in svgs.values())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Secateur comparison: {html.escape(document["model"])}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }}
th {{ background: #f0f0f0; }} td:first-child, td:nth-child(2) {{ text-align: left; }}
figure {{ display: inline-block; margin: 0.5em; }} svg {{ max-width: 100%; height: auto; }}
</style></head><body>
<h1>Secateur comparison</h1>
<ul>
{listing}
</ul>
{figures}
<h2>Cells</h2>
<p>Accuracy in percent on the test split. Score and fine-tune times in seconds; a method is scored once
for all its targets.</p>
<table><thead><tr>{header}</tr></thead><tbody>
{body}
</tbody></table>
</body></html>
"""


def write_report(document: dict[str, Any], out: Path) -> list[Path]:
    """Write the two Pareto plots (PNG and SVG) and report.html into ``out``; returns the paths."""
    written = []
    svgs = {}
    for axis, stem in PLOTS.items():
        figure = pareto_figure(document, axis)
        for fmt in ("png", "svg"):
            path = out / f"{stem}.{fmt}"
            _save(figure, path, fmt)
            written.append(path)
        svgs[axis] = _svg_text(figure)
    report = out / REPORT_FILE
    with atomic_target(report) as temporary:
        Path(temporary).write_text(_html(document, svgs), encoding="utf-8")
    written.append(report)
    return written
