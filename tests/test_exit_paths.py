"""Every way a training script ends, in a real process, with real signals: what reaches disk.

The child (tests/exit_child.py) logs Metrics {"loss", "acc"} at consecutive steps 0, 1, 2, ...
through a MetricLogger with CsvSink + JsonlSink + TensorBoardSink and never calls close() unless
a test says so. The test then reads the files back the way a user would (csv.reader, read_jsonl,
TensorBoard's own EventAccumulator) and checks that every series is exactly steps 0..M-1, each
once, with M what the child says it logged.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import Metrics
from sinks import read_jsonl
from tests.helpers import wait_until_sync

ROOT = Path(__file__).resolve().parents[1]
CHILD_SCRIPT = Path(__file__).with_name("exit_child.py")
TAGS = ("loss", "acc")
CSV_CELLS = 8  # wall_time,origin,step,name,value,epoch,round,task


# ---- the child process ----


class Child:
    """A running tests/exit_child.py in its own session (its own process group), with its stdout
    lines (and the time.monotonic() each arrived) and its stderr collected by reader threads."""

    def __init__(self, mode: str, out: Path, options: tuple[str, ...]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD_SCRIPT), mode, str(out), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,  # signals to the group reach only the child and its workers
        )
        self.lines: list[tuple[float, str]] = []
        self._stderr: list[str] = []
        self._stdout_done = threading.Event()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append((time.monotonic(), line.rstrip("\n")))
        self._stdout_done.set()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        if self.proc.poll() is not None:
            self._readers[1].join(5)
        return "".join(self._stderr)

    def tail(self) -> str:
        return "stdout tail: " + repr([text for _, text in self.lines[-5:]]) + "\nstderr:\n" + self.stderr[-4_000:]

    def _find(self, prefix: str) -> tuple[float, str] | None:
        for arrived, text in self.lines:
            if text == prefix or text.startswith(prefix + " "):
                return arrived, text[len(prefix) :].strip()
        return None

    def line(self, prefix: str, timeout: float = 30.0) -> tuple[float, str]:
        """Wait for the first stdout line starting with `prefix`; (arrival time, the rest)."""
        with contextlib.suppress(TimeoutError):
            wait_until_sync(lambda: self._find(prefix) is not None or self._stdout_done.is_set(), timeout)
        found = self._find(prefix)
        assert found is not None, f"the child never printed {prefix!r} (exit code {self.proc.poll()})\n{self.tail()}"
        return found

    def progress(self) -> list[tuple[int, float]]:
        """The loop's "at N T" lines: N events logged by time.monotonic() == T (the child's clock,
        CLOCK_MONOTONIC, the same clock as this process's)."""
        return [(int(n), float(t)) for _, text in self.lines if text.startswith("at ") for n, t in [text.split()[1:]]]

    def exited_within(self, seconds: float) -> bool:
        try:
            self.proc.wait(max(seconds, 0.0))
        except subprocess.TimeoutExpired:
            return False
        self._stdout_done.wait(5)
        return True

    def finish(self, timeout: float) -> int:
        """The exit code; fails the test (after killing the child) if it runs `timeout` s more."""
        if not self.exited_within(timeout):
            self.kill()
            raise AssertionError(f"the child was still running {timeout:.1f} s later; killed it\n{self.tail()}")
        return self.proc.returncode

    def signal(self, sig: signal.Signals, target: str) -> None:
        """`target` "pid": the child alone (kill PID); "group": all of it (Ctrl-C, SLURM, kill -- -PGID)."""
        if target == "pid":
            os.kill(self.pid, sig)
        else:
            os.killpg(self.pid, sig)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)  # the child, its sink workers and forked children
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)


@pytest.fixture
def spawn() -> Iterator[Callable[..., Child]]:
    children: list[Child] = []

    def start(mode: str, out: Path, *options: str) -> Child:
        child = Child(mode, out, options)
        children.append(child)
        return child

    yield start
    for child in children:
        child.kill()


# ---- what is on disk ----


