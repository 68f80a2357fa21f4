"""``secateur compare``: the contract's files, resuming, keeping finished cells, and refusals before work."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import torch

from conftest import ARCHS, run_cli
from secateur.core.common.errors import Cancelled, InputError
from secateur.core.common.progress import Progress
from secateur.core.data.demo import demo_tensors
from secateur.core.data.loading import load_data
from secateur.core.model.specs import parse_model_spec
from secateur.core.pruning.edits import replay_edits
from secateur.core.pruning.loading import load_checkpoint, load_model
from secateur.core.pruning.plan import Target
from secateur.core.pruning.registry import load_registry
from secateur.core.workflow.compare import (
    COMPARE_FILE,
    CompareRequest,
    Comparison,
    missed_target,
    parse_targets,
    split_method_params,
    target_met,
)
from secateur.core.workflow.compare_report import pareto_figure, pareto_front, table_rows, write_report
from secateur.core.workflow.session import Session

CELL_KEYS = {"method", "package", "version", "target", "plan", "params", "macs", "accuracy", "latency_ms", "seconds"}
PLOTS = ("pareto_macs.png", "pareto_macs.svg", "pareto_latency.png", "pareto_latency.svg")
FILES = ("compare.json", *PLOTS, "report.html")
FAST = ("--latency-runs", "2", "--latency-batches", "1,4", "--quiet")


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("compare") / "run"
    args = ("compare", "demo", "--data", "demo", "--methods", "l1,taylor", "--targets", "macs:0.5", "--out", str(out))
    first = run_cli(*args, *FAST, "--json", timeout=900)  # a loaded 2-core machine took 250 s
    assert first.returncode == 0, first.stderr
    return out, json.loads(first.stdout), json.loads((out / COMPARE_FILE).read_text())


def test_compare_writes_the_contract_json_plots_and_report(compared: tuple[Path, dict, dict]) -> None:
    out, printed, document = compared
    assert printed == document
    umask = os.umask(0o022)
    os.umask(umask)
    for name in FILES:
        assert (out / name).is_file(), name
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name  # not mkstemp's 0600
    assert {"model", "data", "seed", "machine", "cells"} <= set(document)
    assert document["model"] == "demo" and document["data"] == "demo" and document["seed"] == 0
    assert [(c["method"], c["target"]) for c in document["cells"]] == [
        ("l1", {"kind": "macs", "value": 0.5}),
        ("taylor", {"kind": "macs", "value": 0.5}),
    ]
    baseline = document["baseline"]
    for cell in document["cells"]:
        assert set(cell) >= CELL_KEYS
        assert cell["package"] == "secateur" and cell["version"]
        assert set(cell["accuracy"]) == {"pruned", "recalibrated", "finetuned"}
        assert cell["accuracy"]["recalibrated"] is None and cell["accuracy"]["finetuned"] is None
        assert set(cell["latency_ms"]) == {"1", "4"}
        for latency in cell["latency_ms"].values():
            assert 0 < latency["p10"] <= latency["median"] <= latency["p90"]
        # the measured size is what the plan predicted, and the target is met within the planner's tolerance
        assert cell["params"] == cell["plan"]["predicted_params"] < baseline["params"]
        assert cell["macs"] == cell["plan"]["predicted_macs"]
        assert abs(1 - cell["macs"] / baseline["macs"] - 0.5) <= 0.02 and cell["target_met"] is True
    assert (out / "pareto_macs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "report.html").read_text()
    assert report.count("<svg") == 2 and "<?xml" not in report
    # self-contained: nothing fetched (the only URLs are XML namespace names)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", report) and "<link" not in report
    assert "<td>l1</td>" in report and "<td>taylor</td>" in report


def test_a_second_run_recomputes_nothing(compared: tuple[Path, dict, dict]) -> None:
    out, _, document = compared
    again = run_cli(
        "compare", "demo", "--data", "demo", "--methods", "l1,taylor", "--targets", "macs:0.5", "--out", str(out),
        "--latency-runs", "2", "--latency-batches", "1,4",
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "cell 1/2 l1 macs:0.5 reused" in again.stderr and "cell 2/2 taylor macs:0.5 reused" in again.stderr
    assert "score" not in again.stderr and "evaluate" not in again.stderr  # no scoring, no evaluation
    assert json.loads((out / COMPARE_FILE).read_text()) == document
    assert "2 cells (2 reused" in again.stdout


@pytest.mark.parametrize(
    ("methods", "targets", "message"),
    [
        ("l1,nope", "macs:0.5", "--method 'nope': no such method"),
        ("l1", "macs:1.5", "--targets macs:1.5: a target must be strictly between 0 and 1"),
        ("l1", "macs:0", "--targets macs:0: a target must be strictly between 0 and 1"),
        ("l1,cka-layer", "macs:0.3,0.7", "--targets macs:0.7 for method cka-layer"),
    ],
)
def test_bad_input_is_refused_before_any_work(tmp_path: Path, methods: str, targets: str, message: str) -> None:
    out = tmp_path / "never"
    result = run_cli(
        "compare", "demo", "--data", "demo", "--methods", methods, "--targets", targets, "--out", str(out)
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "score" not in result.stderr and "evaluate" not in result.stderr
    assert not out.exists()


def test_targets_grammar() -> None:
    assert parse_targets("macs:0.3,0.5,ratio:0.2") == [Target("macs", 0.3), Target("macs", 0.5), Target("ratio", 0.2)]
    for text, message in [
        ("0.5", "is not a target kind"),
        ("flops:0.5", "'flops' is not a target kind"),
        ("macs:half", "'half' is not a number"),
        ("macs:0.5,0.5", "is given twice"),
        ("ratio:1", "strictly between 0 and 1"),
    ]:
        with pytest.raises(InputError, match=message):
            parse_targets(text)


def test_a_cell_off_its_target_either_way_is_marked_in_the_report(compared: tuple[Path, dict, dict]) -> None:
    """PAAM's learned threshold removed 37% of the MACs for every target of a compare run: at 0.3 the report
    called that met; a cell stands at its target only within the planner's tolerance, on both sides."""
    assert target_met(Target("macs", 0.3), 0.315) and target_met(Target("macs", 0.3), 0.285)
    assert target_met(Target("macs", 0.3), 0.372) is False and target_met(Target("macs", 0.5), 0.372) is False
    assert target_met(Target("ratio", 0.3), 0.9) is None  # a channel ratio says nothing about MACs
    _, _, document = compared
    document = copy.deepcopy(document)
    cell = document["cells"][0]
    assert cell["target_met"] is True and missed_target(cell) == "" and "missed" not in table_rows(document)[0][2]
    cell["target_met"], cell["reduction"]["macs"] = False, 0.3717
    assert missed_target(cell) == "target missed: the method removed 37.2% of the MACs"
    assert table_rows(document)[0][2] == "37.2% (target missed)"


