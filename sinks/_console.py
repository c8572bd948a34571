"""ConsoleSink: a live progress bar on a terminal, plain summary lines elsewhere (CI logs).

It is a sink like any other, so printing never slows the training loop. On a terminal it draws a
rich progress bar whose text holds the latest values; rich's refresh thread is off (the bar is
redrawn once per batch), so nothing wakes up to take the GIL. When the stream is not a terminal it
prints one plain line (no control codes) every `every` seconds and/or every `every_steps` steps,
and a last one at close.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TextIO

from bus import Event, InvalidConfig, Metrics, Scalar, Sink, metric_items

__all__ = ["ConsoleSink"]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class ConsoleSink(Sink):
    """Shows chosen metrics (`metrics`, default: every metric seen) as they arrive.

    total:          the number of steps, for a progress bar with an ETA (terminal only).
    every:          seconds between plain lines (None: no time-based lines).
    every_steps:    a plain line whenever the step reaches a new multiple of it (None: off).
    file:           where to write (default: sys.stderr, as tqdm does).
    force_terminal: True/False overrides the `file.isatty()` detection.
    """

    accepts = (Scalar, Metrics)
    isolation: ClassVar[Literal["none", "host", "process"]] = "none"  # it writes to this process's terminal

    def __init__(
        self,
        metrics: Iterable[str] | None = None,
        *,
        total: int | None = None,
        every: float | None = 10.0,
        every_steps: int | None = None,
        file: TextIO | None = None,
        force_terminal: bool | None = None,
        description: str = "training",
    ) -> None:
        if every is not None and not every >= 0:
            raise InvalidConfig(f"every must be a number of seconds >= 0 or None, got {every!r}")
        if every_steps is not None and (type(every_steps) is not int or every_steps < 1):
            raise InvalidConfig(f"every_steps must be an int >= 1 or None, got {every_steps!r}")
        if total is not None and (type(total) is not int or total < 1):
            raise InvalidConfig(f"total must be an int >= 1 or None, got {total!r}")
        self.metrics = None if metrics is None else list(metrics)
        self.total = total
        self.every = every
        self.every_steps = every_steps
        self.file = file
        self.force_terminal = force_terminal
        self.description = description
        self.latest: dict[str, float] = {}
        self.step = -1
        self._progress: Any = None
        self._task: Any = None
        self._line_time = 0.0
        self._line_step = -1
        self._unshown = False  # values arrived since the last plain line

    @property
    def name(self) -> str:
        return "console"

    @property
    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        """Whether this sink draws a live bar (a terminal) rather than plain lines."""
        return self.force_terminal if self.force_terminal is not None else self._stream.isatty()

    async def open(self) -> None:
        if self.interactive:
            self._start_bar()
        self._line_time = time.monotonic()

    async def write_batch(self, events: Sequence[Event]) -> None:
        for event in events:
            for name, value in metric_items(event):
                self._take(name, value)
            self.step = max(self.step, event.step)
        self._unshown = True
        if self._progress is not None:
            self._progress.update(self._task, completed=self.step + 1, values=self.summary())
            self._progress.refresh()
        elif self._line_due():
            self._line()

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, values=self.summary())
            self._progress.refresh()
            self._progress.stop()
            self._progress = None
        elif self._unshown:
            self._line()

    def summary(self) -> str:
        """The latest values as `name=value` pairs, in the order chosen (or first seen)."""
        names = self.metrics if self.metrics is not None else list(self.latest)
        return "  ".join(f"{n}={_fmt(self.latest[n])}" for n in names if n in self.latest)

    def _take(self, name: str, value: float) -> None:
        if self.metrics is None or name in self.metrics:
            self.latest[name] = value

    def _line_due(self) -> bool:
        if self.every is not None and time.monotonic() - self._line_time >= self.every:
            return True
        n = self.every_steps
        return n is not None and self.step // n > self._line_step // n

    def _line(self) -> None:
        total = f"/{self.total}" if self.total else ""
        print(f"{self.description} step {self.step}{total} | {self.summary()}", file=self._stream, flush=True)
        self._line_time = time.monotonic()
        self._line_step = self.step
        self._unshown = False

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[values]}"),
            console=Console(file=self._stream, force_terminal=True),
            auto_refresh=False,  # no refresh thread: redrawn once per batch, from the bus thread
        )
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.total, values="")
