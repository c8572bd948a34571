"""Every stats table shows the whole balance, and one rule says whether every sink got every event.

The tables are read back from what the commands print (`metricbus demo`, `metricbus replay`, a
logger's summary), in both layouts (a row per sink, a column per sink on a narrow console), and
their numbers are checked against each other (published = delivered + dropped + reduced + queued
+ in flight) and against the files on disk. (`metricbus aggregate`'s table: tests/test_redis.py.)
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from bus import (
    DeliveryError,
    Event,
    MetricBus,
    RateLimit,
    Scalar,
    Sink,
    SinkState,
    SinkStats,
    check_delivery,
    delivery_failures,
    describe_failure,
)
from producers import MetricLogger, format_stats, replay
from producers._cli import main
from producers._replay import print_report
from sinks import CsvSink, JsonlSink, read_jsonl
from tests.helpers import GatedSink, wait_until_sync
from tests.stats_table_reader import read_narrow, read_wide

ROOT = Path(__file__).resolve().parents[1]


class RefusesNegative(Sink):
    """Refuses (for good) every event whose value is negative, as a service refusing bad rows."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    @property
    def name(self) -> str:
        return "refuses-negative"

    async def write_batch(self, events: Sequence[Event]) -> int:
        good = [e for e in events if not (isinstance(e, Scalar) and e.value < 0)]
        self.events.extend(good)
        return len(events) - len(good)


# ---- make demo ----