def test_a_method_run_with_two_parameter_sets_is_two_series(compared: tuple[Path, dict, dict]) -> None:
    """The demo report ran PAAM at its default threshold and at threshold=0: one line through both zigzagged."""
    _, _, document = compared
    document = copy.deepcopy(document)
    other = copy.deepcopy(document["cells"][0])
    other["method_params"] = {**other["method_params"], "x": 2}
    document["cells"][0]["method_params"] = {**document["cells"][0]["method_params"], "x": 1}
    document["cells"].append(other)
    method = other["method"]
    assert [row[0] for row in table_rows(document)][-1] == f"{method} (x=2)"
    assert table_rows(document)[0][0] == f"{method} (x=1)" and table_rows(document)[1][0] == "taylor"
    legend = [text.get_text() for text in pareto_figure(document, "macs").axes[0].get_legend().get_texts()]
    assert legend == [f"{method} (x=1)", "taylor", f"{method} (x=2)", "Pareto front"]


def test_method_params_are_split_by_method() -> None:
    split = split_method_params({"hap.n_v": "20", "l1.x": "1"}, ["l1", "hap"])
    assert split == {"l1": {"x": "1"}, "hap": {"n_v": "20"}}
    with pytest.raises(InputError, match="'taylor' is not among --methods"):
        split_method_params({"taylor.batches": "2"}, ["l1"])
    with pytest.raises(InputError, match=r"METHOD\.NAME=VALUE"):
        split_method_params({"batches": "2"}, ["l1"])


def test_pareto_front_against_brute_force() -> None:
    generator = torch.Generator().manual_seed(0)
    points = [(float(c), float(a)) for c, a in torch.randint(0, 12, (40, 2), generator=generator).tolist()]
    front = pareto_front(points)

    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] <= p[0] and q[1] >= p[1] and q != p for q in points)

    expected = sorted({p for p in points if not dominated(p)})
    assert front == expected


