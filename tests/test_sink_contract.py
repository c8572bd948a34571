"""One contract, every sink: what goes in comes out, in batches, in-process or in a worker;
a sink whose destination is broken fails alone and is counted; shutdown drains.

Each case says how to build the sink, how to break it for real (no mocks: an impossible path, a
callback that raises) and how to read its output back with the format's own reader.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import pickle
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bus import DeliveryError, Event, InvalidConfig, MetricBus, Metrics, RetryPolicy, Scalar, Sink, SinkState
from sinks import (
    CallbackSink,
    CsvSink,
    JsonlSink,
    MemorySink,
    ParquetSink,
    PrometheusSink,
    TensorBoardSink,
    WandbSink,
    read_jsonl,
)
from tests.isolated_sinks import append_call, refuse_call
from tests.redis_server import free_port

pytestmark = pytest.mark.anyio

Point = tuple[str, int, float]


def expected_events() -> list[Event]:
    # values exact in float32 too, so TensorBoard's float32 scalars compare equal
    events: list[Event] = [Scalar(f"s/{i % 3}", i / 8, step=i) for i in range(40)]
    events += [Metrics({"m/a": float(i), "m/b": -float(i), "m/nan": math.nan}, step=100 + i) for i in range(10)]
    return events


def points(events: list[Event]) -> set[Point]:
    out: set[Point] = set()
    for e in events:
        if isinstance(e, Scalar):
            out.add((e.name, e.step, e.value))
        elif isinstance(e, Metrics):
            out.update((k, e.step, v) for k, v in e.values.items())
    return {_nan_safe(p) for p in out}


def _nan_safe(p: Point) -> Point:
    return (p[0], p[1], -1e300 if math.isnan(p[2]) else p[2])


def read_long_csv(path: Path) -> set[Point]:
    with open(path / "m.csv", newline="") as f:
        return {_nan_safe((r["name"], int(r["step"]), float(r["value"]))) for r in csv.DictReader(f)}


def read_wide_csv(path: Path) -> set[Point]:
    with open(path / "m.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    fixed = {"wall_time", "origin", "step"}
    return {_nan_safe((k, int(r["step"]), float(v))) for r in rows for k, v in r.items() if k not in fixed and v != ""}


def read_tensorboard(path: Path) -> set[Point]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {_nan_safe((tag, e.step, e.value)) for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}


def read_wandb(path: Path) -> set[Point]:
    from sinks._wandb import STEP_KEY
    from tests.wandb_reader import read_runs

    (run,) = read_runs(path / "wb").values()
    return {
        _nan_safe((k, row[STEP_KEY], v))
        for row in run.history
        for k, v in row.items()
        if not k.startswith("_") and k != STEP_KEY
    }


def read_parquet(path: Path) -> set[Point]:
    import duckdb

    with duckdb.connect() as con:
        rows = con.execute(f"SELECT name, step, value FROM read_parquet('{path / 'pq'}/**/*.parquet')").fetchall()
    return {_nan_safe((name, step, value)) for name, step, value in rows}


def read_calls(path: Path) -> set[Point]:
    calls = [json.loads(line) for line in (path / "calls.txt").read_text().splitlines()]
    return {_nan_safe((c[2], c[4], c[3])) for c in calls}


@dataclass
class Case:
    id: str
    make: Callable[[Path], Sink]
    broken: Callable[[Path], Sink]
    read: Callable[[Path], set[Point]] | None  # None: output lives in the sink object (MemorySink)
    mistake: bool = False  # the broken destination is a mistake (InvalidConfig at the call), not an outage


def _blocked(tmp: Path) -> Path:
    """A path whose parent is a regular file: no sink can create it."""
    (tmp / "not-a-dir").write_text("")
    return tmp / "not-a-dir" / "out"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


CASES = [
    Case("memory", lambda p: MemorySink(), lambda p: CallbackSink(refuse_call, per="batch"), None),
    Case("csv-long", lambda p: CsvSink(p / "m.csv"), lambda p: CsvSink(_blocked(p)), read_long_csv, mistake=True),
    Case(
        "csv-wide",
        lambda p: CsvSink(p / "m.csv", layout="wide"),
        lambda p: CsvSink(_blocked(p)),
        read_wide_csv,
        mistake=True,
    ),
    Case(
        "jsonl",
        lambda p: JsonlSink(p / "e.jsonl"),
        lambda p: JsonlSink(_blocked(p)),
        lambda p: points(read_jsonl(p / "e.jsonl")),
        mistake=True,
    ),
    Case(
        "tensorboard",
        lambda p: TensorBoardSink(p / "tb"),
        lambda p: TensorBoardSink(_blocked(p)),
        read_tensorboard,
        mistake=True,
    ),
    Case(
        "wandb",
        lambda p: WandbSink(project="contract", dir=_mkdir(p / "wb")),
        lambda p: WandbSink(project="contract", dir=p, init_timeout=0.001),  # wandb cannot start in time
        read_wandb,
    ),
    Case("parquet", lambda p: ParquetSink(p / "pq"), lambda p: ParquetSink(_blocked(p)), read_parquet, mistake=True),
    Case(
        "callback",
        lambda p: CallbackSink(functools.partial(append_call, p / "calls.txt")),
        lambda p: CallbackSink(refuse_call),
        read_calls,
    ),
]


@pytest.fixture(params=CASES, ids=[c.id for c in CASES])
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Case:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    return request.param  # type: ignore[no-any-return]


@pytest.mark.parametrize("isolate", ["none", "process"])
async def test_everything_published_comes_out_in_batches_and_counters_balance(
    case: Case, isolate: str, tmp_path: Path
) -> None:
    if case.read is None and isolate == "process":
        pytest.skip("a MemorySink in a sink host keeps its events in the host")
    sink = case.make(tmp_path)
    pickle.dumps(sink)  # every sink can be sent to a sink host before it opens
    events = expected_events()
    async with MetricBus() as bus:
        # rate="none": the contract is every event out (W&B's default rate limit is tested on its own)
        name = bus.add_sink(sink, max_batch=7, max_interval=3600, isolate=isolate, rate="none")  # type: ignore[arg-type]
        assert (isolate == "process") == bus.stats()[name].where.startswith("host own")
        await bus.publish_many(events[:25])
        await bus.flush()
        await bus.publish_many(events[25:])
    stats = bus.stats()[name]
    assert stats.state is SinkState.CLOSED and stats.balanced
    assert stats.delivered == stats.published == len(events) and stats.batches >= len(events) // 7
    got = points(sink.events) if isinstance(sink, MemorySink) else case.read(tmp_path)  # type: ignore[misc]
    assert got == points(events)


_TAKEN: list[socket.socket] = []  # ports taken from under a sink; closed after each test


def _port_taken_later(tmp: Path) -> Sink:
    """A PrometheusSink whose port was free at the call and is taken before the sink opens."""
    sink = PrometheusSink(free_port())
    taker = socket.socket()
    taker.bind(("127.0.0.1", sink.port))
    taker.listen()
    _TAKEN.append(taker)
    return sink


# A PrometheusSink's output is only served while it runs (tests/test_prometheus_sink.py scrapes it),
# so it joins the contract where a broken destination is concerned.
DOWN_CASES = [*CASES, Case("prometheus", lambda p: PrometheusSink(free_port()), _port_taken_later, None)]


@pytest.fixture(params=DOWN_CASES, ids=[c.id for c in DOWN_CASES])
def down_case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Case]:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    yield request.param
    while _TAKEN:
        _TAKEN.pop().close()


async def test_a_destination_that_is_down_fails_only_its_own_sink(down_case: Case, tmp_path: Path) -> None:
    """A broken destination is either a mistake (a file sink's path under a regular file):
    `InvalidConfig` at the call, before anything is published; or an outage (a refused
    connection, a service that does not start in time, a port taken since): the sink is down
    until the bus closes, then failed, and every event it missed is counted as such ("sink_down")."""
    case = down_case
    if case.mistake:
        async with MetricBus() as bus:
            with pytest.raises(InvalidConfig, match="not a folder"):
                bus.add_sink(case.broken(tmp_path))
            assert bus.sink_names == []
        return
    healthy = MemorySink("healthy")
    with pytest.raises(DeliveryError):
        async with MetricBus() as bus:
            name = bus.add_sink(case.broken(tmp_path), retry=RetryPolicy(max_attempts=2, backoff=0.001), rate="none")
            bus.add_sink(healthy)
            await bus.publish_many(expected_events())
    stats = bus.stats()[name]
    assert stats.state is SinkState.FAILED and stats.balanced and stats.delivered == 0
    assert stats.dropped == {"sink_down": stats.published} and stats.last_error
    assert len(healthy.events) == len(expected_events())
