"""Did every sink get every event? One rule, used by the bus, the logger, replay, aggregate and
the demo (`delivery_failures`); nowhere else decides it.

A sink lost events when

- it failed (it gave up: what it had not written is counted as dropped);
- it dropped some for any reason other than the when-full policy it was given
  (`drop_oldest`/`drop_newest` drop by choice, counted as "full");
- it is closed and still holds events (queued or in flight) it will never write;
- its counters do not balance (published != delivered + dropped + reduced + queued + in flight):
  some events are not accounted for at all.

Events folded by rate control (`reduced`) are not lost: they are in another event's row. A sink
that is open or down and holds events is behind, not lost: it may still write them, so the rule
can be asked at any time and answers "nothing lost so far".
"""

from __future__ import annotations

from collections.abc import Mapping

from ._errors import DeliveryError
from ._stats import DropReason, SinkState, SinkStats

__all__ = ["check_delivery", "delivery_failures", "describe_failure"]

_CHOSEN = DropReason.FULL.value
_ENDED = (SinkState.CLOSED, SinkState.FAILED)


def delivery_failures(stats: Mapping[str, SinkStats]) -> list[SinkStats]:
    """The sinks that did not get every event (see the module docstring), in `stats` order."""
    return [s for s in stats.values() if _reasons(s)]


def _reasons(s: SinkStats) -> list[str]:
    """Why `s` did not get every event; [] when it did (or still may)."""
    reasons: list[str] = []
    if s.state is SinkState.FAILED:
        reasons.append("failed")
    lost = {reason: n for reason, n in s.dropped.items() if reason != _CHOSEN and n}
    if lost:
        reasons.append("dropped " + ", ".join(f"{n:,} {reason}" for reason, n in lost.items()))
    held = s.queued + s.in_flight
    if s.state in _ENDED and held:
        reasons.append(f"{s.state.value} with {held:,} events never written")
    if not s.balanced:
        accounted = s.delivered + s.dropped_total + s.reduced + s.queued + s.in_flight
        reasons.append(f"{s.published - accounted:+,} events unaccounted for (counters do not balance)")
    return reasons


def describe_failure(stats: SinkStats) -> str:
    """One line: what a sink missed, why, and where the missed events were saved."""
    reasons = _reasons(stats) or ["got every event"]
    line = f"{stats.name}: {'; '.join(reasons)} of {stats.published:,} published"
    if stats.last_error:
        line += f"; last error: {stats.last_error}"
    if stats.saved_to is not None:
        missed = stats.dropped_total - stats.dropped.get(_CHOSEN, 0)
        line += (
            f"; {stats.saved:,} of the {missed:,} events it missed are saved in {stats.saved_to}"
            f" (replay them: metricbus replay {stats.saved_to} --to ...)"
        )
    return line


def check_delivery(stats: Mapping[str, SinkStats]) -> None:
    """Raise `DeliveryError` (carrying `stats`) if some sink did not get every event."""
    bad = delivery_failures(stats)
    if bad:
        lines = "\n  ".join(describe_failure(s) for s in bad)
        raise DeliveryError(f"some sinks did not receive every event:\n  {lines}", stats)