def _request(out: Path, methods: str, recalibrate_bn: bool = False) -> CompareRequest:
    loaded = load_model(parse_model_spec(f"{ARCHS / 'user_models.py'}:concat_net"))
    registry = load_registry()
    return CompareRequest(
        loaded=loaded,
        data=load_data("demo"),
        methods=[registry.method(m) for m in methods.split(",")],
        targets=parse_targets("ratio:0.25,0.5"),
        out=out,
        recalibrate_bn=recalibrate_bn,
        latency_batches=(1,),
        latency_runs=2,
    )


def test_cancelling_keeps_finished_cells_and_resume_computes_only_the_rest(tmp_path: Path) -> None:
    out = tmp_path / "run"
    comparison = Comparison(_request(out, "l1,random"))
    stop = {"now": False}
    finished = []
    with pytest.raises(Cancelled):
        for cell in comparison.cells(Progress(cancelled=lambda: stop["now"])):
            finished.append(cell)
            stop["now"] = len(finished) == 3
    saved = json.loads((out / COMPARE_FILE).read_text())
    assert [c.record for c in finished] == saved["cells"] and len(saved["cells"]) == 3
    # the unpruned accuracy against a plain loop over the test tensors
    model = comparison.request.loaded.model.eval()
    images, labels = demo_tensors("test")
    with torch.no_grad():
        predicted = torch.cat([model(images[i : i + 500]).argmax(1) for i in range(0, len(images), 500)])
    correct = int((predicted == labels).sum())
    assert saved["baseline"]["accuracy"] == pytest.approx(100 * correct / len(labels), abs=1e-3)
    resumed = list(Comparison(_request(out, "l1,random")).cells())
    assert [c.reused for c in resumed] == [True, True, True, False]
    assert [c.record for c in resumed[:3]] == saved["cells"]
    assert [c.index for c in resumed] == [1, 2, 3, 4] and all(c.total == 4 for c in resumed)
    # the time left counts only the cells still to compute: one after the third, none after the resumed fourth
    assert all(c.seconds_left > 0 for c in finished) and resumed[-1].seconds_left == 0


def test_other_settings_recompute_every_cell(tmp_path: Path) -> None:
    out = tmp_path / "run"
    list(Comparison(_request(out, "l1")).cells())
    changed = Comparison(_request(out, "l1", recalibrate_bn=True))
    assert changed.dropped == 2
    cells = list(changed.cells())
    assert not any(c.reused for c in cells)
    assert all(c.record["accuracy"]["recalibrated"] is not None for c in cells)
    written = write_report(changed.document, out)
    assert {p.name for p in written} == set(FILES) - {"compare.json"}


def test_each_cell_carries_its_model_and_the_edits_that_rebuild_it(tmp_path: Path) -> None:
    """What the window's Compare tab relies on to load a cell: the final model, and edits that replay."""
    request = _request(tmp_path / "run", "l1")
    base = request.loaded.model
    cells = list(Comparison(request).cells())
    for cell in cells:
        record, model = cell.record, cell.model
        assert model is not None and sum(p.numel() for p in model.parameters()) == record["params"]
        edits = json.loads(json.dumps(record["edits"]))  # as compare.json has them
        rebuilt = copy.deepcopy(base)
        replay_edits(rebuilt, edits, torch.zeros((1, *request.loaded.input_shape)))
        expected = model.state_dict()
        assert rebuilt.state_dict().keys() == expected.keys()
        assert all(torch.equal(value, expected[name]) for name, value in rebuilt.state_dict().items())
    assert all(cell.model is None for cell in Comparison(request).cells())  # reused cells: only their records

    # adopted into a session as an apply would be: undoable, and saved with edits that load anywhere
    session = Session(request.loaded, request.data)
    record, model = cells[1].record, cells[1].model
    session.adopt(copy.deepcopy(model), record["edits"], "l1", base)
    assert session.model is not base and session.history[-1].model is base
    assert session.metrics_after is not None and session.metrics_after.params == record["params"]
    saved = session.save(tmp_path / "cell.safetensors")
    assert sum(p.numel() for p in load_checkpoint(saved).parameters()) == record["params"]
    with pytest.raises(InputError, match="no longer in this session"):
        session.adopt(copy.deepcopy(model), record["edits"], "l1", copy.deepcopy(base))
    assert session.undo() and session.model is base
