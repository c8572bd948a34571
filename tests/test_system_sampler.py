"""SystemSampler: plausible CPU and memory numbers, sampled on the bus, stopped with it."""

from __future__ import annotations

import os

import psutil
import pytest

from bus import InvalidConfig, MetricBus, Metrics, Origin
from producers import SystemSampler
from sinks import MemorySink
from tests.helpers import wait_until

pytestmark = pytest.mark.anyio


async def test_samples_are_plausible_and_carry_the_origin() -> None:
    sink = MemorySink()
    sampler = SystemSampler(every=0.05, origin=Origin(node="worker-1"))
    async with MetricBus() as bus:
        bus.add_sink(sink, max_interval=0.01)
        bus.add_producer(sampler)
        await wait_until(lambda: len(sink.events) >= 3, within=20)
    samples = [e for e in sink.events if isinstance(e, Metrics)]
    assert [e.step for e in samples] == list(range(len(samples)))
    own_rss = psutil.Process().memory_info().rss / 2**20
    for e in samples:
        assert e.origin.label == "worker-1"
        assert 0 <= e.values["system/cpu_percent"] <= 100 * (os.cpu_count() or 1)
        assert 0.5 * own_rss < e.values["system/rss_mb"] < 2 * own_rss
        assert 0 < e.values["system/memory_percent"] <= 100
    assert sampler.samples == len(samples)  # nothing sampled after the bus closed


def test_the_interval_must_be_positive() -> None:
    with pytest.raises(InvalidConfig):
        SystemSampler(every=0)
