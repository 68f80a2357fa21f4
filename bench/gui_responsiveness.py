"""How responsive the window stays: event-loop stalls per action, Cancel → cancelled per method, Apply → new tree.

A 5 ms QTimer heartbeat runs on the Qt thread; the longest gap between two
beats is the longest time the window could not respond (target: one frame,
16 ms). It keeps beating for 150 ms after an action's end is reported, so the
paints of the action's last redraw count. Then the longest garbage collection
in the action (every thread waits on it), and the machine's own floor: the
longest gap of a 5 ms sleep loop in a separate process over the same time (on
this 2-core VM, idle: up to 12–15 ms; a stall near it is the machine's, not the window's).

The window opens a model, scores it with l1, previews a plan, applies it,
sweeps and fine-tunes, all through its jobs. Then every built-in method is
started and cancelled once it has run for a second (or for each of
`--cancel-after`'s delays, to reach its later phases): the time from the click
to the window saying "cancelled" (target ≤ 1 s). "Apply → new tree" is the
time from Apply to the tree showing the pruned structure (target ≤ 1 s on the
demo), before accuracy and latency are measured.

    QT_QPA_PLATFORM=offscreen .venv/bin/python bench/gui_responsiveness.py [--model demo|torchvision:resnet50]
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import torch
from PySide6.QtCore import QEventLoop, QTimer
from PySide6.QtWidgets import QApplication

from secateur.app.window import MainWindow

CANCEL_AFTER = (1.0,)  # seconds a method runs before Cancel is clicked (--cancel-after)
SETTLE = 0.3  # seconds between two actions: no one clicks faster, and the last one's paints are done
AFTERMATH = 0.15  # seconds the heartbeat keeps running after an action's end: its last redraw's paints
QUICK = {"cka-layer": {"finetune_epochs": "0"}, "paam": {"epochs": "1"}, "hap": {"probes": "4"}}


class Heartbeat:
    """Records the gaps between 5 ms timer ticks on the Qt thread."""

    def __init__(self) -> None:
        self.gaps: list[float] = []
        self.ends: list[float] = []  # each gap's end on the monotonic clock (the machine probe's clock)
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(5)
        self.timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000.0)
        self.ends.append(time.monotonic())
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self.ends.clear()
        self._last = time.perf_counter()
        self.timer.start()

    def late(self, floor: MachineFloor, limit_ms: float = 16.0) -> tuple[int, int]:
        """Gaps over ``limit_ms``: all of them, and those the machine probe saw no gap over 10 ms during."""
        late = [(end, gap) for end, gap in zip(self.ends, self.gaps, strict=True) if gap > limit_ms]
        return len(late), sum(not floor.stalled(end - gap / 1000.0, end) for end, gap in late)


MACHINE_PROBE = """
import time
last = time.monotonic()
while True:  # until the bench kills it
    time.sleep(0.005)
    now = time.monotonic()
    if now - last > 0.008:
        print(f"{now} {(now - last) * 1000.0}", flush=True)
    last = now
"""


class MachineFloor:
    """A 5 ms sleep loop in a process of its own: the gaps the machine itself causes (CPU contention, the VM).

    No GIL, no Qt: a gap it sees is a gap any thread may see, so the window's
    longest stall is read against it. It reports gaps over 8 ms with their
    end time on the monotonic clock, which ``time.monotonic`` shares across processes.
    """

    def __init__(self) -> None:
        self.gaps: list[tuple[float, float]] = []
        self._process = subprocess.Popen(
            [sys.executable, "-c", MACHINE_PROBE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._process.stdout:
            end, gap = line.split()
            self.gaps.append((float(end), float(gap)))

    def stalled(self, start: float, end: float, at_least_ms: float = 10.0, overlap_s: float = 0.004) -> bool:
        """Whether a gap over ``at_least_ms`` overlapped ``start``–``end`` by ``overlap_s`` or more."""
        return any(
            min(end, at) - max(start, at - gap / 1000.0) >= overlap_s
            for at, gap in self.gaps
            if gap > at_least_ms and at >= start
        )

    def longest(self, start: float, end: float) -> float:
        """The longest gap that ended between ``start`` and ``end`` (monotonic seconds); 5 when none over 8 ms."""
        return max((gap for at, gap in self.gaps if start <= at <= end), default=5.0)

    def stop(self) -> None:
        self._process.kill()
        self._process.wait()
        self._reader.join()  # it has read to the end of the killed probe's output
        self._process.stdin.close()
        self._process.stdout.close()


class CollectorPauses:
    """Records how long each of Python's garbage collections held the GIL (no thread runs meanwhile)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, ms)
        self._started = 0.0
        gc.callbacks.append(self._on_collect)

    def _on_collect(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], (time.perf_counter() - self._started) * 1000.0))

    def longest(self) -> str:
        """The longest pause since the last call and its generation ("-" when none ran)."""
        pauses, self.pauses = self.pauses, []
        if not pauses:
            return "-"
        generation, ms = max(pauses, key=lambda pause: pause[1])
        return f"{ms:.1f} (gen {generation})"


