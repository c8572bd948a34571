"""Producers: how training code reaches the bus."""

from ._logger import MetricLogger

__all__ = ["MetricLogger"]