def csv_rows(path: Path) -> tuple[list[list[str]], bool]:
    """The complete data rows of a long-layout CSV, and whether a torn last line was left out."""
    if not path.exists():
        return [], False
    text = path.read_text(encoding="utf-8")
    rows = list(csv.reader(text.splitlines(keepends=True)))
    torn = bool(text) and not text.endswith("\n")
    if torn:
        rows = rows[:-1]
    return rows[1:], torn


def jsonl_steps(path: Path, key: str = "loss") -> list[int]:
    if not path.exists():
        return []
    return [e.step for e in read_jsonl(path) if isinstance(e, Metrics) and key in e.values]


def tensorboard(run_dir: Path) -> EventAccumulator | None:
    if not any(run_dir.glob("events.out.tfevents.*")):
        return None
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def on_disk(out: Path, tags: tuple[str, ...] = TAGS) -> dict[str, list[int]]:
    """The steps of every series, per file: "csv/loss", ..., "jsonl", "tb/loss", ..."""
    found: dict[str, list[int]] = {}
    rows, _ = csv_rows(out / "m.csv")
    for tag in tags:
        found[f"csv/{tag}"] = [int(row[2]) for row in rows if row[3] == tag]
    found["jsonl"] = jsonl_steps(out / "m.jsonl", tags[0])
    acc = tensorboard(out / "tb")
    for tag in tags:
        present = acc is not None and tag in acc.Tags()["scalars"]
        found[f"tb/{tag}"] = [e.step for e in acc.Scalars(tag)] if acc is not None and present else []
    return found


def describe(found: dict[str, list[int]], expected: str) -> str:
    parts = []
    for key, steps in found.items():
        part = f"{key} {len(steps):,} of {expected}"
        if steps != list(range(len(steps))):
            first_bad = next(i for i, s in enumerate(steps) if s != i)
            part += f" (not 0..M-1: index {first_bad} holds step {steps[first_bad]}; {len(set(steps)):,} distinct)"
        parts.append(part)
    return "; ".join(parts)


def complete(found: dict[str, list[int]], low: int, high: int | None = None) -> str | None:
    """None if every series is exactly steps 0..M-1 with low <= M <= high, else what is wrong."""
    high = low if high is None else high
    ok = all(steps == list(range(len(steps))) and low <= len(steps) <= high for steps in found.values())
    return None if ok else describe(found, f"{low:,}" if low == high else f"{low:,}..{high:,}")


def files_parse(out: Path) -> list[str]:
    """After a kill -9: each file parses, with at most one torn line, at its end."""
    problems = []
    jsonl = out / "m.jsonl"
    if jsonl.exists():
        lines = jsonl.read_bytes().split(b"\n")
        for i, line in enumerate(lines[:-1]):  # every line that has its newline is whole
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"m.jsonl line {i + 1} does not parse: {line[:80]!r}")
                break
    rows, _ = csv_rows(out / "m.csv")
    bad = [row for row in rows if len(row) != CSV_CELLS]
    if bad:
        problems.append(f"m.csv has {len(bad)} complete rows without {CSV_CELLS} cells, e.g. {bad[0]}")
    try:
        tensorboard(out / "tb")
    except Exception as exc:
        problems.append(f"TensorBoard cannot load the run: {exc!r}")
    return problems


# ---- 1-3: the script ends by itself, without `with` or close() ----


N_SCRIPTED = 20_000


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("mode", "exit_code"), [("fall_off", 0), ("sys_exit", 3), ("raise", 1)])
def test_script_that_ends_without_close_loses_nothing(
    tmp_path: Path, spawn: Callable[..., Child], mode: str, exit_code: int
) -> None:
    """A script that never closes its logger and ends by falling off the end, by sys.exit(3) or by
    an uncaught exception: every event is in the CSV, the JSONL and TensorBoard, the exit code is
    the script's own, the traceback (if any) is printed, and no 'Exception ignored' noise."""
    child = spawn(mode, tmp_path, "--n", str(N_SCRIPTED))
    code = child.finish(45)
    child.line("logged")
    problems = []
    if (wrong := complete(on_disk(tmp_path), N_SCRIPTED)) is not None:
        problems.append(f"events lost: {wrong}")
    if code != exit_code:
        problems.append(f"exit code {code}, expected {exit_code}")
    stderr = child.stderr
    if "Exception ignored" in stderr:
        problems.append("'Exception ignored' on stderr")
    if mode == "raise":
        if "Traceback" not in stderr or "RuntimeError: boom in the training loop" not in stderr:
            problems.append("the script's own traceback is missing")
    elif "Traceback" in stderr:
        problems.append("a traceback on stderr")
    assert not problems, "\n".join(problems) + "\n" + child.tail()


