"""CsvSink read back with Python's csv module, as a user would."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Any

import anyio
import pytest

from bus import Context, Event, MetricBus, Metrics, Origin, Scalar
from sinks import CsvSink
from sinks._csv import LONG_HEADER

pytestmark = pytest.mark.anyio

ODD_NAMES = ["plain", "with,comma", 'with "quotes"', "with\nnewline", "ünïcødé/λ", " padded "]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


async def run(path: Path, events: list[Event], **options: Any) -> None:
    """One run of a program that logs `events` to a CsvSink on `path`."""
    async with MetricBus() as bus:
        bus.add_sink(CsvSink(path, **options))
        await bus.publish_many(events)


async def test_long_layout_round_trips_values_names_origins_and_context(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "m.csv"
    values = [0.1, -2.5e-300, 1e308, float("nan"), float("inf"), float("-inf")]
    async with MetricBus() as bus:
        bus.add_sink(CsvSink(path))
        for step, (name, value) in enumerate(zip(ODD_NAMES, values, strict=True)):
            await bus.publish(Scalar(name, value, step=step, wall_time=1000.5 + step))
        await bus.publish(
            Metrics(
                {"a": 1.0, "b": 2.0},
                step=7,
                origin=Origin(site="site-1"),
                context=Context(epoch=2, round=3, task="train"),
            )
        )
    got = rows(path)
    assert [r["name"] for r in got[:6]] == ODD_NAMES
    for row, value, step in zip(got, values, range(6), strict=False):
        parsed = float(row["value"])
        assert parsed == value or (math.isnan(parsed) and math.isnan(value))
        assert int(row["step"]) == step and float(row["wall_time"]) == 1000.5 + step
        assert row["origin"] == "main" and row["epoch"] == row["round"] == row["task"] == ""
    assert got[6] | got[7] == got[6] | {"name": "b", "value": "2.0"}
    assert (got[6]["origin"], got[6]["epoch"], got[6]["round"], got[6]["task"]) == ("site-1", "2", "3", "train")


async def test_long_layout_appends_to_an_existing_file_without_a_second_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    for run in range(2):
        async with MetricBus() as bus:
            bus.add_sink(CsvSink(path))
            await bus.publish(Scalar("loss", float(run), step=run))
    assert [(r["step"], r["value"]) for r in rows(path)] == [("0", "0.0"), ("1", "1.0")]


async def test_wide_layout_one_row_per_step_and_late_columns_do_not_rewrite_every_step(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    inodes = set()
    async with MetricBus() as bus:
        bus.add_sink(CsvSink(path, layout="wide"), max_interval=3600)
        for step in range(100):
            await bus.publish(Metrics({"loss": step / 100, "with,comma": 1.0}, step=step))
            if step % 10 == 9:
                await bus.publish(Scalar("val/acc", step / 1000, step=step))
            if step == 60:
                await bus.publish(Scalar("late\nmetric", float("nan"), step=step))
            await bus.flush()
            inodes.add(path.stat().st_ino)
    # the file is replaced only when a column appears (3 times here), not on each of the 100 steps
    assert len(inodes) <= 4
    got = rows(path)
    assert list(got[0]) == ["wall_time", "origin", "step", "loss", "with,comma", "val/acc", "late\nmetric"]
    assert [int(r["step"]) for r in got] == list(range(100))
    assert got[5]["val/acc"] == "" and float(got[9]["val/acc"]) == 0.009
    assert got[59]["late\nmetric"] == "" and math.isnan(float(got[60]["late\nmetric"]))
    assert all(float(r["loss"]) == i / 100 for i, r in enumerate(got))


async def test_wide_layout_keeps_origins_apart(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    async with MetricBus() as bus:
        bus.add_sink(CsvSink(path, layout="wide"))
        for step in range(3):
            for site in ("a", "b"):
                await bus.publish(
                    Scalar("loss", step + (0.5 if site == "b" else 0.0), step=step, origin=Origin(site=site))
                )
    got = sorted((r["origin"], int(r["step"]), float(r["loss"])) for r in rows(path))
    assert got == [("a", s, float(s)) for s in range(3)] + [("b", s, s + 0.5) for s in range(3)]


@pytest.mark.parametrize("content", ["a,b,c\n1,2,3\n", "a,b,c\n1,2,3\n4,5", "a,b"])
async def test_an_existing_foreign_file_fails_the_sink_not_the_bus_and_is_left_untouched(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "m.csv"
    path.write_text(content)  # a torn tail included: only a file known to be ours is cut
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(CsvSink(path))
        await bus.publish(Scalar("x", 1.0, step=0))
    assert bus.stats()[name].dropped == {"sink_failed": 1}
    assert f"{path} exists" in (bus.stats()[name].last_error or "")
    assert path.read_text() == content


def test_csv_sink_rejects_an_unknown_layout() -> None:
    from bus import InvalidConfig

    with pytest.raises(InvalidConfig):
        CsvSink("x.csv", layout="tall")  # type: ignore[arg-type]


def test_anyio_is_the_only_runner_needed(tmp_path: Path) -> None:
    async def main() -> None:
        async with MetricBus() as bus:
            bus.add_sink(CsvSink(tmp_path / "m.csv"))
            await bus.publish(Scalar("x", 1.0, step=0))

    anyio.run(main)
    assert rows(tmp_path / "m.csv")[0]["value"] == "1.0"


async def test_a_torn_last_row_is_cut_off_before_appending(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.csv"
    await run(path, [Scalar("loss", float(step), step=step) for step in range(3)])
    torn = path.read_bytes()[:-5]  # killed in the middle of writing the last row
    path.write_bytes(torn)
    partial = len(torn.rsplit(b"\n", 1)[1])
    with caplog.at_level(logging.WARNING, logger="metricbus"):
        await run(path, [Scalar("loss", 3.0, step=3)])
    assert all(len(row) == 8 for row in cells(path))
    assert [(r["step"], r["value"]) for r in rows(path)] == [("0", "0.0"), ("1", "1.0"), ("3", "3.0")]
    assert f"dropped {partial} bytes" in caplog.text


async def test_a_row_torn_right_after_a_newline_inside_a_quoted_name_is_cut_off_too(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    await run(path, [Scalar("loss", 0.0, step=0), Scalar("two\nlines", 1.0, step=1)])
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"two\n") + 4])  # the file ends with a newline, but inside quotes
    await run(path, [Scalar("loss", 2.0, step=2)])
    assert [(r["name"], r["step"], r["value"]) for r in rows(path)] == [("loss", "0", "0.0"), ("loss", "2", "2.0")]


@pytest.mark.parametrize("metric", ["acc", "lr"])  # lr is a new column: the file is rewritten
async def test_wide_layout_a_torn_last_row_is_cut_off_and_the_header_kept(tmp_path: Path, metric: str) -> None:
    path = tmp_path / "wide.csv"
    await run(path, [Metrics({"loss": step / 4, "acc": step / 8}, step=step) for step in range(3)], layout="wide")
    path.write_bytes(path.read_bytes()[:-3])
    await run(path, [Metrics({"loss": 0.75, metric: 0.5}, step=3)], layout="wide")
    got = rows(path)
    assert list(got[0]) == ["wall_time", "origin", "step", "loss", "acc", *(["lr"] if metric == "lr" else [])]
    assert all(None not in row and None not in row.values() for row in got)  # no row wider or narrower
    assert [r["step"] for r in got] == ["0", "1", "3"]
    assert (got[1]["loss"], got[1]["acc"], got[2]["loss"], got[2][metric]) == ("0.25", "0.125", "0.75", "0.5")


async def test_a_file_cut_inside_its_header_gets_a_whole_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_bytes(b"wall_time,origin,st")
    await run(path, [Scalar("loss", 1.0, step=0)])
    assert cells(path)[0] == list(LONG_HEADER)
    assert [(r["name"], r["value"]) for r in rows(path)] == [("loss", "1.0")]


async def test_sinks_on_files_of_the_same_name_get_distinct_default_names(tmp_path: Path) -> None:
    a, b = tmp_path / "a" / "m.csv", tmp_path / "b" / "m.csv"
    async with MetricBus() as bus:
        names = [bus.add_sink(CsvSink(a)), bus.add_sink(CsvSink(b, layout="wide"))]
        await bus.publish(Scalar("loss", 1.0, step=0))
    assert names == [f"csv:{a.as_posix()}", f"csv:{b.as_posix()}"]
    assert rows(a)[0]["value"] == rows(b)[0]["loss"] == "1.0"
    assert CsvSink("runs/a/m.csv").name == "csv:runs/a/m.csv"


async def test_wide_layout_renames_metrics_that_would_repeat_a_fixed_column(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    origin = Origin(site="a")
    first = {"loss": 0.5, "step": 5.0, "origin": 6.0, "wall_time": 7.0, "metric:step": 8.0}
    await run(path, [Metrics(first, step=1, origin=origin, wall_time=100.0)], layout="wide")
    await run(path, [Metrics({"step": 9.0}, step=2, origin=origin, wall_time=200.0)], layout="wide")  # header read back
    renamed = ["metric:step", "metric:origin", "metric:wall_time", "metric:metric:step"]
    assert cells(path)[0] == ["wall_time", "origin", "step", "loss", *renamed]
    got = rows(path)
    assert [(r["wall_time"], r["origin"], r["step"]) for r in got] == [("100.0", "a", "1"), ("200.0", "a", "2")]
    assert [[r[column] for column in renamed] for r in got] == [["5.0", "6.0", "7.0", "8.0"], ["9.0", "", "", ""]]


async def test_long_layout_writes_metrics_named_like_its_columns_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    await run(path, [Scalar("step", 5.0, step=7), Metrics({"origin": 1.0, "name": 2.0}, step=8)])
    got = [(r["name"], r["step"], r["value"]) for r in rows(path)]
    assert got == [("step", "7", "5.0"), ("origin", "8", "1.0"), ("name", "8", "2.0")]
