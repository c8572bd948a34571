"""Bus alone: events/s through MetricBus into a null sink, next to an anyio memory stream.

The baseline is the cheapest anyio hand-off (send_nowait + receive_nowait per item), which is what a
naive one-stream-per-sink bus would cost. Each contender runs in its own interpreter.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio

from benchmarks._common import run_contenders, serve_contender, write_result
from bus import Event, MetricBus, Scalar, Sink

N = 1_000_000


class NullSink(Sink):
    """Takes batches and does nothing: measures the bus, not a destination. It never blocks, so
    it says so and is served on the bus's loop, as MemorySink and worker-process sinks are."""

    blocking = False

    async def write_batch(self, events: Sequence[Event]) -> None:
        return None


class ThreadedNullSink(NullSink):
    """The same on its own thread, where every sink that may block runs (the default)."""

    blocking = True


def _events() -> list[Event]:
    return [Scalar("loss", float(i), step=i) for i in range(N)]


async def _bus(mode: str) -> float:
    events = _events()
    mode, threaded = mode.removesuffix("_thread"), mode.endswith("_thread")
    start = time.perf_counter()
    async with MetricBus() as bus:
        bus.add_sink(ThreadedNullSink() if threaded else NullSink(), capacity=100_000, max_batch=10_000)
        if mode == "publish_many":
            for i in range(0, N, 1_000):
                await bus.publish_many(events[i : i + 1_000])
        elif mode == "publish":
            for event in events:
                await bus.publish(event)
        else:
            for event in events:
                try:
                    bus.publish_nowait(event)
                except Exception:
                    await bus.flush()
                    bus.publish_nowait(event)
    return N / (time.perf_counter() - start)


async def _anyio_stream() -> float:
    events = _events()
    send, receive = anyio.create_memory_object_stream[Event](100_000)
    start = time.perf_counter()
    async with send, receive:
        for i in range(0, N, 50_000):
            for event in events[i : i + 50_000]:
                send.send_nowait(event)
            for _ in range(50_000):
                receive.receive_nowait()
            await anyio.lowlevel.checkpoint()
    return N / (time.perf_counter() - start)


async def _anyio_stream_task() -> float:
    """What a one-stream-per-sink bus does: a consumer task awaiting receive() per item."""
    events = _events()
    send, receive = anyio.create_memory_object_stream[Event](100_000)

    async def consume() -> None:
        async with receive:
            async for _ in receive:
                pass

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        async with send:
            for event in events:
                await send.send(event)
    return N / (time.perf_counter() - start)


def contender(name: str) -> float:
    if name == "anyio_stream":
        return anyio.run(_anyio_stream)
    if name == "anyio_stream_task":
        return anyio.run(_anyio_stream_task)
    return anyio.run(_bus, name)


def main() -> None:
    if serve_contender(lambda name: max(contender(name) for _ in range(3))):
        return
    names = ["anyio_stream_task", "anyio_stream", "publish_many", "publish", "publish_nowait", "publish_thread"]
    rates = run_contenders(__file__, names)
    base = rates["anyio_stream_task"]
    rows = [
        {"what": "anyio stream, consumer task awaiting receive() (baseline)", "value": base, "unit": "events/s"},
        {"what": "anyio stream send_nowait+receive_nowait (ideal)", "value": rates["anyio_stream"], "unit": "events/s"},
        *(
            {
                "what": f"MetricBus.{n.removesuffix('_thread')} -> null sink"
                + (" on its own thread" if n.endswith("_thread") else ""),
                "value": rates[n],
                "unit": "events/s",
                "x_baseline": rates[n] / base,
            }
            for n in names[2:]
        ),
    ]
    write_result("bus", rows)


if __name__ == "__main__":
    main()
