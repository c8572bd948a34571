"""The per-sink stats table: the one rendering of `SinkStats` that every command prints (`metricbus
demo`, `metricbus replay`, `metricbus aggregate`) and a MetricLogger's summary uses.

Every sink shows its whole balance,

    published = delivered + dropped (by reason) + reduced + queued + in flight,

with its restarts, its state and where it runs; how long it has been down, the bytes in its
spool and its lag are shown when some sink has them, its last error and where what it missed was
saved when some sink has one. A sink whose counters do not balance is marked. Sink names are
shown whole (folded over lines, never cut): they say which file or run the sink writes.

The table has a row per sink where the console is wide enough for it (about 100 columns), and
a column per sink where it is not, so that no number is ever cut to fit.
"""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TextIO

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from bus import SinkState, SinkStats

__all__ = ["BALANCE", "StatsTable", "balance_line", "format_stats", "print_stats", "stats_table"]

#: The identity every sink's numbers satisfy, said under the table.
BALANCE = "published = delivered + dropped + reduced + queued + in flight"

_Cell = Callable[[SinkStats], Text]
_FOLD = 16  # the narrowest a column of text (a sink's name, an error) is folded to
_NUMBER = 11  # the width of a count up to 999 million, with its separators


class StatsTable:
    """A rich renderable of per-sink stats: a row per sink, or a column per sink on a console
    too narrow for that. Build it with `stats_table`."""

    def __init__(self, stats: Mapping[str, SinkStats], *, title: str | None, now: float) -> None:
        self.rows = list(stats.values())
        self.title = title
        self.now = now

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if not self.rows:
            yield Text(f"{self.title}: no sinks" if self.title else "no sinks")
        elif _narrowest(console, options, self.by_sink(fold=_FOLD)) <= width:
            yield self.by_sink()
        elif _narrowest(console, options, self.by_term(fold=_NUMBER)) <= width:
            yield self.by_term()
        else:  # too many sinks for this console: one paragraph each, which wraps at any width
            if self.title:
                yield Text(self.title, style="italic")
            for s in self.rows:
                yield Text(balance_line(s, now=self.now))
            yield Text(BALANCE, style="dim")

    def by_sink(self, *, fold: int | None = None) -> Table:
        """A row per sink, a column per term; `fold`: the widest a column of text may be."""
        table = _table(self.title)
        table.add_column("sink", overflow="fold", min_width=_FOLD, max_width=fold)
        for label, _ in self._terms():
            table.add_column(label, no_wrap=True, justify="left" if label == "state" else "right")
        for extra in self._extras():
            table.add_column(extra, overflow="fold", min_width=_FOLD, max_width=fold)
        for s in self.rows:
            table.add_row(_sink_cell(s), *(cell(s) for _, cell in self._terms()), *self._extra_cells(s))
        return table

    def by_term(self, *, fold: int | None = None) -> Table:
        """A column per sink, a row per term: for a narrow console. `fold`: the widest a column may be."""
        table = _table(self.title)
        table.add_column("", no_wrap=True)
        for s in self.rows:
            table.add_column(_sink_cell(s), justify="right", overflow="fold", min_width=_NUMBER, max_width=fold)
        for label, cell in self._terms():
            table.add_row(label, *(cell(s) for s in self.rows))
        for i, extra in enumerate(self._extras()):
            table.add_row(extra, *(self._extra_cells(s)[i] for s in self.rows))
        return table

    def _terms(self) -> Iterator[tuple[str, _Cell]]:
        yield "state", lambda s: _state_cell(s, self.now)
        yield "published", lambda s: _count(s.published)
        yield "delivered", lambda s: _count(s.delivered)
        yield "dropped", _dropped_cell
        yield "reduced", lambda s: _count(s.reduced)
        yield "queued", lambda s: _count(s.queued)
        yield "in flight", lambda s: _count(s.in_flight)
        yield "restarts", lambda s: _count(s.restarts)
        if any(s.spooled_bytes for s in self.rows):
            yield "spooled", lambda s: Text(_bytes(s.spooled_bytes))
        if any(s.lag for s in self.rows):
            yield "lag", lambda s: Text(f"{s.lag:,.1f} s" if s.lag else "0")

    def _extras(self) -> list[str]:
        """Columns of free text, shown when some sink has them."""
        extras = ["last error"] if any(s.last_error for s in self.rows) else []
        return extras + (["saved to"] if any(s.saved_to for s in self.rows) else [])

    def _extra_cells(self, s: SinkStats) -> list[Text]:
        texts = {"last error": Text(s.last_error or "", style="red"), "saved to": Text(s.saved_to or "")}
        return [texts[extra] for extra in self._extras()]


