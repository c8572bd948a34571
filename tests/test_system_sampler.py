"""SystemSampler: plausible CPU and memory numbers, sampled on the bus, stopped with it."""

from __future__ import annotations

import logging
import os

import psutil
import pytest

from bus import InvalidConfig, MetricBus, Metrics, Origin
from producers import MetricLogger, SystemSampler
from sinks import MemorySink
from tests.helpers import wait_until, wait_until_sync

pytestmark = pytest.mark.anyio


def nvidia_gpus() -> int:
    """How many GPUs NVML sees here (0 without the library, the driver or a device)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


async def test_samples_are_plausible_carry_the_origin_and_stop_with_the_bus() -> None:
    sink = MemorySink()
    sampler = SystemSampler(every=0.05, origin=Origin(node="worker-1"), gpu=False)
    async with MetricBus() as bus:
        bus.add_sink(sink, max_interval=0.01)
        bus.add_producer(sampler)
        await wait_until(lambda: len(sink.events) >= 3, within=15)
        assert sampler.running
    assert not sampler.running  # cancelled when the bus closed
    samples = [e for e in sink.events if isinstance(e, Metrics)]
    assert [e.step for e in samples] == list(range(len(samples)))
    assert sampler.samples == len(samples)  # every sample taken reached the sink
    own_rss = psutil.Process().memory_info().rss / 2**20
    for e in samples:
        assert e.origin == Origin(node="worker-1")
        assert 0 <= e.values["system/cpu_percent"] <= 100 * (os.cpu_count() or 1)
        assert 0.5 * own_rss < e.values["system/rss_mb"] < 2 * own_rss
        assert 0 < e.values["system/memory_percent"] <= 100
        assert not any(k.startswith("system/gpu") for k in e.values)  # gpu=False


async def test_gpu_metrics_where_there_is_a_gpu_else_one_notice(caplog: pytest.LogCaptureFixture) -> None:
    gpus = nvidia_gpus()
    sink = MemorySink()
    with caplog.at_level(logging.INFO, logger="metricbus"):
        async with MetricBus() as bus:
            bus.add_sink(sink, max_interval=0.01)
            bus.add_producer(SystemSampler(every=0.05))
            await wait_until(lambda: len(sink.events) >= 3, within=15)
    notices = [r for r in caplog.records if r.getMessage().startswith("SystemSampler:")]
    samples = [e for e in sink.events if isinstance(e, Metrics)]
    if gpus:
        assert notices == []
        for e in samples:
            for i in range(gpus):
                assert 0 <= e.values[f"system/gpu{i}/util_percent"] <= 100
                assert e.values[f"system/gpu{i}/memory_used_mb"] > 0
    else:
        assert len(notices) == 1  # said once, however many samples followed
        assert all("system/rss_mb" in e.values and not any("gpu" in k for k in e.values) for e in samples)


def test_attach_to_a_logger_uses_its_origin_and_stops_at_close() -> None:
    sink = MemorySink()
    with MetricLogger(sinks=[sink], origin=Origin(site="site-a", rank=1)) as log:
        sampler = SystemSampler.attach(log, every=0.02, gpu=False)
        for step in range(100):  # the training loop logs as usual meanwhile
            log.scalar("loss", 1.0 / (step + 1), step=step)
        wait_until_sync(lambda: sampler.samples >= 2)
    assert not sampler.running
    samples = [e for e in sink.events if isinstance(e, Metrics)]
    assert len(samples) == sampler.samples >= 2
    assert {e.origin.label for e in samples} == {"site-a/rank1"}


@pytest.mark.parametrize("every", [0, -1.0, True, "5"])
def test_the_interval_must_be_a_positive_number(every: object) -> None:
    with pytest.raises(InvalidConfig):
        SystemSampler(every=every)  # type: ignore[arg-type]
