"""SystemSampler: CPU, memory and (where present) NVIDIA GPU metrics, sampled on the bus.

A producer task (`bus.add_producer(SystemSampler())`, `log.add_producer(...)`, or
`SystemSampler.attach(log)`): it samples every `every` seconds on the bus's own thread, so the
training thread pays nothing, and it is cancelled when the bus closes. GPU metrics come from NVML
(`pip install 'metricbus[gpu]'`); without an NVIDIA GPU it says so once and samples the rest.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import anyio

from bus import DEFAULT_ORIGIN, InvalidConfig, MetricBus, Metrics, Origin

if TYPE_CHECKING:
    from ._logger import MetricLogger

__all__ = ["SystemSampler"]

log = logging.getLogger("metricbus")


class SystemSampler:
    """Publishes one Metrics event per sample, at step = the sample's number (0, 1, ...):

    system/cpu_percent      this process's CPU use (100 = one core busy; up to 100 * cores)
    system/rss_mb           this process's resident memory, MiB
    system/memory_percent   the machine's memory in use, %
    system/gpu{i}/util_percent, system/gpu{i}/memory_used_mb   per NVIDIA GPU i, when present
    """

    def __init__(self, every: float = 5.0, *, origin: Origin = DEFAULT_ORIGIN, gpu: bool = True) -> None:
        if isinstance(every, bool) or not isinstance(every, int | float) or not every > 0:
            raise InvalidConfig(f"every must be a positive number of seconds, got {every!r}")
        if type(origin) is not Origin:
            raise InvalidConfig(f"origin must be an Origin, got {type(origin).__name__}")
        self.every = float(every)
        self.origin = origin
        self.gpu = gpu
        self.samples = 0  # published so far
        self.running = False  # True while its task runs on a bus

    @classmethod
    def attach(cls, logger: MetricLogger, every: float = 5.0, *, gpu: bool = True) -> SystemSampler:
        """Start a sampler on `logger`'s bus that tags its samples with the logger's origin."""
        sampler = cls(every, origin=logger.origin, gpu=gpu)
        logger.add_producer(sampler)
        return sampler

    async def __call__(self, bus: MetricBus) -> None:
        import psutil

        process = psutil.Process()
        process.cpu_percent(None)  # the first reading only starts the measurement
        gpus = _open_nvml() if self.gpu else []
        self.running = True
        try:
            while True:
                await anyio.sleep(self.every)
                values = {
                    "system/cpu_percent": process.cpu_percent(None),
                    "system/rss_mb": process.memory_info().rss / 2**20,
                    "system/memory_percent": psutil.virtual_memory().percent,
                }
                if gpus:
                    gpus = _gpu_values(gpus, values)
                await bus.publish(Metrics(values, self.samples, origin=self.origin))
                self.samples += 1
        finally:
            self.running = False
            if gpus:
                _close_nvml()


def _open_nvml() -> list[Any]:
    """NVML handles of every GPU, or [] (after saying why, once) when there are none to read."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except ImportError:
        log.info("SystemSampler: nvidia-ml-py is not installed; sampling CPU and memory only")
        return []
    except Exception as exc:  # NVMLError_* subclasses: no driver, no library, no device
        log.info("SystemSampler: no NVIDIA GPU metrics (%s); sampling CPU and memory only", exc)
        return []
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    if not handles:
        log.info("SystemSampler: NVML found no NVIDIA GPU; sampling CPU and memory only")
        pynvml.nvmlShutdown()
    return handles


def _gpu_values(gpus: list[Any], values: dict[str, float]) -> list[Any]:
    """Add each GPU's utilisation and memory to `values`. Returns the handles to use next time:
    [] once NVML fails (a GPU fell off the bus), so one bad reading does not stop CPU sampling."""
    import pynvml

    try:
        for i, handle in enumerate(gpus):
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            values[f"system/gpu{i}/util_percent"] = float(util.gpu)
            values[f"system/gpu{i}/memory_used_mb"] = memory.used / 2**20
    except pynvml.NVMLError as exc:
        log.warning("SystemSampler: reading the GPUs failed (%s); sampling CPU and memory only from now on", exc)
        for key in [k for k in values if k.startswith("system/gpu")]:
            del values[key]
        _close_nvml()
        return []
    return gpus


def _close_nvml() -> None:
    import pynvml

    with contextlib.suppress(pynvml.NVMLError):  # already shut down, or the driver is gone
        pynvml.nvmlShutdown()
