"""Read a wandb run back from its local `.wandb` file (wandb 0.31 ships no Python reader).

The file is a 7-byte header (":W&B", a 2-byte magic, a version byte) followed by a LevelDB-style
log: 32 KiB blocks of records, each with a 7-byte header (masked crc32c, little-endian length,
type FULL/FIRST/MIDDLE/LAST), carrying wandb's protobuf `Record` messages.

wandb's service writes the file asynchronously: `run.finish()` can return a moment before the
last records are on disk. A record cut short at the end of the file is "not written yet", and
`read_run` waits (with a deadline) for the run's final `exit` record before it reads.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32 * 1024
FILE_HEADER = 7
RECORD_HEADER = struct.Struct("<IHB")
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every protobuf Record in the file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    out, pos, pieces = [], FILE_HEADER, b""
    while pos + RECORD_HEADER.size <= len(data):
        if BLOCK - pos % BLOCK < RECORD_HEADER.size:  # too little room left: the block is padded
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = RECORD_HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK
            continue
        pos += RECORD_HEADER.size
        if pos + length > len(data):  # the tail is still being written
            break
        chunk, pos = data[pos : pos + length], pos + length
        if kind == FULL:
            out.append(pb.Record.FromString(chunk))
        elif kind == FIRST:
            pieces = chunk
        elif kind == MIDDLE:
            pieces += chunk
        elif kind == LAST:
            out.append(pb.Record.FromString(pieces + chunk))
            pieces = b""
    return out


def _value(item: Any) -> Any:
    return json.loads(item.value_json)  # wandb writes NaN/Infinity, which json reads back


def _items(items: Any) -> dict[str, Any]:
    """Items as a dict; a nested_key path (a logged dict, e.g. a histogram's values and bins)
    becomes nested dicts. Metric names with '/' are one key, not a path."""
    out: dict[str, Any] = {}
    for item in items:
        *parents, last = [item.key] if item.key else item.nested_key
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = _value(item)
    return out


@dataclass
class WandbRun:
    name: str
    group: str
    history: list[dict[str, Any]]
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""
    started: int = 0  # ns since the epoch: when this file's run (or its resumption) started
    files: int = 1  # .wandb files read into this run: more than one when it was resumed
    job_type: str = ""
    tags: list[str] = field(default_factory=list)


def finished_records(path: Path, within: float = 30.0) -> list[Any]:
    """The file's records once wandb has written the run's `exit` record (or after `within` s)."""
    deadline = time.monotonic() + within
    while True:
        found = records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)  # the wandb service is still writing; poll until its exit record lands


def read_run(path: Path) -> WandbRun:
    """The history rows (one dict per run.log call), config and summary of one finished run."""
    run = WandbRun(name="", group="", history=[])
    for record in finished_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.name, run.group, run.run_id = record.run.display_name, record.run.run_group, record.run.run_id
            run.started = record.run.start_time.ToNanoseconds()
            run.job_type, run.tags = record.run.job_type, list(record.run.tags)
            run.config.update(_items(record.run.config.update))
        elif kind == "history":
            run.history.append(_items(record.history.item))
        elif kind == "config":
            run.config.update(_items(record.config.update))
        elif kind == "summary":
            run.summary.update(_items(record.summary.update))
    return run


def read_runs(wandb_dir: Path) -> dict[str, WandbRun]:
    """Every run under a wandb directory, keyed by run name."""
    runs = [read_run(p) for p in sorted(wandb_dir.rglob("*.wandb"))]
    return {run.name: run for run in runs}


def read_resumed_runs(wandb_dir: Path) -> dict[str, WandbRun]:
    """Every run under a wandb directory keyed by run id, its files (one per start or resumption,
    as `wandb sync` uploads them: in order of start time) read as one run."""
    merged: dict[str, WandbRun] = {}
    for part in sorted((read_run(p) for p in wandb_dir.rglob("*.wandb")), key=lambda r: r.started):
        run = merged.get(part.run_id)
        if run is None:
            merged[part.run_id] = part
            continue
        assert (part.name, part.group) == (run.name, run.group), f"run {part.run_id} changed its name or group"
        run.history += part.history
        run.config.update(part.config)
        run.summary.update(part.summary)
        run.files += 1
    return merged
