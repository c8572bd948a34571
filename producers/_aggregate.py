"""`metricbus aggregate`: a RedisSource feeding the sinks of a plan file, as a service.

It runs until SIGTERM or SIGINT, then stops reading, lets the batch in hand be written and
acknowledged, drains and closes the sinks, and exits (0 when every sink got every event). Every
`every` seconds it prints one line of progress: events and lag in all, and per producer id the
last batch applied and for how long it has been silent.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import anyio
import msgspec

from bus import DropReason, InvalidConfig, MetricBus, SinkState, SinkStats

from ._plan import load_plan
from ._redis_source import RedisSource, SourceStats

__all__ = ["aggregate", "progress_line"]


def progress_line(stats: SourceStats) -> str:
    """One line: totals, lag, then each producer as 'id #last_seq events (idle s)'."""
    lag = "?" if stats.lag is None else f"{stats.lag:,}"
    head = (
        f"{stats.events:,} events from {len(stats.producers)} producers, lag {lag}, "
        f"dup {stats.duplicates}, bad {stats.bad_entries}"
    )
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
    out: TextIO = sys.stderr,
) -> int:
    """Run until SIGTERM/SIGINT. A RedisSource from `url` (and any the plan names) feeds the
    plan's sinks; `stats_path` gets the final source and sink stats as JSON. Returns the exit
    status: 0 when no sink failed or lost events other than by its own drop policy."""
    plan = load_plan(plan_path)
    sources = [RedisSource(url, stream=stream, group=group, consumer=consumer)] if url is not None else []
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
    for producer in others:
        bus.add_producer(producer)
    anyio.run(_serve, bus, sources, every, out, backend="asyncio")
    sink_stats = bus.stats()
    if stats_path is not None:
        payload = {"sources": [s.stats() for s in sources], "sinks": dict(sink_stats)}
        Path(stats_path).write_bytes(msgspec.json.encode(payload))
    return 0 if _delivered(sink_stats) else 1


async def _serve(bus: MetricBus, sources: list[RedisSource], every: float, out: TextIO) -> None:
    async with bus:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(_stop_on_signal, signals, sources)
                watchers.start_soon(_report, sources, every, out)
                async with anyio.create_task_group() as readers:
                    for source in sources:
                        readers.start_soon(source, bus)
                watchers.cancel_scope.cancel()
        _print(sources, out, final=True)


async def _stop_on_signal(signals: Any, sources: list[RedisSource]) -> None:
    async for _ in signals:
        for source in sources:
            source.stop()


async def _report(sources: list[RedisSource], every: float, out: TextIO) -> None:
    while True:
        await anyio.sleep(every)
        _print(sources, out, final=False)


def _print(sources: list[RedisSource], out: TextIO, *, final: bool) -> None:
    live = out.isatty() and not final
    for source in sources:
        line = progress_line(source.stats())
        out.write(f"\r\x1b[2K{line}" if live else f"{'done: ' if final else ''}{line}\n")
    out.flush()


def _delivered(stats: Mapping[str, SinkStats]) -> bool:
    return all(
        s.balanced and s.state is not SinkState.FAILED and all(reason == DropReason.FULL.value for reason in s.dropped)
        for s in stats.values()
    )