# ---- 4-5: a signal while the loop is logging ----


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("sig", "target", "exit_codes"),
    [
        (signal.SIGTERM, "pid", (128 + signal.SIGTERM, -signal.SIGTERM)),
        (signal.SIGINT, "pid", (-signal.SIGINT, 128 + signal.SIGINT)),
        (signal.SIGINT, "group", (-signal.SIGINT, 128 + signal.SIGINT)),  # Ctrl-C in a terminal
    ],
    ids=["sigterm-pid", "sigint-pid", "sigint-group"],
)
def test_signal_mid_loop_loses_nothing_that_was_logged(
    tmp_path: Path,
    spawn: Callable[..., Child],
    sig: signal.Signals,
    target: str,
    exit_codes: tuple[int, ...],
) -> None:
    """SIGTERM (kill PID) or Ctrl-C (SIGINT to the process, or to its whole process group) while
    the loop is logging, no `with`: every event logged before the signal is on disk, in order,
    once, and the process ends as killed by that signal."""
    child = spawn("loop", tmp_path, "--n", "5000")
    child.line("ready")
    child.signal(sig, target)
    code = child.finish(45)
    count_file = tmp_path / "count"
    assert count_file.exists(), f"the loop's finally: block never ran\n{child.tail()}"
    logged = int(count_file.read_text())  # +1 if the signal landed inside the last logging call
    problems = []
    if (wrong := complete(on_disk(tmp_path), logged, logged + 1)) is not None:
        problems.append(f"events lost: {wrong}")
    if code not in exit_codes:
        problems.append(f"exit code {code}, expected one of {exit_codes}")
    if "Exception ignored" in child.stderr:
        problems.append("'Exception ignored' on stderr")
    assert not problems, "\n".join(problems) + "\n" + child.tail()


# ---- 6: SIGTERM, then SIGKILL after a grace period (SLURM) ----

GRACE_S = 2.0
INTERVAL_S = 0.2  # max_interval of every sink: how stale the files may be at any moment
SLACK_S = 0.5  # scheduling on a busy machine, the bus's poll interval, a write in progress


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["pid", "group"])
@pytest.mark.parametrize("handler", ["logger", "trainer"])
def test_sigterm_then_sigkill_after_grace_loses_at_most_one_flush_interval(
    tmp_path: Path, spawn: Callable[..., Child], handler: str, target: str
) -> None:
    """SLURM's way: SIGTERM, then SIGKILL 2 s later if the job is still there. With the logger's
    own SIGTERM handling ("logger") or a trainer that catches SIGTERM and keeps logging while it
    checkpoints ("trainer"), to the process or its whole group: the files parse (at most one torn
    last line, TensorBoard loads) and hold a gap-free run from step 0 that covers everything
    logged up to max_interval + slack before the SIGKILL (everything, if it exited by itself)."""
    # max_batch as large as the buffer: max_interval, not a full batch, is what sends events on
    options = ["--n", "5000", "--interval", str(INTERVAL_S), "--max-batch", "10000"]
    child = spawn("loop", tmp_path, *options, *(["--trainer-sigterm"] if handler == "trainer" else []))
    child.line("ready")
    child.signal(signal.SIGTERM, target)
    t_kill = None
    if not child.exited_within(GRACE_S):
        t_kill = time.monotonic()
        child.signal(signal.SIGKILL, target)
        child.finish(10)
    found = on_disk(tmp_path)
    problems = files_parse(tmp_path)
    progress = child.progress()
    if t_kill is None:  # it shut down within the grace period: nothing may be missing
        count_file = tmp_path / "count"
        assert count_file.exists(), f"exited within the grace period without its finally: block\n{child.tail()}"
        logged = int(count_file.read_text())
        if (wrong := complete(found, logged, logged + 1)) is not None:
            problems.append(f"exited by itself within the {GRACE_S} s grace period, yet events are lost: {wrong}")
    else:
        before_kill = [(n, t) for n, t in progress if t <= t_kill]
        (n0, t0), (n1, t1) = before_kill[0], before_kill[-1]
        rate = (n1 - n0) / (t1 - t0)
        required = max((n for n, t in before_kill if t <= t_kill - INTERVAL_S - SLACK_S), default=0)
        on_disk_min = min(len(steps) for steps in found.values())
        gap_free = all(steps == list(range(len(steps))) for steps in found.values())
        if not gap_free or on_disk_min < required:
            problems.append(
                f"killed {t_kill - t1:.2f} s after its last progress line, having logged >= {n1:,} events at "
                f"{rate:,.0f}/s; everything logged before SIGKILL - {INTERVAL_S} s - {SLACK_S} s, {required:,} "
                f"events, must be on disk (missing at most {n1 - required:,}, a flush interval plus margin): "
                + describe(found, f">= {required:,}")
            )
    assert not problems, "\n".join(problems) + "\n" + child.tail()


