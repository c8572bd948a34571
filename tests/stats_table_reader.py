"""Read back the per-sink stats table as a user reads it: from the text a command printed.

Both layouts of producers/_stats_table.py: a row per sink (wide consoles) and a column per sink
(narrow ones). Counts come back as ints, with the dropped reasons the table lists under the total.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_GAP = re.compile(r"\s{2,}")
_REASON = re.compile(r"^([\d,]+) ([a-z_]+)$")
_CELL = re.compile(r"\S+(?: \S+)*")  # a cell's text: words one space apart
TERMS = ("published", "delivered", "dropped", "reduced", "queued", "in flight", "restarts")


@dataclass
class Row:
    """One sink as the table shows it."""

    name: str  # as printed (the wide layout shows it whole; the narrow one leaves it "")
    state: str
    counts: dict[str, int]
    reasons: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)  # every line of its row (wide layout)

    @property
    def balanced(self) -> bool:
        c = self.counts
        return c["published"] == c["delivered"] + c["dropped"] + c["reduced"] + c["queued"] + c["in flight"]


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def read_wide(text: str) -> list[Row]:
    """The rows of a table with a row per sink (header: sink, state, published, ...)."""
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:3] == ["sink", "state", "published"])
    columns = _GAP.split(lines[head].strip())
    rows: list[Row] = []
    for line in lines[head + 2 :]:
        if not line.strip() or line.startswith("published ="):
            break
        fields = _GAP.split(line.strip())
        if len(fields) >= len(TERMS) + 2 and not line.startswith("  "):
            values = dict(zip(columns, fields, strict=False))
            rows.append(Row(values["sink"], values["state"], {t: _int(values[t]) for t in TERMS}, lines=[line]))
            continue
        rows[-1].lines.append(line)
        for part in fields:
            if match := _REASON.match(part):
                rows[-1].reasons[match.group(2)] = _int(match.group(1))
    return rows


def read_narrow(text: str) -> list[Row]:
    """The columns of a table with a column per sink (a row per term), in sink order. The
    numbers are right-aligned: a dropped reason belongs to the column it ends under."""
    by_term: dict[str, list[str]] = {}
    ends: list[int] = []
    reasons: dict[int, dict[str, int]] = {}
    term = ""
    for line in text.splitlines():
        label = line[:12].strip()
        cells = [(m.group(), m.end()) for m in _CELL.finditer(line[12:])]
        if label in ("state", *TERMS):
            term = label
            by_term[term] = [cell for cell, _ in cells]
            ends = ends or [end for _, end in cells]
        elif term == "dropped" and cells and all(_REASON.match(cell) for cell, _ in cells):
            for cell, end in cells:
                match = _REASON.match(cell)
                assert match is not None
                reasons.setdefault(ends.index(end), {})[match.group(2)] = _int(match.group(1))
        elif term != "state":  # "down for ..." continues the state row
            term = ""
    return [
        Row("", by_term["state"][i], {t: _int(by_term[t][i]) for t in TERMS}, reasons.get(i, {}))
        for i in range(len(by_term["published"]))
    ]
