"""`metricbus replay --to parquet:DIR` (a JSONL log and TensorBoard runs into Parquet) and
`metricbus query RUN "SELECT ..."` printing DuckDB's answer as a table."""

from __future__ import annotations

import math
from pathlib import Path

import anyio
import duckdb
import pytest

from bus import Event, MetricBus, Metrics, Origin, Scalar, Sink, Text
from producers._cli import main
from producers._query import run_query
from sinks import JsonlSink, TensorBoardSink

EVENTS: list[Event] = [
    *(Scalar("loss", 1 / (s + 1), step=s, wall_time=1.7e9 + s, origin=Origin(rank=s % 2)) for s in range(20)),
    Metrics({"acc": 0.5, "nan": math.nan}, step=20, wall_time=1.7e9 + 20),
    Text("note", "a, b\n'c'", step=21, wall_time=1.7e9 + 21),
]


def write(sink: Sink) -> None:
    async def go() -> None:
        async with MetricBus() as bus:
            bus.add_sink(sink, isolate="none")
            await bus.publish_many(EVENTS)

    anyio.run(go)


def rows(run: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect() as con:
        return con.execute(sql.replace("RUN", f"read_parquet('{run}/**/*.parquet')")).fetchall()


def test_a_jsonl_log_replays_into_parquet_row_for_row(tmp_path: Path) -> None:
    write(JsonlSink(tmp_path / "e.jsonl"))
    assert main(["replay", str(tmp_path / "e.jsonl"), "--to", f"parquet:{tmp_path / 'pq'}"]) == 0
    got = rows(tmp_path / "pq", "SELECT origin, name, step, value, text, epoch(wall_time) FROM RUN ORDER BY step, name")
    assert len(got) == 23
    assert got[0] == ("rank0", "loss", 0, 1.0, None, 1.7e9) and got[1][0] == "rank1"
    assert math.isnan(got[21][3]) and got[22] == ("main", "note", 21, None, "a, b\n'c'", 1.7e9 + 21)  # type: ignore[arg-type]


def test_tensorboard_runs_replay_into_parquet_with_their_origins(tmp_path: Path) -> None:
    write(TensorBoardSink(tmp_path / "tb"))
    assert main(["replay", str(tmp_path / "tb"), "--to", f"parquet:{tmp_path / 'pq'}"]) == 0
    got = rows(
        tmp_path / "pq", "SELECT rank, count(*), max(step) FROM RUN WHERE name = 'loss' GROUP BY rank ORDER BY rank"
    )
    assert got == [(0, 10, 18), (1, 10, 19)]


def test_query_prints_a_table_and_refuses_what_it_cannot_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write(JsonlSink(tmp_path / "e.jsonl"))
    main(["replay", str(tmp_path / "e.jsonl"), "--to", f"parquet:{tmp_path / 'pq'}"])
    capsys.readouterr()
    sql = "SELECT name, count(*) AS n, max(step) AS last FROM metrics GROUP BY name ORDER BY name"
    assert main(["query", str(tmp_path / "pq"), sql]) == 0
    table = capsys.readouterr().out
    for line in ("acc", "loss", "nan", "note"):
        assert line in table
    assert "│ loss │ 20 │ 19" in table.replace("  ", " ").replace("  ", " ")
    columns, first, more = run_query(tmp_path / "pq", "SELECT step FROM metrics ORDER BY step", max_rows=5)
    assert columns == ["step"] and first == [(0,), (1,), (2,), (3,), (4,)] and more
    assert main(["query", str(tmp_path / "pq"), "SELEC nonsense"]) == 1
    assert "syntax error" in capsys.readouterr().err.lower()
    with pytest.raises(SystemExit):
        main(["query", str(tmp_path / "empty"), "SELECT 1"])  # not a run directory: a usage error
    assert "not a directory" in capsys.readouterr().err
