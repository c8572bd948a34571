"""SystemSampler: CPU, memory and (where present) NVIDIA GPU metrics, sampled on the bus.

A producer task (`bus.add_producer(SystemSampler())` or `log.add_producer(...)`): it samples
every `every` seconds on the bus's own thread, so the training thread pays nothing, and stops
when the bus closes. GPU metrics come from NVML (`pip install 'metricbus[gpu]'`); without an
NVIDIA GPU it says so once and samples the rest.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio

from bus import DEFAULT_ORIGIN, InvalidConfig, MetricBus, Metrics, Origin

__all__ = ["SystemSampler"]

log = logging.getLogger("metricbus")


class SystemSampler:
    """Publishes `system/cpu_percent`, `system/rss_mb`, `system/memory_percent` and, per GPU i,
    `system/gpu{i}/util_percent` and `system/gpu{i}/memory_used_mb` as one Metrics event per
    sample; the step is the sample's number."""

    def __init__(self, every: float = 5.0, *, origin: Origin = DEFAULT_ORIGIN, gpu: bool = True) -> None:
        if not every > 0:
            raise InvalidConfig(f"every must be a positive number of seconds, got {every!r}")
        self.every = every
        self.origin = origin
        self.gpu = gpu
        self.samples = 0

    async def __call__(self, bus: MetricBus) -> None:
        import psutil

        process = psutil.Process()
        process.cpu_percent(None)  # the first reading only starts the measurement
        gpus = _open_nvml() if self.gpu else []
        try:
            while True:
                await anyio.sleep(self.every)
                values = {
                    "system/cpu_percent": process.cpu_percent(None),
                    "system/rss_mb": process.memory_info().rss / 2**20,
                    "system/memory_percent": psutil.virtual_memory().percent,
                }
                values.update(_gpu_values(gpus))
                await bus.publish(Metrics(values, self.samples, origin=self.origin))
                self.samples += 1
        finally:
            if gpus:
                import pynvml

                pynvml.nvmlShutdown()


def _open_nvml() -> list[Any]:
    try:
        import pynvml

        pynvml.nvmlInit()
        return [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception as exc:  # no driver, no library, no device: all mean "no GPU metrics"
        log.info("SystemSampler: no NVIDIA GPU metrics (%s); sampling CPU and memory only", exc)
        return []


def _gpu_values(gpus: list[Any]) -> dict[str, float]:
    if not gpus:
        return {}
    import pynvml

    values: dict[str, float] = {}
    for i, handle in enumerate(gpus):
        util = pynvml.nvmlDeviceGetUtilizationRates(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        values[f"system/gpu{i}/util_percent"] = float(util.gpu)
        values[f"system/gpu{i}/memory_used_mb"] = memory.used / 2**20
    return values
