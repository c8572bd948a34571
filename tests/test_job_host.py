"""Every rank of a job into one pipeline on its machine, reduced at the job's host without a
collective: real rank processes (torchrun with gloo, and plain processes), no Redis."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from bus import MISSING_METRIC, InvalidConfig, Metrics, Origin, RankReduce, RankReducer
from bus.hosts import job_from_env
from bus.hosts._job_ledger import Batch, Ledger, rows_of
from bus.hosts._job_progress import RouteProgress, Steps
from producers import MetricLogger
from sinks import MemorySink, read_jsonl
from tests.helpers import wait_until_sync
from tests.rank_checks import NAMES, TORCHRUN, go, rank_rows, reap, want
from tests.ranks_child import values

ROOT = Path(__file__).resolve().parent.parent
CHILD = Path(__file__).with_name("job_child.py")
LAUNCHER = ("RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT")
pytestmark = pytest.mark.timeout(180)

_children: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_child_left_behind() -> Iterator[None]:
    yield
    reap(_children)


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in LAUNCHER}
    return {**base, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def start_rank(
    out: Path, job: str, rank: int, steps: int, *, pause: float = 0.0, hold: bool = False
) -> subprocess.Popen[bytes]:
    args = [sys.executable, str(CHILD), str(out), str(steps), "--job", job, "--pause", str(pause), "--wait"]
    args += ["--hold"] if hold else []
    extra = {"RANK": str(rank), "WORLD_SIZE": "4"}
    err = open(out / f"rank{rank}.err", "wb")  # noqa: SIM115 - the child (and a host it starts) owns it
    proc = subprocess.Popen(args, cwd=ROOT, env=env(**extra), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
    err.close()
    _children.append(proc)
    return proc


def host_pid(where: str) -> int:
    """The pid in a sink's `where`: "host job NAME (pid 1234)"."""
    assert where.startswith("host job "), where
    return int(where.rsplit("pid ", 1)[1].rstrip(")"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_gone(pid: int, within: float) -> None:
    """The host is not our child: it may linger as a zombie of its (gone) starter; count that as gone."""

    def gone() -> bool:
        if not alive(pid):
            return True
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"

    wait_until_sync(gone, timeout=within)


def lines(path: Path) -> list[dict[str, Any]]:
    """The parsed lines of a JSONL file being written (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def job_rows(events: list[Any]) -> dict[int, dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
    for e in events:
        if isinstance(e, Metrics) and e.origin.rank is None:
            rows.setdefault(e.step, {}).update(e.values)
    return rows


def scalars(run: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return {s.step: s.value for s in acc.Scalars(tag)}


# ---- torchrun: 4 ranks, gloo, one job host, the reduction equal to all_reduce ----


def test_torchrun_ranks_share_one_job_host_whose_reduction_equals_all_reduce_with_no_collective(
    tmp_path: Path,
) -> None:
    steps = 200
    expect = tmp_path / "expect.json"
    run = subprocess.run(
        [
            *(str(TORCHRUN), "--standalone", "--nproc_per_node=4", str(CHILD), str(tmp_path), str(steps)),
            *("--dist", "--expect", str(expect)),
        ],
        cwd=ROOT,
        env=env(),
        capture_output=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert len({host_pid(r["where"]) for r in reports}) == 1  # one host for the job
    for rank in range(4):
        assert json.loads(Path(f"{expect}.collectives{rank}").read_text()) == {}  # metricbus issued none

    events = read_jsonl(tmp_path / "job.jsonl")
    per_rank = rank_rows(events)
    assert sorted(per_rank) == [(r, s) for r in range(4) for s in range(steps)]  # every rank's every step
    for (rank, step), row in per_rank.items():
        assert list(row.values()) == values(rank, step)
    rows = job_rows(events)
    reduced = json.loads(expect.read_text())
    assert sorted(rows) == list(range(steps))
    for step in range(steps):
        assert MISSING_METRIC not in rows[step]
        for name in NAMES:
            assert rows[step][name] == pytest.approx(reduced[str(step)][name], rel=1e-6, abs=1e-6), (step, name)

    with open(tmp_path / "job.csv", newline="", encoding="utf-8") as f:  # one table, the origin a column
        origins = Counter(row["origin"] for row in csv.DictReader(f))
    assert origins == {label: 10 * steps for label in ("main", "rank0", "rank1", "rank2", "rank3")}

    tb = tmp_path / "tb"  # TensorBoard: the job's run (the logdir) and one run per rank
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == ["rank0", "rank1", "rank2", "rank3"]
    job_v0 = scalars(tb, "v0")
    assert sorted(job_v0) == list(range(steps))
    assert all(job_v0[s] == pytest.approx(reduced[str(s)]["v0"], rel=1e-6, abs=1e-6) for s in range(steps))
    for rank in range(4):
        assert scalars(tb / f"rank{rank}", "v9") == {s: pytest.approx(values(rank, s)[9]) for s in range(steps)}


# ---- kill -9 of one rank: the others whole, the missing rank named, nothing hangs ----


def test_a_rank_killed_mid_run_is_named_from_then_on_the_others_are_whole_and_close_is_bounded(
    tmp_path: Path,
) -> None:
    steps = 200
    procs = [start_rank(tmp_path, tmp_path.name, rank, steps, pause=0.03) for rank in range(4)]
    go(procs)
    jsonl = tmp_path / "job.jsonl"
    wait_until_sync(
        lambda: jsonl.exists() and any(e.get("origin") == {"rank": 3} and e["step"] >= 20 for e in lines(jsonl)),
        timeout=60,
    )
    os.kill(procs[3].pid, signal.SIGKILL)
    assert procs[3].wait(10) == -signal.SIGKILL
    for p in procs[:3]:
        assert p.wait(90) == 0
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert len({host_pid(r["where"]) for r in reports}) == 1
    for report in reports[:3]:
        assert report["steps"] == steps and report["close_s"] < 10.0  # within the shutdown timeout
    wait_gone(host_pid(reports[0]["where"]), within=30)  # the host drained and exited: nothing hangs

    events = read_jsonl(jsonl)
    per_rank = rank_rows(events)
    assert all((r, s) in per_rank for r in range(3) for s in range(steps))  # the others' data whole
    last = max(s for r, s in per_rank if r == 3)
    assert 20 <= last < steps - 1
    rows = job_rows(events)
    assert sorted(rows) == list(range(steps))
    for step in range(steps):
        present = [r for r in range(4) if (r, step) in per_rank]
        assert present == ([0, 1, 2, 3] if step <= last else [0, 1, 2])
        assert {k: rows[step][k] for k in NAMES} == pytest.approx(want(present, step), rel=1e-6)
        if step > last:
            assert rows[step][MISSING_METRIC] == 1.0  # never a silent partial mean


# ---- kill -9 of the job's host: another one, every row once ----


def poll(condition: Any, within: float) -> Any:
    """`condition()`'s first truthy value, polled every 50 ms (reading files: not every ms); fail
    after `within` seconds."""
    deadline = time.monotonic() + within
    while not (found := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return found


def reported_host(out: Path, killed: list[int], seen: set[int]) -> int | None:
    """The job host every rank's report names now, if they all name the same one and it is not a
    killed one (a rank rewrites its report every 10 steps, and while it holds)."""
    pids = set()
    for rank in range(4):
        with contextlib.suppress(OSError, ValueError):
            pids.add(host_pid(json.loads((out / f"rank{rank}.json").read_text())["where"]))
    seen |= pids
    pid = pids.pop() if len(pids) == 1 else None
    return pid if pid is not None and pid not in killed and alive(pid) else None


def every_rank_at(jsonl: Path, step: int) -> bool:
    """Every rank's values of `step` (or later) are in the file: the host is writing."""
    if not jsonl.exists():
        return False
    ranks = {e["origin"]["rank"] for e in lines(jsonl) if "rank" in e.get("origin", {}) and e["step"] >= step}
    return ranks == {0, 1, 2, 3}


def test_a_killed_job_host_is_replaced_and_every_rank_and_job_row_is_written_exactly_once(tmp_path: Path) -> None:
    """kill -9 of the job's host, twice while 4 ranks log: one rank starts another host, every rank
    sends it what the dead one had not settled, and each sink's file has every rank's every step
    once and the job's row of every step once, reduced over all four ranks (none named missing)."""
    steps = 300
    procs = [start_rank(tmp_path, tmp_path.name, rank, steps, pause=0.02, hold=True) for rank in range(4)]
    go(procs)
    jsonl = tmp_path / "job.jsonl"
    killed: list[int] = []
    seen: set[int] = set()
    for at in (40, 140):  # the second kill hits the host the first one made a rank start
        host = poll(lambda at=at: every_rank_at(jsonl, at) and reported_host(tmp_path, killed, seen), within=90)
        os.kill(host, signal.SIGKILL)
        killed.append(host)
    poll(lambda: reported_host(tmp_path, killed, seen), within=90)  # a third host, and the ranks on it
    (tmp_path / "release").touch()  # every rank closes now, all connected at both kills
    for p in procs:
        assert p.wait(90) == 0
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    last = {host_pid(r["last_where"]) for r in reports}
    assert len(last) == 1 and not last & set(killed)  # one host at the end, for every rank
    assert seen <= {*killed, *last}  # and no other host was ever reported
    assert all(r["restarts"] == 2 and r["missing"] == {} for r in reports), reports
    for pid in [*killed, *last]:
        wait_gone(pid, within=30)  # nothing left running
    errors = "".join((tmp_path / f"rank{r}.err").read_text() for r in range(4))
    assert "missing from step" not in errors and "exited at start" not in errors and "failed" not in errors

    events = read_jsonl(jsonl)
    ranks_seen = Counter(
        (e.origin.rank, e.step) for e in events if isinstance(e, Metrics) and e.origin.rank is not None
    )
    assert ranks_seen == {(r, s): 1 for r in range(4) for s in range(steps)}  # every rank's every step, once
    for (rank, step), row in rank_rows(events).items():
        assert list(row.values()) == values(rank, step)
    job_seen = Counter(e.step for e in events if isinstance(e, Metrics) and e.origin.rank is None)
    assert job_seen == {s: 1 for s in range(steps)}  # the job's row of every step, once
    rows = job_rows(events)
    for step in range(steps):
        assert MISSING_METRIC not in rows[step]  # reduced over every rank: none was missing
        assert rows[step] == pytest.approx(want([0, 1, 2, 3], step), rel=1e-6), step

    with open(tmp_path / "job.csv", newline="", encoding="utf-8") as f:
        csv_rows = list(csv.DictReader(f))
    cells = Counter((row["origin"], int(row["step"]), row["name"]) for row in csv_rows)
    labels = ("main", "rank0", "rank1", "rank2", "rank3")
    assert cells == {(o, s, n): 1 for o in labels for s in range(steps) for n in NAMES}  # each value once
    job_csv = {(int(row["step"]), row["name"]): float(row["value"]) for row in csv_rows if row["origin"] == "main"}
    for step in range(steps):
        assert {n: job_csv[step, n] for n in NAMES} == pytest.approx(want([0, 1, 2, 3], step), rel=1e-6), step


# ---- the pieces of a crash: the greeting, the progress record, the reducer ----


GREETER = """
import socket, sys
sys.path.insert(0, sys.argv[2])
from bus.hosts._job import GREETING
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind(sys.argv[1])
listener.listen(8)
conn, _ = listener.accept()
conn.sendall(GREETING)
conn.recv(1)  # until the test is done with it
"""


def test_attach_passes_over_a_dead_hosts_socket_that_still_takes_a_connection(tmp_path: Path) -> None:
    """A killed host's socket may queue a connection and then end it: that is no host; attach
    starts the next one (and connects to it once it greets)."""
    from bus.hosts._job import attach

    run = tmp_path / "run"
    run.mkdir()
    dying = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dying.bind(str(run / "host.sock"))
    dying.listen(8)

    def end_the_connection() -> None:  # as the kernel does once the killed host's fds are closed
        conn, _ = dying.accept()
        conn.close()
        dying.close()

    ender = threading.Thread(target=end_the_connection)
    ender.start()
    started: list[subprocess.Popen[bytes]] = []

    def spawn() -> subprocess.Popen[bytes]:
        started.append(subprocess.Popen([sys.executable, "-c", GREETER, str(run / "host.sock"), str(ROOT)]))
        _children.append(started[-1])
        return started[-1]

    sock, proc = attach(run, spawn, timeout=30)
    ender.join(10)
    assert proc is not None and started == [proc]  # the dead one's socket was passed over: one host started
    assert peer_pid_of(sock) == proc.pid
    sock.close()
    assert proc.wait(10) == 0


def peer_pid_of(sock: socket.socket) -> int | None:
    from bus.hosts._job import peer_pid

    return peer_pid(sock)


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["jsonl", "csv"])
async def test_a_file_sink_cuts_what_a_crashed_host_wrote_after_its_recorded_mark(tmp_path: Path, kind: str) -> None:
    """A killed host may have appended batches it had not recorded; its successor sends them again
    and first cuts the file back to the recorded mark: each row once."""
    from sinks import CsvSink, JsonlSink

    def sink() -> Any:
        return JsonlSink(tmp_path / "m.jsonl") if kind == "jsonl" else CsvSink(tmp_path / "m.csv")

    first, second = (
        [Metrics({"x": float(s)}, s, origin=Origin(rank=0)) for s in steps] for steps in (range(3), range(3, 6))
    )
    crashed = sink()
    assert crashed.output_mark() is None  # not open
    await crashed.open()
    await crashed.write_batch(first)
    mark = crashed.output_mark()
    await crashed.write_batch(second)  # written, not recorded: then kill -9
    successor = sink()
    successor.resume_output(mark)
    await successor.open()
    await successor.write_batch(second)  # sent again
    await successor.close()
    await crashed.close()
    if kind == "jsonl":
        assert [e.step for e in read_jsonl(tmp_path / "m.jsonl")] == list(range(6))
    else:
        with open(tmp_path / "m.csv", newline="", encoding="utf-8") as f:
            assert [int(row["step"]) for row in csv.DictReader(f)] == list(range(6))


def test_steps_are_kept_as_ranges_and_the_oldest_go_first() -> None:
    steps = Steps(limit=7)
    for step in (3, 1, 2, 7, 5, 6, 0, 2):
        steps.add(step)
    assert steps.ranges == [[0, 3], [5, 7]] and steps.count == 7 and 4 not in steps and 6 in steps
    steps.add(9)  # over the limit: the lowest go
    steps.add(8)
    assert steps.ranges == [[2, 3], [5, 9]] and list(steps) == [2, 3, 5, 6, 7, 8, 9]


def test_a_successor_skips_what_a_route_settled_by_rank_event_and_by_row() -> None:
    """A route's ledger turns its settled count into (rank, batch, index) and (job, step); a
    ledger started from that record skips exactly those when the batch comes again."""

    def batch_events() -> list[Metrics]:
        return [Metrics({"x": float(i)}, step, origin=Origin(rank=0)) for i, step in enumerate((4, 5, 5))]

    first = batch_events()
    row = Metrics({"x": 1.0}, 4, origin=Origin())  # the job's row of step 4, closed by this batch
    out = [first[0], first[1], row, first[2]]
    batch = Batch("0/77", 3, first)
    ledger = Ledger()
    assert ledger.take(out, batch, rows_of(out, batch), published=10) == out
    assert not ledger.settle(10)  # nothing of this chunk yet
    assert ledger.settle(13)  # three of its four: two of the rank's events and the row
    progress = msgspec.msgpack.decode(msgspec.msgpack.encode(ledger.progress), type=RouteProgress)
    assert progress.ranks == {"0/77": (3, 1)} and progress.rows == {"": [[4, 4]]}
    ledger.progress.writing = 1  # the sink is handed the last event ...
    assert not ledger.settle(13, writing=True) and ledger.progress.writing == 1
    assert ledger.settle(14) and ledger.progress.writing == 0  # ... and settles it

    again = batch_events()  # sent again to the next host: new objects, the same batch
    successor = Ledger(progress)
    out = [again[0], again[1], Metrics({"x": 1.0}, 4, origin=Origin()), again[2]]
    taken = successor.take(out, Batch("0/77", 3, again), rows_of(out, Batch("0/77", 3, again)), published=0)
    assert taken == [again[2]] and successor.skipped == 3
    later = [Metrics({"x": 9.0}, 6, origin=Origin(rank=0))]
    assert successor.take(later, Batch("0/77", 4, later), [], published=1) == later
    other = [Metrics({"x": 9.0}, 4, origin=Origin(rank=1))]  # another rank: nothing of it was settled
    assert successor.take(other, Batch("1/78", 3, other), [], published=2) == other


def test_steps_a_crashed_host_wrote_are_not_reduced_again_nor_counted_late() -> None:
    reducer = RankReducer(RankReduce(world_size=2))
    reducer.recover("", [0])
    rows = []
    for step in range(3):
        for rank in range(2):
            rows += reducer.add_many([Metrics({"x": float(rank)}, step, origin=Origin(rank=rank))])
    rows += reducer.drain()
    job = [e.step for e in rows if e.origin.rank is None]
    assert job == [1, 2]  # step 0's row was written before the crash: not again
    assert reducer.stats().late == 0 and not reducer.stats().missing
    assert len([e for e in rows if e.origin.rank is not None]) == 6  # each rank's own series goes on


# ---- every rank at the same instant: exactly one host ----


def test_four_ranks_attaching_at_the_same_instant_start_exactly_one_job_host(tmp_path: Path) -> None:
    procs = [start_rank(tmp_path, tmp_path.name, rank, 20) for rank in range(4)]
    go(procs)
    for p in procs:
        assert p.wait(60) == 0
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    assert len({host_pid(r["where"]) for r in reports}) == 1
    assert len(rank_rows(read_jsonl(tmp_path / "job.jsonl"))) == 4 * 20
    wait_gone(host_pid(reports[0]["where"]), within=30)
    for rank in range(4):  # no second host was started (one would fail to listen, and say so)
        assert (tmp_path / f"rank{rank}.err").read_text() == ""


# ---- the settings, and the process on its own ----


def test_a_process_without_a_launcher_keeps_its_own_sink_host() -> None:
    assert job_from_env(None, {}) is None
    with MetricLogger(raise_on_loss=True) as log:
        assert log.job is None and log.rank_stats is None


def test_the_job_comes_from_torchruns_environment_or_a_name() -> None:
    torchrun = {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "abc"}
    job = job_from_env(None, torchrun | {"MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"})
    assert job is not None and (job.rank, job.world_size, job.local_world_size) == (2, 4, 2)
    assert not job.one_machine
    assert job_from_env(False, torchrun) is None
    named = job_from_env("exp1", {"RANK": "0", "WORLD_SIZE": "2"})
    assert named is not None and named.name == "exp1" and named.one_machine
    with pytest.raises(InvalidConfig, match="RANK and WORLD_SIZE"):
        job_from_env("exp1", {})
    with pytest.raises(InvalidConfig, match="RANK=5"):
        job_from_env("exp1", {"RANK": "5", "WORLD_SIZE": "4"})
    with pytest.raises(InvalidConfig, match="not a rank of one"):
        MetricLogger(ranks=RankReduce(world_size=2))
    with pytest.raises(InvalidConfig):
        MetricLogger(job="")


def test_a_job_of_one_rank_in_this_process_writes_its_series_and_the_jobs(tmp_path: Path) -> None:
    os.environ.update(RANK="0", WORLD_SIZE="1")
    try:
        log = MetricLogger(job=f"solo-{tmp_path.name}", shutdown_timeout=5.0)
    finally:
        for key in ("RANK", "WORLD_SIZE"):
            del os.environ[key]
    name = log.add_sink(MemorySink(), isolate="none")  # stays here: not the job's
    from sinks import JsonlSink

    jsonl = log.add_sink(JsonlSink(tmp_path / "solo.jsonl"))
    for step in range(5):
        log.scalars({"loss": float(step)}, step)
    log.close()
    assert log.stats()[jsonl].where.startswith("host job solo-")
    assert log.stats()[name].where == "local"
    events = read_jsonl(tmp_path / "solo.jsonl")
    assert sorted(rank_rows(events)) == [(0, s) for s in range(5)]
    assert job_rows(events) == {s: {"loss": float(s)} for s in range(5)}
    ranks = log.rank_stats
    assert ranks is not None and ranks.complete == 5 and not ranks.missing
