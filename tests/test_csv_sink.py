"""CsvSink read back with Python's csv module, as a user would."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import anyio
import pytest

from bus import Context, MetricBus, Metrics, Origin, Scalar
from sinks import CsvSink

pytestmark = pytest.mark.anyio

ODD_NAMES = ["plain", "with,comma", 'with "quotes"', "with\nnewline", "ünïcødé/λ", " padded "]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


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


async def test_an_existing_file_with_a_foreign_header_fails_the_sink_not_the_bus(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("a,b,c\n1,2,3\n")
    async with MetricBus(raise_on_loss=False) as bus:
        name = bus.add_sink(CsvSink(path))
        await bus.publish(Scalar("x", 1.0, step=0))
    assert bus.stats()[name].dropped == {"sink_failed": 1}
    assert "another header" in (bus.stats()[name].last_error or "")
    assert path.read_text() == "a,b,c\n1,2,3\n"  # untouched


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
