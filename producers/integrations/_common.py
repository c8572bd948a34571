"""What every framework adapter needs: a logger of its own or the user's, and flat hparams."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bus import Context, Hparams, InvalidConfig, InvalidEvent, Metrics, Origin, Scalar, Sink, as_value
from bus.hosts import job_from_env

from .._logger import MetricLogger

__all__ = ["LoggerHandle", "flatten", "numeric"]


class LoggerHandle:
    """A MetricLogger passed in by the user (only ever flushed here), or one built from `sinks` on
    first use (closed by `close()`), so an adapter on a rank that never logs starts nothing."""

    def __init__(self, sinks: Iterable[Sink], logger: MetricLogger | None, origin: Origin | None = None) -> None:
        self._sinks = list(sinks)
        if logger is not None and self._sinks:
            raise InvalidConfig("pass either sinks=[...] or logger=..., not both")
        if logger is None and not self._sinks:
            raise InvalidConfig("pass sinks=[...] (this adapter builds its own logger) or logger=a MetricLogger")
        if origin is not None and not isinstance(origin, Origin):
            raise InvalidConfig(f"origin must be an Origin, got {type(origin).__name__}")
        self._logger = logger
        self._owned = logger is None
        self._origin = origin

    @property
    def origin(self) -> Origin:
        """The origin of the adapter's events: the one given, else the logger's own."""
        if self._origin is not None:
            return self._origin
        return self._logger.origin if self._logger is not None else Origin()

    @origin.setter
    def origin(self, origin: Origin) -> None:
        self._origin = origin

    def in_job(self) -> bool:
        """True when the logger is a rank of a job (`MetricLogger.job`): the one given, or the one
        this handle would build in this process's environment (without building it)."""
        if self._logger is not None:
            return self._logger.job is not None
        return job_from_env(None) is not None

    @property
    def logger(self) -> MetricLogger:
        """The logger in use; built now (and its sinks opened) if there is none."""
        if self._logger is None:
            # Not uvloop: frameworks reset every signal handler when a stage ends (Lightning's
            # signal connector re-installs SIG_DFL for SIGCHLD), which silences uvloop's child
            # watching and leaves a process-isolated sink's worker unreaped at close. asyncio's
            # waitpid thread needs no signal.
            self._logger = MetricLogger(sinks=self._sinks, origin=self.origin, use_uvloop=False)
        return self._logger

    def scalars(self, values: Mapping[str, float], step: int, context: Context | None = None) -> None:
        """Publish `values` at `step` as one Metrics event with this adapter's origin."""
        logger = self.logger
        ctx = context if context is not None else logger.context
        logger.publish(Metrics(dict(values), step, origin=self.origin, context=ctx))

    def scalar(self, name: str, value: float, step: int, context: Context | None = None) -> None:
        """Publish one value with this adapter's origin."""
        logger = self.logger
        ctx = context if context is not None else logger.context
        logger.publish(Scalar(name, value, step, origin=self.origin, context=ctx))

    def hparams(self, params: Mapping[str, Any]) -> None:
        """Publish nested `params` as one flat Hparams event with this adapter's origin."""
        logger = self.logger
        logger.publish(Hparams(flatten(params), origin=self.origin, context=logger.context))

    def flush(self) -> None:
        """Block until everything logged so far is written; nothing to do if nothing started."""
        if self._logger is not None:
            self._logger.flush()

    def close(self) -> None:
        """Close the logger if this handle built it, else only flush it.

        A built logger is forgotten once closed: frameworks end a stage (fit, train) and may start
        another (test, evaluate) with the same callback, which then opens a fresh logger over the
        same sinks (files are appended to, TensorBoard adds an event file to the same run, W&B
        and MLflow continue the same runs).
        """
        if self._logger is None:
            return
        if self._owned:
            logger, self._logger = self._logger, None
            logger.close()
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
        try:
            out[key] = as_value(value, key)  # the bus's own rules: one-element tensors yes, bools no
        except InvalidEvent:
            continue
    return out
