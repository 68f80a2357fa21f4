"""Human-readable text for the CLI's results (the JSON forms are the contract)."""

from __future__ import annotations

from secateur.core.graph.layer_tree import LayerTree


def human_count(value: float) -> str:
    """1234567 → '1.23 M': params and MACs as a person reads them."""
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.2f} {suffix}"
    return f"{value:.0f}"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [
        max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        padded = (
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(row) for row in rows)])


def format_layer_tree(tree: LayerTree) -> str:
    """The layer tree as an indented table, then groups and residual blocks."""
    rows = []
    for layer in tree.layers:
        depth = layer.name.count(".")
        channels = "" if layer.out_channels is None else f"{layer.in_channels}→{layer.out_channels}"
        shape = "×".join(str(v) for v in layer.output_shape[1:]) if layer.output_shape else "-"
        rows.append(
            [
                "  " * depth + layer.name.rsplit(".", 1)[-1],
                layer.type,
                shape,
                human_count(layer.params),
                human_count(layer.macs),
                channels,
                layer.group or "",
            ]
        )
    lines = [
        f"model {tree.model}: {human_count(tree.params)} params ({tree.params}), "
        f"{human_count(tree.macs)} MACs ({tree.macs}) per {'×'.join(map(str, tree.input_shape))} input",
        "",
        _table(["layer", "type", "output", "params", "MACs", "channels", "group"], rows, {3, 4}),
        "",
    ]
    prunable = [group for group in tree.groups if group.prunable]
    lines.append(f"dependency groups: {len(prunable)} prunable, {len(tree.groups) - len(prunable)} locked")
    group_rows = [
        [
            group.id,
            str(group.channels),
            str(len(group.layers)),
            "yes" if group.prunable else f"locked: {group.locked_because}",
        ]
        for group in tree.groups
    ]
    lines.append(_table(["group", "channels", "layers", "prunable"], group_rows, {1, 2}))
    lines.append("")
    removable = [block for block in tree.blocks if block.removable]
    lines.append(f"residual blocks: {len(tree.blocks)}, removable: {len(removable)}")
    for block in tree.blocks:
        lines.append(f"  {block.name}: {'removable' if block.removable else 'kept'} ({block.reason})")
    return "\n".join(lines)


def format_eval(result: dict) -> str:
    """An evaluation result as aligned lines."""
    latency = result["latency_ms"]
    return "\n".join(
        [
            f"model     {result['model']}",
            f"data      {result['data']} ({result['split']} split, {result['samples']} samples)",
            f"accuracy  {result['accuracy']:.2f} %",
            f"loss      {result['loss']:.4f}",
            f"params    {human_count(result['params'])} ({result['params']})",
            f"MACs      {human_count(result['macs'])} ({result['macs']})",
            f"latency   median {latency['median']:.2f} ms, p90 {latency['p90']:.2f} ms "
            f"(batch {latency['batch_size']}, {latency['device']}, {latency['runs']} runs)",
        ]
    )


def format_methods(result: dict) -> str:
    """Installed methods with their parameters, then plugins that failed to load."""
    lines = []
    if not result["methods"]:
        lines.append("no pruning methods are installed")
    for method in result["methods"]:
        lines.append(f"{method['id']}: {method['title']} [{method['granularity']}]")
        lines.append(f"    {method['description']}")
        if method.get("package"):
            lines.append(f"    from: {method['package']} {method['version']}")
        if method["needs"]:
            lines.append(f"    needs: {', '.join(method['needs'])}")
        for param in method["params"]:
            bounds = ""
            if param["choices"]:
                bounds = f" one of {', '.join(param['choices'])}"
            elif param["min"] is not None or param["max"] is not None:
                bounds = f" in [{param['min']}, {param['max']}]"
            lines.append(
                f"    --param {param['name']}=<{param['type']}> (default {param['default']}){bounds}: {param['help']}"
            )
    for failure in result["failed"]:
        lines.append(f"plugin {failure['plugin']} failed to load:")
        lines.extend(f"    {line}" for line in failure["error"].rstrip().splitlines())
    return "\n".join(lines)


def _plan_line(kept: int, total: int, groups: int, blocks: list[str]) -> str:
    """What the plan changed: channels kept, blocks removed, or both."""
    parts = [f"{kept}/{total} channels kept in {groups} groups"] if groups else []
    if blocks:
        parts.append(f"blocks removed: {', '.join(blocks)}")
    return "plan: " + ("; ".join(parts) or "nothing removed")


def format_prune(report: dict) -> str:
    """A prune report: before/after table, the plan's size, the checkpoint."""
    columns = [("before", report["before"]), ("after", report["after"])]
    if report.get("after_finetune"):
        columns.append(("fine-tuned", report["after_finetune"]))
    rows = [
        ["accuracy %"] + [f"{m['accuracy']:.2f}" for _, m in columns],
        ["loss"] + [f"{m['loss']:.4f}" for _, m in columns],
        ["params"] + [human_count(m["params"]) for _, m in columns],
        ["MACs"] + [human_count(m["macs"]) for _, m in columns],
        ["latency ms"] + [f"{m['latency_ms']['median']:.2f}" for _, m in columns],
    ]
    target = report["target"]
    groups = report["plan"]["groups"]
    kept = sum(g["kept"] for g in groups.values())
    total = sum(g["total"] for g in groups.values())
    lines = [
        f"method {report['method']} ({report.get('package', '')} {report.get('version', '')}) on {report['model']}, "
        f"target {target['kind']} {target['value']}",
        _plan_line(kept, total, len(groups), report["plan"]["blocks_removed"]),
        "",
        _table(["", *[name for name, _ in columns]], rows, set(range(1, len(columns) + 1))),
        "",
        f"checkpoint {report['checkpoint']} ({report['seconds']:.1f} s)",
    ]
    lines.extend(f"note: {note}" for note in report["plan"].get("notes", []))
    return "\n".join(lines)


def format_finetune(report: dict) -> str:
    """A fine-tuning report: one row per epoch, the best one marked, and the files written."""
    rows = [
        [
            f"{record['epoch']}{' *' if record['epoch'] == report['best_epoch'] else ''}",
            f"{record['train_loss']:.4f}",
            f"{record['val_accuracy']:.2f}",
            f"{record['val_loss']:.4f}",
        ]
        for record in report["history"]
    ]
    resumed = report.get("resumed_from_epoch")
    best = f"best epoch {report['best_epoch']}, marked *" if report["best_epoch"] else "no epoch beat the start: kept"
    lines = [
        f"fine-tuned {report['model']} on {report['data']}: {report['processes']} process(es) × batch "
        f"{report['batch_size']} = global batch {report['global_batch']}, {report['steps_per_epoch']} steps per epoch"
        + (f", resumed after epoch {resumed}" if resumed is not None else ""),
        "",
        _table(["epoch", "train loss", "val accuracy %", "val loss"], rows, {1, 2, 3}),
        "",
        f"checkpoint {report['out']} ({best}), resume state {report['state']} ({report['seconds']:.1f} s)",
    ]
    return "\n".join(lines)
