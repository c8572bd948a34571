"""Did every sink get every event? One rule, used by the bus, the logger, replay and aggregate.

A sink lost events when it failed, or when it dropped some for any reason other than the
when-full policy it was given (`drop_oldest`/`drop_newest` drop by choice, as "full"). Events
folded by rate control are not lost: they are in another event's row.
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import DeliveryError
from ._stats import DropReason, SinkState, SinkStats

__all__ = ["check_delivery", "delivery_failures", "describe_failure"]


def delivery_failures(stats: Mapping[str, SinkStats]) -> list[SinkStats]:
    """The sinks that did not get every event (see the module docstring)."""
    chosen = DropReason.FULL.value
    return [s for s in stats.values() if s.state is SinkState.FAILED or any(r != chosen for r in s.dropped)]


def describe_failure(stats: SinkStats) -> str:
    """One line: what a sink missed, why, and where the missed events were saved."""
    line = f"{stats.name}: {stats.state.value}, dropped {stats.dropped}, last error: {stats.last_error}"
    if stats.saved_to is not None:
        line += f"; what it missed is saved in {stats.saved_to} (metricbus replay {stats.saved_to} --to ...)"
    return line


def check_delivery(stats: Mapping[str, SinkStats]) -> None:
    """Raise `DeliveryError` (carrying `stats`) if some sink did not get every event."""
    bad = delivery_failures(stats)
    if bad:
        lines = "\n  ".join(describe_failure(s) for s in bad)
        raise DeliveryError(f"some sinks did not receive every event:\n  {lines}", stats)