def test_demo_table_shows_every_term_of_the_balance_and_the_files_agree(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    env = {**os.environ, "COLUMNS": "200", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "producers._cli", "demo", "--out", str(out), "--steps", "300"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {row.name: row for row in read_wide(proc.stdout)}
    names = {f"csv:{out}/metrics.csv", f"jsonl:{out}/events.jsonl", f"tensorboard:{out}/tensorboard"}
    assert names | {"wandb:metricbus-demo"} == set(rows), proc.stdout  # whole names, none cut
    for row in rows.values():
        assert row.balanced and row.state == "closed", row.lines
        assert any("host" in line for line in row.lines[1:]), row.lines  # where it ran
    # the numbers are what is on disk: 300 Metrics of 3 values (CSV, a row per value), plus the
    # hparams, 2 histograms and a text (JSONL, TensorBoard), all delivered
    with open(out / "metrics.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3 * rows[f"csv:{out}/metrics.csv"].counts["delivered"] == 900
    jsonl = rows[f"jsonl:{out}/events.jsonl"].counts
    assert jsonl["published"] == jsonl["delivered"] == len(read_jsonl(out / "events.jsonl")) == 304
    # W&B's rate control folded most steps into fewer rows: shown as reduced, not hidden
    wandb = rows["wandb:metricbus-demo"].counts
    assert wandb["published"] == 304 and wandb["reduced"] > 0
    assert wandb["delivered"] + wandb["reduced"] == wandb["published"] and wandb["dropped"] == 0


# ---- metricbus replay ----


def recorded(path: Path, n: int) -> list[Event]:
    events: list[Event] = [Scalar("loss", 1 / (step + 1) if step % 50 else -1.0, step=step) for step in range(n)]

    async def write() -> None:
        async with MetricBus() as bus:
            bus.add_sink(JsonlSink(path))
            await bus.publish_many(events)

    anyio.run(write)
    return events


def test_replay_table_balances_in_both_layouts_and_its_verdict_is_the_one_rule(tmp_path: Path) -> None:
    source, n = tmp_path / "run.jsonl", 1_000
    events = recorded(source, n)
    refusing = RefusesNegative()
    entries = [
        CsvSink(tmp_path / "all.csv"),
        (JsonlSink(tmp_path / "every10.jsonl"), {"rate": RateLimit(every=10)}),  # reduces by steps
        refusing,
    ]
    stats = replay([source], entries)
    negative = sum(1 for e in events if isinstance(e, Scalar) and e.value < 0)
    # the one rule: reduced is not lost, refused is
    assert [s.name for s in delivery_failures(stats.sinks)] == ["refuses-negative"] and not stats.ok
    with pytest.raises(DeliveryError, match=f"dropped {negative:,} rejected of {n:,} published"):
        check_delivery(stats.sinks)

    for width, read in ((200, read_wide), (80, read_narrow)):
        text = io.StringIO()
        print_report(stats, Console(file=text, width=width, color_system=None))
        rows = read(text.getvalue())
        assert len(rows) == 3 and all(row.balanced for row in rows), text.getvalue()
        csv_row, every10, refused = rows
        assert csv_row.counts["delivered"] == n
        assert every10.counts["delivered"] == len(read_jsonl(tmp_path / "every10.jsonl")) == n // 10
        assert every10.counts["reduced"] == n - n // 10
        assert refused.counts["dropped"] == negative and refused.reasons == {"rejected": negative}
        assert refused.counts["delivered"] == len(refusing.events) == n - negative
        assert max(len(line) for line in text.getvalue().splitlines()) <= width


def test_replay_cli_exit_status_follows_the_one_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "run.jsonl"
    recorded(source, 200)
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'[[sinks]]\ntemplate = "sinks.JsonlSink"\nsettings = {{ path = "{(tmp_path / "r.jsonl").as_posix()}" }}\n'
        "options = { rate = { every = 7 } }\n"
    )
    assert main(["replay", str(source), "--plan", str(plan)]) == 0  # 171 reduced: every event accounted for
    (row,) = read_narrow(capsys.readouterr().out)
    assert row.counts["reduced"] == 200 - 29 and row.counts["delivered"] == 29 and row.balanced


# ---- the logger's summary, and a sink that is behind, not lost ----


def test_a_live_logger_table_shows_queued_and_in_flight_and_is_not_a_failure_until_closed(tmp_path: Path) -> None:
    gated = GatedSink("slow")
    log = MetricLogger(raise_on_loss=False)
    log.add_sink(gated, capacity=100, max_batch=50)
    log.add_sink(JsonlSink(tmp_path / "m.jsonl"), isolate="host")
    for step in range(1_000):
        log.scalar("x", float(step), step=step)
    wait_until_sync(gated.entered.is_set)
    live = log.stats()
    assert not delivery_failures(live)  # behind, not lost
    (slow, jsonl) = read_wide(format_stats(live, width=200))
    assert slow.name == "slow" and slow.balanced and slow.counts["published"] == 1_000
    assert slow.counts["in flight"] > 0 and slow.counts["queued"] + slow.counts["in flight"] == 1_000
    assert any("local" in line for line in slow.lines) and any("host shared" in line for line in jsonl.lines)
    gated.gate.set()
    log.close()
    final = log.stats()
    assert not delivery_failures(final)
    (slow, jsonl) = read_wide(format_stats(final, width=200))
    assert slow.counts["delivered"] == jsonl.counts["delivered"] == len(read_jsonl(tmp_path / "m.jsonl")) == 1_000


# ---- the rule's cases that a run cannot produce on purpose ----


def stats(**changes: object) -> SinkStats:
    base: dict[str, object] = {
        "name": "s",
        "state": SinkState.CLOSED,
        "published": 10,
        "delivered": 10,
        "dropped": {},
        "queued": 0,
        "in_flight": 0,
        "batches": 1,
        "failed_attempts": 0,
    }
    return SinkStats(**{**base, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "lost", "why"),
    [
        (stats(), False, ""),
        (stats(delivered=4, reduced=6), False, ""),  # folded into rows by rate control
        (stats(delivered=7, dropped={"full": 3}), False, ""),  # the policy it was given
        (stats(state=SinkState.OPEN, delivered=2, queued=5, in_flight=3), False, ""),  # behind
        (stats(state=SinkState.DOWN, delivered=2, queued=8), False, ""),  # down is only behind
        (stats(delivered=7, dropped={"rejected": 3}), True, "dropped 3 rejected"),
        (stats(state=SinkState.FAILED, delivered=0, dropped={"sink_failed": 10}), True, "failed"),
        (stats(delivered=8, queued=2), True, "closed with 2 events never written"),
        (stats(delivered=8), True, "+2 events unaccounted for"),
    ],
)
def test_the_one_rule(case: SinkStats, lost: bool, why: str) -> None:
    assert bool(delivery_failures({"s": case})) is lost
    assert why in describe_failure(case)


def test_a_table_marks_counters_that_do_not_balance() -> None:
    (row,) = read_wide(format_stats({"s": stats(delivered=8)}, width=200))
    assert not row.balanced and any("counters off by +2" in line for line in row.lines)