def stats_table(
    stats: Mapping[str, SinkStats], *, title: str | None = "per-sink stats", now: float | None = None
) -> StatsTable:
    """The table of `stats` (see the module docstring), to print on a rich Console. `now`: the
    wall time that "down for" is measured to (default: the current time)."""
    return StatsTable(stats, title=title, now=time.time() if now is None else now)


def print_stats(
    stats: Mapping[str, SinkStats],
    *,
    file: TextIO | None = None,
    title: str | None = "per-sink stats",
    console: Console | None = None,
) -> None:
    """Print the table on `console`, or on `file` (default: stderr, so a script's stdout stays its own)."""
    console = console or Console(file=file or sys.stderr)
    console.print(stats_table(stats, title=title))


def format_stats(stats: Mapping[str, SinkStats], *, title: str | None = "per-sink stats", width: int = 120) -> str:
    """The table as plain text at most `width` columns wide: for a log message or a file."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False).print(stats_table(stats, title=title))
    return out.getvalue()


def balance_line(s: SinkStats, *, now: float | None = None) -> str:
    """One sink's balance on one line, the terms that are 0 left out (delivered always shown):
    'csv:m.csv [open, local]: 1,200 published = 1,100 delivered + 100 queued'."""
    terms = [f"{s.delivered:,} delivered"]
    terms += [f"{n:,} dropped {reason}" for reason, n in sorted(s.dropped.items()) if n]
    held = ((s.reduced, "reduced"), (s.queued, "queued"), (s.in_flight, "in flight"))
    terms += [f"{n:,} {what}" for n, what in held if n]
    extras = [f"{s.restarts:,} restarts"] if s.restarts else []
    if s.spooled_bytes:
        extras.append(f"{_bytes(s.spooled_bytes)} spooled")
    if s.lag:
        extras.append(f"lag {s.lag:,.1f} s")
    if s.down_since is not None:
        extras.append(f"down for {_duration((time.time() if now is None else now) - s.down_since)}")
    if not s.balanced:
        extras.append(f"COUNTERS OFF BY {_unaccounted(s):+,}")
    line = f"{s.name} [{s.state.value}, {s.where}]: {s.published:,} published = {' + '.join(terms)}"
    return line + (f" ({', '.join(extras)})" if extras else "")


# ---- cells ----


def _narrowest(console: Console, options: ConsoleOptions, table: Table) -> int:
    """How wide `table` renders when nothing constrains it (its text columns capped by their max_width)."""
    lines = console.render_lines(table, options.update_width(10_000), pad=False)
    return max(Segment.get_line_length(line) for line in lines)


def _table(title: str | None) -> Table:
    return Table(title=title, caption=BALANCE, box=box.SIMPLE_HEAD, caption_justify="left", pad_edge=False)


def _sink_cell(s: SinkStats) -> Text:
    cell = Text(s.name, style="bold")  # Text, not a str: a name is never read as rich markup
    cell.append(f"\n{s.where}", style="dim")
    if not s.balanced:
        cell.append(f"\ncounters off by {_unaccounted(s):+,}", style="bold red")
    return cell


def _state_cell(s: SinkStats, now: float) -> Text:
    style = {SinkState.FAILED: "bold red", SinkState.DOWN: "yellow"}.get(s.state, "")
    cell = Text(s.state.value, style=style)
    if s.down_since is not None:
        cell.append(f"\nfor {_duration(now - s.down_since)}", style=style)
    return cell


def _dropped_cell(s: SinkStats) -> Text:
    """The total, then one line per reason: 'full' (the policy chose it) dim, any other red."""
    cell = _count(s.dropped_total)
    for reason, n in sorted(s.dropped.items()):
        cell.append(f"\n{n:,} {reason}", style="dim" if reason == "full" else "red")
    return cell


def _count(n: int) -> Text:
    return Text(f"{n:,}")


def _unaccounted(s: SinkStats) -> int:
    return s.published - (s.delivered + s.dropped_total + s.reduced + s.queued + s.in_flight)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n:,} B"
    size = n / 1024
    for unit in ("KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            break
        size /= 1024
    return f"{size:,.1f} {unit}"


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
