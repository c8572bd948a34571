"""`metricbus aggregate`: a RedisSource feeding the sinks of a plan file, as a service.

It runs until SIGTERM or SIGINT, then stops reading, lets the batch in hand be written and
acknowledged, drains and closes the sinks, prints the per-sink stats table and exits (0 when
every sink got every event, by `bus.delivery_failures`). Every `every` seconds it prints one
line of progress per source (events and lag in all, and per producer id the last batch applied
and for how long it has been silent) and each sink's balance. Every `pipeline_every` seconds it
publishes the pipeline's own health into the sinks (`PipelineMetrics`, plus `source_health`),
so a dashboard shows which sink fell behind and which producer went silent.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO, TypeAlias

import anyio
import msgspec
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from bus import InvalidConfig, MetricBus, RankReduce, SinkStats, delivery_failures, describe_failure, missing_lines

from ._pipeline_metrics import PipelineMetrics, name_part
from ._plan import load_plan
from ._redis_source import RedisSource, SourceStats
from ._stats_table import balance_line, print_stats, stats_table

__all__ = ["aggregate", "progress_line", "source_health"]

Producer: TypeAlias = Callable[[MetricBus], Awaitable[None]]


def progress_line(stats: SourceStats) -> str:
    """One line: totals, lag, then each producer as 'id #last_seq events (idle s)'."""
    lag = "?" if stats.lag is None else f"{stats.lag:,}"
    head = (
        f"{stats.events:,} events from {len(stats.producers)} producers, lag {lag}, "
        f"dup {stats.duplicates}, bad {stats.bad_entries}"
    )
    if stats.ranks is not None:
        r = stats.ranks
        head += f", steps reduced {r.steps:,} ({r.partial:,} with ranks missing, {r.open_steps:,} open)"
    parts = [
        f"{pid} #{p.last_seq} {p.events:,}" + (f" (idle {p.idle:.0f}s)" if p.idle >= 5 else "")
        for pid, p in sorted(stats.producers.items())
    ]
    return " | ".join([head, *parts])


def aggregate(
    plan_path: str | Path,
    *,
    url: str | None = None,
    stream: str = "metricbus",
    group: str = "metricbus",
    consumer: str | None = None,
    stats_path: str | Path | None = None,
    every: float = 1.0,
    pipeline_every: float | None = 5.0,
    ranks: RankReduce | None = None,
    out: TextIO = sys.stderr,
) -> int:
    """Run until SIGTERM/SIGINT. A RedisSource from `url` (and any the plan names) feeds the
    plan's sinks; `stats_path` gets the final source and sink stats as JSON. `pipeline_every`:
    seconds between samples of the pipeline's own health published into the sinks
    (`PipelineMetrics`, with every producer's health from the sources); None: none. `ranks`
    (else the plan's `[ranks]`): reduce each job's ranks at the `--redis` source, the missing
    ranks named in the progress lines and at the end. Returns the exit status: 0 when every sink
    got every event (`bus.delivery_failures`), else 1."""
    plan = load_plan(plan_path)
    ranks = ranks if ranks is not None else plan.ranks
    sources = [RedisSource(url, stream=stream, group=group, consumer=consumer, ranks=ranks)] if url is not None else []
    sources += [p for p in plan.producers if isinstance(p, RedisSource)]
    others = [p for p in plan.producers if not isinstance(p, RedisSource)]
    if not sources:
        raise InvalidConfig("nothing to aggregate: give --redis URL or name a producers.RedisSource in the plan")
    if not plan.sinks and plan.callback is None:
        raise InvalidConfig(f"{plan_path}: the plan has no sinks to write to")
    shutdown_timeout = float(plan.logger_settings.get("shutdown_timeout", 10.0))
    bus = MetricBus(shutdown_timeout=shutdown_timeout, raise_on_loss=False)
    for sink, options in plan.sinks:
        bus.add_sink(sink, **options)
    if plan.callback is not None:
        from sinks import CallbackSink

        bus.add_sink(CallbackSink(plan.callback))
    pipeline = None
    if pipeline_every is not None:
        pipeline = PipelineMetrics(pipeline_every, extra=partial(source_health, sources))
        others.append(pipeline)
    report = _Report(out, sources, bus)
    anyio.run(_serve, bus, sources, others, every, report, backend="asyncio")
    sink_stats = bus.stats()
    failures = delivery_failures(sink_stats)
    report.final(sink_stats, failures)
    if stats_path is not None:
        payload = {
            "sources": [s.stats() for s in sources],
            "sinks": dict(sink_stats),
            "ok": not failures,
            "failures": [describe_failure(s) for s in failures],
            "pipeline": None if pipeline is None else {"samples": pipeline.samples, "labels": pipeline.labels},
        }
        Path(stats_path).write_bytes(msgspec.json.encode(payload))
    return 1 if failures else 0


def source_health(sources: Sequence[RedisSource]) -> dict[str, float]:
    """The health of what `sources` read, as PipelineMetrics series (under "metricbus/"):
    per stream `source_<stream>/unread` (entries not yet read) and `/pending` (read, not yet
    acknowledged), when known; per producer id `producer/<id>/idle_s` (seconds since its last
    entry: a site that went silent), `/events` and `/gaps` (entries trimmed before they were read)."""
    values: dict[str, float] = {}
    for source in sources:
        stats = source.stats()
        base = f"source_{name_part(stats.stream) or 'stream'}"
        if stats.lag is not None:
            values[f"{base}/unread"] = float(stats.lag)
        if stats.pending is not None:
            values[f"{base}/pending"] = float(stats.pending)
        for pid, progress in stats.producers.items():
            key = f"producer/{name_part(pid) or 'producer'}"
            values[f"{key}/idle_s"] = progress.idle
            values[f"{key}/events"] = float(progress.events)
            values[f"{key}/gaps"] = float(progress.gaps)
    return values


def _source_lines(source: RedisSource) -> list[str]:
    """A source's progress line, and a line per rank missing from some reduced step."""
    stats = source.stats()
    missing = missing_lines(stats.ranks) if stats.ranks is not None else []
    return [progress_line(stats), *(f"  {line}" for line in missing)]


async def _serve(
    bus: MetricBus, sources: list[RedisSource], others: list[Producer], every: float, report: _Report
) -> None:
    for producer in others:  # on the loop: a producer's cancel scope belongs to it
        bus.add_producer(producer)
    async with bus:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(_stop_on_signal, signals, sources)
                watchers.start_soon(_report, report, every)
                async with anyio.create_task_group() as readers:
                    for source in sources:
                        readers.start_soon(source, bus)
                watchers.cancel_scope.cancel()


async def _stop_on_signal(signals: Any, sources: list[RedisSource]) -> None:
    async for _ in signals:
        for source in sources:
            source.stop()


async def _report(report: _Report, every: float) -> None:
    try:
        while True:
            await anyio.sleep(every)
            report.show()
    finally:
        report.stop()


class _Report:
    """What the service says while it runs: each source's progress line and each sink's balance.
    On a terminal they are redrawn in place (the sinks as the stats table); elsewhere (a log file,
    journald) they are written as lines every time."""

    def __init__(self, out: TextIO, sources: list[RedisSource], bus: MetricBus) -> None:
        self.out = out
        self.sources = sources
        self.bus = bus
        self.console = Console(file=out)
        self.live = Live(console=self.console, auto_refresh=False, transient=True) if out.isatty() else None

    def show(self) -> None:
        lines = [line for source in self.sources for line in _source_lines(source)]
        stats = self.bus.stats()
        if self.live is not None:
            self.live.start()
            self.live.update(Group(*(Text(line) for line in lines), stats_table(stats, title=None)), refresh=True)
            return
        lines += [f"  {balance_line(s)}" for s in stats.values()]
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()

    def stop(self) -> None:
        if self.live is not None:
            self.live.stop()

    def final(self, stats: Mapping[str, SinkStats], failures: Sequence[SinkStats]) -> None:
        for source in self.sources:
            self.console.print(Text(f"done: {progress_line(source.stats())}"))
            reduced = source.stats().ranks
            for line in missing_lines(reduced) if reduced is not None else ():
                self.console.print(Text(f"  {line}", style="yellow"))
        print_stats(stats, console=self.console, title="aggregate: sinks")
        for failure in failures:
            self.console.print(Text(describe_failure(failure), style="red"))
