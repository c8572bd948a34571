"""What every framework adapter needs: a logger of its own or the user's, and flat hparams."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bus import DEFAULT_ORIGIN, InvalidConfig, Origin, Sink

from .._logger import MetricLogger

__all__ = ["LoggerHandle", "flatten", "numeric"]


class LoggerHandle:
    """A MetricLogger passed in by the user (never closed here), or one built from `sinks` on first
    use (closed by `close()`), so an adapter on a rank that never logs starts nothing."""

    def __init__(self, sinks: Iterable[Sink], logger: MetricLogger | None, origin: Origin = DEFAULT_ORIGIN) -> None:
        self._sinks = list(sinks)
        if logger is not None and self._sinks:
            raise InvalidConfig("pass either sinks=... or logger=..., not both")
        self._logger = logger
        self._owned = logger is None
        self.origin = origin

    @property
    def logger(self) -> MetricLogger:
        if self._logger is None:
            self._logger = MetricLogger(sinks=self._sinks, origin=self.origin)
        return self._logger

    def close(self) -> None:
        """Close the logger if this handle built it, else only flush it."""
        if self._logger is None:
            return
        if self._owned:
            self._logger.close()
        else:
            self._logger.flush()


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as 'a/b' keys; lists and other values as they are (Hparams stringifies)."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The entries that are numbers (floats, ints, numpy/torch scalars); strings etc. are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, (bool, str, bytes)):
            continue
        if getattr(value, "ndim", 0) != 0:
            continue
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
