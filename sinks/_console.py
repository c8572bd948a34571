"""ConsoleSink: a live progress line on a terminal, plain summary lines elsewhere (CI logs).

It is a sink like any other, so printing never slows the training loop. On a terminal it draws a
rich progress bar whose text holds the latest values; rich's refresh thread is off (the bar is
redrawn once per batch), so nothing wakes up to take the GIL. When the stream is not a terminal it
prints one line every `every` seconds (and a last one at close).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Literal, TextIO

from bus import Event, Metrics, Scalar, Sink

__all__ = ["ConsoleSink"]


def _fmt(value: float) -> str:
    return f"{value:.4g}"


class ConsoleSink(Sink):
    """Shows chosen metrics (`metrics`, default: every metric seen) as they arrive.

    total: the number of steps, for a progress bar with an ETA (terminal only).
    every: seconds between summary lines when the stream is not a terminal.
    file:  where to write (default: stderr); force_terminal overrides the terminal detection.
    """

    accepts = (Scalar, Metrics)
    isolation: ClassVar[Literal["none", "process"]] = "none"  # it writes to this process's terminal

    def __init__(
        self,
        metrics: Iterable[str] | None = None,
        *,
        total: int | None = None,
        every: float = 10.0,
        file: TextIO | None = None,
        force_terminal: bool | None = None,
        description: str = "training",
    ) -> None:
        self.metrics = None if metrics is None else list(metrics)
        self.total = total
        self.every = every
        self.file = file
        self.force_terminal = force_terminal
        self.description = description
        self.latest: dict[str, float] = {}
        self.step = -1
        self._progress: Any = None
        self._task: Any = None
        self._last_line = 0.0

    @property
    def name(self) -> str:
        return "console"

    @property
    def _stream(self) -> TextIO:
        return self.file if self.file is not None else sys.stderr

    async def open(self) -> None:
        interactive = self.force_terminal if self.force_terminal is not None else self._stream.isatty()
        if interactive:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(file=self._stream, force_terminal=True)
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[values]}"),
                console=console,
                auto_refresh=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.description, total=self.total, values="")
        self._last_line = time.monotonic()

    async def write_batch(self, events: Sequence[Event]) -> None:
        for event in events:
            if isinstance(event, Scalar):
                self._take(event.name, event.value)
            else:
                for name, value in event.values.items():  # type: ignore[union-attr]
                    self._take(name, value)
            self.step = max(self.step, event.step)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.step + 1, values=self.summary())
            self._progress.refresh()
        elif time.monotonic() - self._last_line >= self.every:
            self._line()

    async def close(self) -> None:
        if self._progress is not None:
            self._progress.update(self._task, values=self.summary())
            self._progress.refresh()
            self._progress.stop()
            self._progress = None
        elif self.step >= 0:
            self._line()

    def summary(self) -> str:
        """The latest values as `name=value` pairs, in the order chosen (or first seen)."""
        names = self.metrics if self.metrics is not None else list(self.latest)
        return "  ".join(f"{n}={_fmt(self.latest[n])}" for n in names if n in self.latest)

    def _take(self, name: str, value: float) -> None:
        if self.metrics is None or name in self.metrics:
            self.latest[name] = value

    def _line(self) -> None:
        total = f"/{self.total}" if self.total else ""
        print(f"{self.description} step {self.step}{total} | {self.summary()}", file=self._stream, flush=True)
        self._last_line = time.monotonic()
