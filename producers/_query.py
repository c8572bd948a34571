"""`metricbus query RUN "SELECT ..."`: SQL over a ParquetSink run directory, from the shell.

DuckDB (the `query` extra) reads every part of the run, also while it is being written, as the
view `metrics` (the schema of sinks/_parquet.py); the result is printed as a rich table:

    metricbus query runs/exp1 "SELECT name, max(step), avg(value) FROM metrics GROUP BY name"
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from bus import InvalidConfig

__all__ = ["VIEW", "query_command", "run_query"]

#: The name the run's rows go by in a query.
VIEW = "metrics"


def run_query(run: Path, sql: str, *, max_rows: int = 100) -> tuple[list[str], list[tuple[Any, ...]], bool]:
    """The columns and first `max_rows` rows of `sql` over the run directory `run` (its parts as
    the view `metrics`), and whether there were more. InvalidConfig for a run that is not one or
    a missing duckdb; duckdb.Error for a query DuckDB refuses."""
    if isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1:
        raise InvalidConfig(f"max_rows must be an int >= 1, got {max_rows!r}")
    try:
        import duckdb
    except ImportError:
        raise InvalidConfig("metricbus query needs duckdb: pip install 'metricbus[query]'") from None
    if not run.is_dir():
        raise InvalidConfig(f"{run} is not a directory (a ParquetSink's run_dir)")
    if not any(run.rglob("*.parquet")):
        raise InvalidConfig(f"{run} holds no Parquet part yet (*.parquet)")
    pattern = (run / "**" / "*.parquet").as_posix().replace("'", "''")
    with duckdb.connect() as con:
        con.execute(f"CREATE VIEW {VIEW} AS SELECT * FROM read_parquet('{pattern}')")
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchmany(max_rows + 1) if columns else []
    return columns, rows[:max_rows], len(rows) > max_rows


def query_command(
    run: Path, sql: str, *, max_rows: int = 100, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Print the result of `sql` over `run` as a table on `out`; a refused query on `err`, exit 1."""
    import duckdb

    out, err = out or sys.stdout, err or sys.stderr
    try:
        columns, rows, more = run_query(run, sql, max_rows=max_rows)
    except duckdb.Error as exc:
        err.write(f"metricbus query: {exc}\n")
        return 1
    table = Table(*columns, caption=f"first {max_rows:,} rows shown" if more else None)
    for row in rows:
        table.add_row(*(_cell(value) for value in row))
    Console(file=out, width=max(100, Console(file=out).width)).print(table)
    return 0


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return str(value)