class StallSampler:
    """While the heartbeat is late by more than ``late_ms``, samples what the Qt thread is doing.

    The samples say why the window stalls: Python code on the Qt thread shows
    as its own frames; a Qt thread waiting for the GIL held by the worker
    shows as the frame it was in when it had to wait.
    """

    def __init__(self, heartbeat: Heartbeat, late_ms: float = 16.0) -> None:
        self.heartbeat, self.late_ms = heartbeat, late_ms
        self.samples: collections.Counter[str] = collections.Counter()
        self._qt_thread = threading.get_ident()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        self._own = threading.get_ident()
        while not self._stop.wait(0.01):
            if not self.heartbeat.timer.isActive():
                continue
            if (time.perf_counter() - self.heartbeat._last) * 1000.0 < self.late_ms:
                continue
            frames = sys._current_frames()
            frame = frames.get(self._qt_thread)
            if frame is None:
                continue
            where = _where(frame)
            if "_wait" in where.split(" < ")[0]:  # the Qt thread is in C++: say what the other threads were doing
                others = [_where(f) for ident, f in frames.items() if ident not in (self._qt_thread, self._own)]
                where = "Qt in C++; worker: " + (" | ".join(others) or "none")
            self.samples[where] += 1

    def report(self, top: int = 8) -> None:
        print(f"\nwhere the Qt thread was while late by > {self.late_ms:.0f} ms (10 ms samples):")
        for where, count in self.samples.most_common(top):
            print(f"{count:>6}  {where}")
        self._stop.set()


def _where(frame, depth: int = 4) -> str:
    """A thread's innermost ``depth`` frames, innermost first."""
    stack = traceback.extract_stack(frame)[-depth:]
    return " < ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in reversed(stack))


def _short(filename: str) -> str:
    """The last two parts of a source path."""
    return "/".join(filename.split("/")[-2:])


def _wait(signal, start, timeout_s: float = 1800) -> float:
    """Call ``start`` and spin the event loop until ``signal`` fires; returns the seconds it took."""
    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    started = time.perf_counter()
    start()
    loop.exec()
    signal.disconnect(loop.quit)
    return time.perf_counter() - started


