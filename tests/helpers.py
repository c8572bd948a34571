"""Test sinks with controllable behaviour, and condition waits with deadlines (never bare sleeps)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from bus import Event, Sink


async def wait_until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Yield to the loop until `condition()` holds; fail the test after `within` seconds."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 - a condition on plain state, not an event
            await anyio.sleep(0.001)


def wait_until_sync(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(0.001)


class GatedSink(Sink):
    """Blocks inside write_batch until `gate` is set; `entered` is set when a batch arrives.

    Both are threading.Events: a sink runs on its own thread, so the test sets and checks them
    across threads (`await wait_until(sink.entered.is_set)`)."""

    def __init__(self, name: str = "gated") -> None:
        self._name = name
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.events: list[Event] = []

    @property
    def name(self) -> str:
        return self._name

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.entered.set()
        self.gate.wait()  # blocking is fine: the sink has its own thread
        self.events.extend(events)


class FlakySink(Sink):
    """Fails the first `failures` attempts of every batch, then stores it."""

    def __init__(self, failures: int = 2, name: str = "flaky") -> None:
        self._name = name
        self.failures = failures
        self.attempts = 0
        self._failed_this_batch = 0
        self.events: list[Event] = []

    @property
    def name(self) -> str:
        return self._name

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.attempts += 1
        if self._failed_this_batch < self.failures:
            self._failed_this_batch += 1
            raise OSError("disk hiccup")
        self._failed_this_batch = 0
        self.events.extend(events)


class BrokenSink(Sink):
    """Every write fails."""

    def __init__(self, name: str = "broken") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def write_batch(self, events: Sequence[Event]) -> None:
        raise RuntimeError("remote is down")


class HangingSink(Sink):
    """Never returns from write_batch."""

    def __init__(self, name: str = "hanging") -> None:
        self._name = name
        self.entered = threading.Event()

    @property
    def name(self) -> str:
        return self._name

    async def write_batch(self, events: Sequence[Event]) -> None:
        self.entered.set()
        await anyio.sleep_forever()


def normalized(value: Any) -> Any:
    """Builtins with NaN replaced by a marker, so events with NaN compare equal."""
    import msgspec

    if isinstance(value, msgspec.Struct):
        value = msgspec.to_builtins(value)
    if isinstance(value, float) and math.isnan(value):
        return "<nan>"
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalized(v) for v in value]
    return value
