"""CsvSink: metrics as CSV through aiofiles, in a long or a wide layout.

long: one row per value            wall_time,origin,step,name,value,epoch,round,task
wide: one row per (origin, step)   wall_time,origin,step,<one column per metric name>

Values are written with repr(), so every float round-trips exactly and NaN/±inf read back as
'nan'/'inf'/'-inf' (float() parses them). Names with commas, quotes or newlines are quoted by the
csv module. In the wide layout a metric name that appears later adds a column: the file is
rewritten once for that (to a temporary file, then renamed), never on every step.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiofiles
import anyio
from aiofiles.threadpool.text import AsyncTextIOWrapper

from bus import Event, InvalidConfig, Metrics, Scalar, Sink

__all__ = ["CsvSink"]

LONG_HEADER = ("wall_time", "origin", "step", "name", "value", "epoch", "round", "task")
WIDE_FIXED = ("wall_time", "origin", "step")


def _context_cells(event: Event) -> tuple[Any, Any, Any]:
    ctx = event.context
    assert ctx is not None
    return (
        "" if ctx.epoch is None else ctx.epoch,
        "" if ctx.round is None else ctx.round,
        "" if ctx.task is None else ctx.task,
    )


def long_rows(events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """The long-layout rows of a batch of Scalar/Metrics events."""
    rows: list[tuple[Any, ...]] = []
    append = rows.append
    labels: dict[int, str] = {}  # origins repeat within a batch: compute each label once
    no_context = ("", "", "")
    for event in events:
        ctx = no_context if event.context is None else _context_cells(event)
        origin = event.origin
        label = labels.get(id(origin))
        if label is None:
            label = labels[id(origin)] = origin.label
        if type(event) is Scalar:
            append((event.wall_time, label, event.step, event.name, event.value, *ctx))
        elif type(event) is Metrics:
            head = (event.wall_time, label, event.step)
            for name, value in event.values.items():
                append((*head, name, value, *ctx))
    return rows


class _WideTable:
    """Rows being assembled for the wide layout: one open row per origin until its step moves."""

    def __init__(self, columns: Sequence[str] = ()) -> None:
        self.columns: list[str] = list(columns)
        self.index = {name: i for i, name in enumerate(self.columns)}
        self.open: dict[str, tuple[int, float, dict[str, float]]] = {}
        self.grew = False

    def add(self, event: Event, done: list[tuple[str, int, float, dict[str, float]]]) -> None:
        if type(event) is Scalar:
            values = {event.name: event.value}
        elif type(event) is Metrics:
            values = event.values
        else:
            return
        label = event.origin.label
        current = self.open.get(label)
        if current is not None and current[0] != event.step:
            done.append((label, *current))
            current = None
        if current is None:
            current = self.open[label] = (event.step, event.wall_time, {})
        current[2].update(values)
        for name in values:
            if name not in self.index:
                self.index[name] = len(self.columns)
                self.columns.append(name)
                self.grew = True

    def close_all(self, done: list[tuple[str, int, float, dict[str, float]]]) -> None:
        done.extend((label, *row) for label, row in self.open.items())
        self.open.clear()

    def row(self, label: str, step: int, wall_time: float, values: dict[str, float]) -> list[Any]:
        cells: list[Any] = [wall_time, label, step] + [""] * len(self.columns)
        for name, value in values.items():
            cells[3 + self.index[name]] = value
        return cells


class CsvSink(Sink):
    """Writes Scalar and Metrics events to a CSV file (appending if it exists).

    layout="long" (default) writes one row per value and suits any number of metrics;
    layout="wide" writes one row per (origin, step), one column per metric, like a spreadsheet.
    """

    accepts = (Scalar, Metrics)

    def __init__(self, path: str | Path, *, layout: Literal["long", "wide"] = "long") -> None:
        if layout not in ("long", "wide"):
            raise InvalidConfig(f"layout must be 'long' or 'wide', got {layout!r}")
        self.path = Path(path)
        self.layout = layout
        self._file: AsyncTextIOWrapper | None = None
        self._wide = _WideTable()

    @property
    def name(self) -> str:
        return f"csv:{self.path.name}"

    async def open(self) -> None:
        header = await anyio.to_thread.run_sync(self._existing_header)
        if self.layout == "long":
            if header is not None and tuple(header) != LONG_HEADER:
                raise InvalidConfig(f"{self.path} exists with another header: {header}")
        elif header is not None:
            if tuple(header[:3]) != WIDE_FIXED:
                raise InvalidConfig(f"{self.path} exists and is not a wide metricbus CSV: {header[:3]}")
            self._wide = _WideTable(header[3:])
        self._file = await aiofiles.open(self.path, "a", newline="", encoding="utf-8")
        if header is None:
            await self._write_rows([LONG_HEADER if self.layout == "long" else WIDE_FIXED])

    def _existing_header(self) -> list[str] | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or self.path.stat().st_size == 0:
            return None
        with open(self.path, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), None)

    async def write_batch(self, events: Sequence[Event]) -> None:
        if self.layout == "long":
            await self._write_rows(long_rows(events))
        else:
            await self._write_wide(events, close_rows=False)

    async def flush(self) -> None:
        if self.layout == "wide":
            await self._write_wide((), close_rows=True)
        elif self._file is not None:
            await self._file.flush()

    async def close(self) -> None:
        await self.flush()
        if self._file is not None:
            await self._file.close()
            self._file = None

    async def _write_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        assert self._file is not None
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        await self._file.write(buffer.getvalue())
        await self._file.flush()  # to the OS each batch: a kill -9 loses at most one interval

    async def _write_wide(self, events: Sequence[Event], *, close_rows: bool) -> None:
        table = self._wide
        done: list[tuple[str, int, float, dict[str, float]]] = []
        for event in events:
            table.add(event, done)
        if close_rows:
            table.close_all(done)
        if table.grew:
            await self._widen()
        if done:
            await self._write_rows([table.row(*row) for row in done])

    async def _widen(self) -> None:
        """Rewrite the file once with the grown header: earlier rows get empty new cells."""
        assert self._file is not None
        await self._file.close()
        header = [*WIDE_FIXED, *self._wide.columns]
        await anyio.to_thread.run_sync(_rewrite_with_header, self.path, header)
        self._wide.grew = False
        self._file = await aiofiles.open(self.path, "a", newline="", encoding="utf-8")

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "layout": self.layout, "_file": None, "_wide": _WideTable()}


def _rewrite_with_header(path: Path, header: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(path, newline="", encoding="utf-8") as src, open(tmp, "w", newline="", encoding="utf-8") as dst:
        reader = csv.reader(src)
        writer = csv.writer(dst)
        next(reader, None)
        writer.writerow(header)
        width = len(header)
        for row in reader:
            writer.writerow(row + [""] * (width - len(row)))
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