def _spin(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def stalls(window: MainWindow, model: str, data: str | None, finetune_samples: int) -> None:
    heartbeat = Heartbeat()
    sampler = StallSampler(heartbeat)
    collector = CollectorPauses()
    floor = MachineFloor()
    window.panel.picker.setCurrentText("l1")
    window.panel.target_value.setValue(0.5)
    tree_at: list[float] = []

    def tree_shown(names: set[str]) -> None:
        if "model" in names and window.session is not None and window.session.history:
            tree_at.append(time.perf_counter())

    window.bridge.changed.connect(tree_shown)

    def preview() -> None:
        window.panel.target_value.setValue(0.4)

    def finetune() -> None:
        window.session.data.train = window.session.data.train.subset(list(range(finetune_samples)))
        window.finetune(1)

    steps = [
        ("open", window.job_done, lambda: window.open(model, data)),
        ("score l1", window.job_done, window.run_method),
        ("plan preview", window.preview_done, preview),
        ("apply", window.job_done, window.apply_plan),
        ("undo", window.job_done, window.undo),
        ("score l1", window.job_done, window.run_method),
    ]
    if data is not None:
        steps += [("sweep", window.job_done, window.sweep), ("fine-tune", window.job_done, finetune)]
    header = f"{'action':<14} {'seconds':>8} {'beats':>6} {'median gap ms':>14} {'p99 ms':>7}"
    header += f" {'> 16 ms':>8} {'not machine':>11}"
    print(f"{header} {'longest stall ms':>17} {'longest GC ms':>15} {'machine ms':>11}")
    for name, signal, start in steps:
        _spin(SETTLE)  # the last action's deferred paints land before this one starts, as between a person's clicks
        heartbeat.start()
        collector.longest()  # only this action's collections count
        started, began = time.perf_counter(), time.monotonic()
        seconds = _wait(signal, start)
        _spin(AFTERMATH)  # the paints of the job's last redraw come after its end is reported: they count too
        heartbeat.timer.stop()
        time.sleep(0.05)  # the probe's last lines arrive
        gaps = heartbeat.gaps or [0.0]
        p99 = sorted(gaps)[int(0.99 * (len(gaps) - 1))]
        late, unexplained = heartbeat.late(floor)
        print(
            f"{name:<14} {seconds:>8.2f} {len(gaps):>6} {statistics.median(gaps):>14.1f} {p99:>7.1f}"
            f" {late:>8} {unexplained:>11}"
            f" {max(gaps):>17.1f} {collector.longest():>15} {floor.longest(began, time.monotonic()):>11.1f}"
        )
        if name == "apply" and tree_at:
            print(f"{'':<14} Apply → new tree: {tree_at[0] - started:.2f} s")
        if "failed" in window.statusBar().currentMessage():
            raise SystemExit(window.statusBar().currentMessage())
    floor.stop()
    sampler.report()


def cancellation(
    window: MainWindow, methods: list[str] | None = None, delays: tuple[float, ...] = CANCEL_AFTER
) -> None:
    print(f"\n{'method':<14} {'after s':>8} {'acknowledged ms':>16} {'cancelled after s':>18}  outcome")
    for method_id in methods or sorted(window.registry.methods):
        for delay in delays:
            cancel_once(window, method_id, delay)


def cancel_once(window: MainWindow, method_id: str, delay: float) -> None:
    """Run ``method_id``, click Cancel after ``delay`` seconds, print how soon the window said so and stopped."""
    window.panel.picker.setCurrentText(method_id)
    for name, value in QUICK.get(method_id, {}).items():
        window.panel.set_param(name, value)
    window.run_method()
    _spin(delay)
    if window.job is None:
        print(f"{method_id:<14} {delay:>8.1f} {'':>16} {'':>18}  finished within {delay:.1f} s")
        return
    acknowledged: list[float] = []

    def click() -> None:
        clicked = time.perf_counter()
        window.panel.cancel_button.click()
        if window.progress.format() == "cancelling…":
            acknowledged.append((time.perf_counter() - clicked) * 1000)

    seconds = _wait(window.job_done, click)
    message = window.statusBar().currentMessage()
    outcome = "cancelled" if "cancelled" in message else message[:40]
    shown = f"{acknowledged[0]:.1f}" if acknowledged else "no"
    print(f"{method_id:<14} {delay:>8.1f} {shown:>16} {seconds:>18.2f}  {outcome}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--data", default=None, help="data SPEC (default: demo for demo models, none otherwise)")
    parser.add_argument("--finetune-samples", type=int, default=1024, help="training images for the fine-tune step")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-cancel", action="store_true", help="skip the per-method cancellation table")
    parser.add_argument("--only-cancel", metavar="IDS", help="only the cancellation table, for these methods (a,b)")
    parser.add_argument(
        "--cancel-after",
        default="1",
        help="seconds each method runs before Cancel, several to reach later phases (1,3,5)",
    )
    options = parser.parse_args()
    torch.set_num_threads(options.threads)
    data = options.data or ("demo" if options.model.startswith("demo") else None)
    app = QApplication.instance() or QApplication([])
    window = MainWindow()
    window.resize(1280, 800)
    window.show()
    delays = tuple(float(value) for value in options.cancel_after.split(","))
    print(f"model {options.model}, data {data}, {options.threads} torch thread(s), cpu")
    if options.only_cancel:
        _wait(window.job_done, lambda: window.open(options.model, data))
        cancellation(window, options.only_cancel.split(","), delays)
    else:
        stalls(window, options.model, data, options.finetune_samples)
        if not options.no_cancel and data is not None:
            cancellation(window, delays=delays)
    window.confirm_unsaved = False  # the fine-tuned model is not saved: closing must not wait on the question
    window.close()
    app.quit()


if __name__ == "__main__":
    main()