# ---- 7: a forked child of a process that has a logger ----

N_FORK = 5_000
FORK_EXIT_S = 5.0


@pytest.mark.timeout(60)
@pytest.mark.parametrize("action", ["exit", "flush", "close"])
@pytest.mark.parametrize("how", ["os", "mp"])
def test_forked_child_neither_hangs_nor_writes_the_parents_events(
    tmp_path: Path, spawn: Callable[..., Child], how: str, action: str
) -> None:
    """After the parent logged 5,000 events, it forks (os.fork + sys.exit in the child, or a
    multiprocessing 'fork' Process). The child logs once, then exits, or flushes, or closes the
    inherited logger: each call returns or raises BusStateError naming the fork within a second,
    the child exits within 5 s, and the parent's 10,000 events are on disk exactly once."""
    child = spawn("fork", tmp_path, "--n", str(N_FORK), "--how", how, "--action", action)
    code = child.finish(45)
    forked = json.loads(child.line("child")[1])
    problems = []
    if forked["hung"] or forked["seconds"] > FORK_EXIT_S or forked["exitcode"] != 0:
        problems.append(
            f"the forked child {'was killed, still running' if forked['hung'] else 'exited'} after "
            f"{forked['seconds']:.1f} s (exit code {forked['exitcode']}); expected exit 0 within {FORK_EXIT_S} s"
        )
    calls: dict[str, dict[str, Any]] = {}
    record = tmp_path / "child.jsonl"
    for line in record.read_text().splitlines() if record.exists() else ():
        entry = json.loads(line)
        calls[entry["op"]] = entry
    for op, entry in calls.items():
        if entry["outcome"] == "started":
            problems.append(f"{op}() in the forked child never returned")
        elif entry["seconds"] > 1.0:
            problems.append(f"{op}() in the forked child took {entry['seconds']:.1f} s")
        elif entry["outcome"] != "ok" and not (
            entry["outcome"].startswith("BusStateError") and "fork" in entry["outcome"].lower()
        ):
            problems.append(
                f"{op}() in the forked child: {entry['outcome']} (expected ok or BusStateError naming the fork)"
            )
    child_logged = calls.get("scalars", {}).get("outcome") == "ok"
    child_events = {
        "csv": [int(row[2]) for row in csv_rows(tmp_path / "m.csv")[0] if row[3] == "child"],
        "jsonl": jsonl_steps(tmp_path / "m.jsonl", "child"),
    }
    if "scalars" not in calls:
        problems.append("the forked child recorded no logging call")
    for where, steps in child_events.items():
        if len(steps) != (1 if child_logged else 0):
            problems.append(
                f"the child's event is in {where} {len(steps)} times; its logging call "
                + ("returned, so it must be there once" if child_logged else "raised, so it must not be there")
            )
    if (wrong := complete(on_disk(tmp_path), 2 * N_FORK)) is not None:
        problems.append(f"the parent's events, each exactly once: {wrong}")
    if code != 0 or "Exception ignored" in child.stderr:
        problems.append(f"the parent exited with {code}; stderr should hold no 'Exception ignored'")
    assert not problems, "\n".join(problems) + "\n" + child.tail()


