"""Where a sink runs: in the publishing process, in the shared sink host, or in a host of its own.

    "none"     on its own thread in the publishing process: sinks whose results the program
               reads (MemorySink), callbacks into the program, sinks that cannot move
    "host"     in the shared sink host process, beside the other light sinks (CSV, JSONL,
               TensorBoard): the training process only ships encoded batches
    "process"  in a sink host of its own: sinks heavy enough to starve the others (W&B, MLflow)

A sink can move only if the host can rebuild it: it must pickle, and its class must be importable
by reference (not defined in `__main__`, a function or a test's local scope). One that cannot
stays in the publishing process, and its stats say so (`SinkStats.where`).
"""

from __future__ import annotations

import pickle
import sys
from typing import Literal, TypeAlias

from .._errors import InvalidConfig
from .._sink import Sink

__all__ = ["PLACEMENTS", "Placement", "movable", "place"]

Placement: TypeAlias = Literal["none", "host", "process"]
PLACEMENTS: tuple[Placement, ...] = ("none", "host", "process")


def movable(sink: Sink) -> str | None:
    """None if a sink host can run `sink`; else why not."""
    kind = type(sink)
    module = sys.modules.get(kind.__module__)
    if kind.__module__ == "__main__" or module is None or getattr(module, "__spec__", None) is None:
        return f"its class {kind.__qualname__} is defined in __main__, which a sink host cannot import"
    if "<locals>" in kind.__qualname__:
        return f"its class {kind.__qualname__} is defined inside a function"
    try:
        pickle.dumps(sink)
    except Exception as exc:
        return f"it cannot be pickled ({type(exc).__name__}: {exc})"
    return None


def place(sink: Sink, requested: str | None, *, default: Placement) -> tuple[Placement, str | None]:
    """Where `sink` runs, and why not where it asked (None if it runs where it asked).
    `requested` is `add_sink(isolate=...)`; None means `default`."""
    where = default if requested is None else requested
    if where not in PLACEMENTS:
        raise InvalidConfig(f"isolate must be one of {', '.join(PLACEMENTS)}, got {where!r}")
    if where == "none":
        return "none", None
    why = movable(sink)
    if why is not None:
        if requested is not None:
            raise InvalidConfig(f"{type(sink).__name__} cannot run in a sink host: {why}")
        return "none", why
    return where, None