# ---- 8: shutdown with a hung sink ----

SHUTDOWN_TIMEOUT_S = 2.0
EXIT_SLACK_S = 3.0
N_HUNG = 5_000
# events the hung sink never gets, by where it hangs (the flush hang comes after half the events)
MISSED = {"open": N_HUNG, "write_batch": N_HUNG, "flush": N_HUNG // 2, "close": 0}


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("api", "hang"),
    [
        ("logger", "write_batch:thread"),
        ("logger", "write_batch:executor"),
        ("logger", "write_batch:blocking"),
        ("logger", "open:thread"),
        ("logger", "flush:thread"),
        ("logger", "close:thread"),
        ("async", "write_batch:thread"),
        ("async", "write_batch:executor"),
    ],
)
def test_hung_sink_cannot_hold_the_process_past_shutdown_timeout(
    tmp_path: Path, spawn: Callable[..., Child], api: str, hang: str
) -> None:
    """A sink hung for good (in a worker thread via anyio.to_thread, in the loop's executor, or
    blocking the event loop; in open, write_batch, flush or close) next to a healthy JsonlSink,
    with shutdown_timeout=2: the process exits within 2 + 3 s of the script's end, the JSONL has
    every event, and close() (or `async with MetricBus`) raises DeliveryError whose stats mark
    the hung sink failed, name the hung method in last_error and count what it missed as dropped."""
    where = hang.split(":")[0]
    options = ["--n", str(N_HUNG), "--shutdown-timeout", str(SHUTDOWN_TIMEOUT_S), "--hang", hang]
    child = spawn("hung_logger" if api == "logger" else "hung_async", tmp_path, *options)
    done = float(child.line("done logging", timeout=20)[1])
    bound = SHUTDOWN_TIMEOUT_S + EXIT_SLACK_S
    exited = child.exited_within(done + bound - time.monotonic())
    took = time.monotonic() - done
    if not exited:
        child.kill()
    problems = []
    if not exited:
        problems.append(f"still running {took:.1f} s after the script's end (bound {bound} s); killed it")
    if api == "async" and exited and all(text != "anyio.run returned" for _, text in child.lines):
        problems.append("anyio.run never returned")
    steps = jsonl_steps(tmp_path / "m.jsonl")
    if steps != list(range(N_HUNG)):
        problems.append(f"the healthy JsonlSink has {len(steps):,} of {N_HUNG:,} events")
    found = next((text for _, text in child.lines if text.startswith("stats ")), None)
    if found is None:
        problems.append("no DeliveryError from close() (or `async with MetricBus`) before the deadline")
    else:
        stats = json.loads(found[len("stats ") :])
        missed = MISSED[where]
        if stats is None:
            problems.append("the DeliveryError's stats have no entry for the hung sink")
        else:
            dropped = sum(stats["dropped"].values())
            if stats["state"] != "failed" or where not in (stats["last_error"] or ""):
                problems.append(f"hung sink: state {stats['state']!r}, last_error {stats['last_error']!r}")
            if (stats["published"], stats["delivered"], dropped) != (N_HUNG, N_HUNG - missed, missed):
                problems.append(
                    f"hung sink: published {stats['published']}, delivered {stats['delivered']}, dropped "
                    f"{stats['dropped']}; expected {N_HUNG}, {N_HUNG - missed}, {missed}"
                )
    assert not problems, "\n".join(problems) + "\n" + child.tail()
